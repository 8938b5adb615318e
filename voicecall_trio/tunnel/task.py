"""The daemon's one entry point into tunnels: start the one the config asks for.

Called once the HTTP port is bound (the tunnel forwards to it) and before the daemon reports
ready. ``publicUrl`` wins: no tunnel is started, and a log line says so when a tunnel was
configured too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from urllib.parse import urlsplit

import trio

from ..config import VoiceCallConfig
from ..errors import TunnelError
from .ngrok_run import NgrokTunnel
from .plan import TunnelPlan, plan_for, tunnel_setting
from .supervisor import Tunnel, TunnelSupervisor
from .tailscale_run import TailscaleTunnel

log = logging.getLogger("voicecall.tunnel")


def bound_port(http_binds: Sequence[str], configured: int) -> int:
    """The HTTP front's real port (``serve.port`` may be 0: the kernel picked one)."""
    for bind in http_binds:
        try:
            port = urlsplit(bind).port
        except ValueError:
            continue
        if port:
            return port
    return configured


def make_tunnel(plan: TunnelPlan, config: VoiceCallConfig, port: int,
                environ: Mapping[str, str]) -> Tunnel:
    if plan.kind == "ngrok":
        return NgrokTunnel(bind=config.serve.bind, port=port, serve_path=config.serve.path,
                           token=config.tunnel.ngrok_auth_token,
                           domain=config.tunnel.ngrok_domain, environ=environ)
    if plan.kind == "tailscale" and plan.mode is not None:
        return TailscaleTunnel(mode=plan.mode, port=port, paths=plan.paths, environ=environ)
    raise TunnelError(f"no tunnel to start for {plan.kind}")  # pragma: no cover - guarded


async def start_tunnel(nursery: trio.Nursery, config: VoiceCallConfig,
                       set_public_url: Callable[[str], None], http_binds: Sequence[str],
                       environ: Mapping[str, str], *, stop: trio.Event | None = None
                       ) -> TunnelSupervisor | None:
    """Start the configured tunnel in ``nursery``; returns once its first URL is in force
    (None: ``publicUrl``, no tunnel, or ``stop`` was set while it started: the daemon is
    being stopped). Raises ``TunnelError`` when it cannot start."""
    plan = plan_for(config)
    if plan.kind == "config" and plan.overridden:
        log.info("publicUrl is set: it wins over %s; no tunnel started", plan.overridden)
    if plan.kind in ("config", "none"):
        return None
    if plan.key == "tailscale.mode" and config.tailscale.path != config.serve.path:
        log.warning("tailscale.path %s is not serve.path %s: carriers' requests through the "
                    "tunnel will miss the webhook route (use tunnel.provider, or make them "
                    "equal)", config.tailscale.path, config.serve.path)
    tunnel = make_tunnel(plan, config, bound_port(http_binds, config.serve.port), environ)
    supervisor = TunnelSupervisor(tunnel, setting=tunnel_setting(config) or plan.key,
                                  on_url=set_public_url)
    started = False
    failure: TunnelError | None = None
    async with trio.open_nursery() as race:
        if stop is not None:
            race.start_soon(_cancel_when_set, stop, race.cancel_scope)
        try:  # cancelled (and cleaned up) if stop comes first
            await nursery.start(supervisor.run)
            started = True
        except TunnelError as exc:  # raised below, not wrapped in the race's group
            failure = exc
        race.cancel_scope.cancel()
    if failure is not None:
        raise failure
    if not started:
        log.info("stopped while the tunnel (%s) was starting", supervisor.setting)
        return None
    return supervisor


async def _cancel_when_set(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()
