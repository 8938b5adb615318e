"""``voicecall doctor``: prove the whole path works before a carrier ever calls.

Checks, in order (``report.NAMES``): ``config`` valid; ``daemon`` answers on its socket;
``socket`` mode 0600; ``publicUrl`` in force and where it came from (config, ngrok,
tailscale); ``reachability``: a self-test webhook through the public URL arrives back at
this daemon and is accepted (``probe.py``); ``streamUpgrade`` when streaming is on;
``credentials`` accepted by the carrier; the host ``clock`` against the carrier's; API
``keys`` for the features that are on; ``models`` not about to be shut down.

Read-only: it sends one harmless webhook (a status callback for a call nobody has) and
cheap authenticated reads; it changes nothing. Exit 0 when no check failed, 1 otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from ..outcome import EXIT_FAILED, EXIT_OK


def doctor(*, json: bool = False, socket: str | None = None, config: str | None = None) -> int:
    """Check the config, daemon, socket, public URL (end to end), carrier credentials,
    clock, API keys and models.

    Parameters
    ----------
    json
        Print {"ok", "checks": [{"name", "status", "detail"}]}.
    socket
        Control socket path.
    config
        Config file.
    """
    from . import report

    checks = run_checks(config, socket, dict(os.environ))
    print(report.as_json(checks) + "\n" if json else report.as_text(checks), end="")
    return EXIT_OK if report.all_ok(checks) else EXIT_FAILED


def run_checks(config_path: str | None, socket: str | None, environ: dict[str, str]
               ) -> list[Any]:
    import trio

    from ...errors import ConfigError
    from ..connect import socket_path
    from . import local, report

    config_check, cfg = local.check_config(config_path, environ)
    if cfg is not None:
        sock = os.path.expanduser(socket) if socket else str(cfg.socket_path(environ))
    else:
        try:
            sock = socket_path(socket, config_path)
        except ConfigError:  # unreadable or unparseable: it names no socket; report, go on
            unknown = "no valid config to find the socket in (pass --socket)"
            return [config_check, report.skip("daemon", unknown), report.skip("socket", unknown)
                    ] + [report.skip(name, "no valid config") for name in report.NAMES[3:]]
    daemon_check, health = local.check_daemon(sock)
    checks = [config_check, daemon_check, local.check_socket(sock)]
    if cfg is None:
        return checks + [report.skip(name, "no valid config")
                         for name in report.NAMES[len(checks):]]
    public_check, public_url = local.check_public_url(cfg, health)
    checks.append(public_check)
    token = health.get("probeToken") if health else None
    checks += trio.run(_network, cfg, public_url, token if isinstance(token, str) else None,
                       environ, local.check_keys(cfg, environ))
    return checks


async def _network(cfg: Any, public_url: str | None, token: str | None,
                   environ: dict[str, str], keys: Any) -> list[Any]:
    import httpx
    import trio

    from . import network

    found: dict[str, Any] = {}

    async def run(name: str, check: Callable[[], Awaitable[Any]]) -> None:
        found[name] = await check()

    # at once: with the network down each would wait out its own timeout in turn
    async with httpx.AsyncClient(timeout=network.TIMEOUT_S) as http, \
            trio.open_nursery() as nursery:
        nursery.start_soon(run, "reachability",
                           partial(network.check_reachability, cfg, public_url, token, http))
        nursery.start_soon(run, "streamUpgrade",
                           partial(network.check_stream_upgrade, cfg, public_url))
        nursery.start_soon(run, "carrier", partial(network.check_credentials_and_clock, cfg,
                                                   http))
        nursery.start_soon(run, "models", partial(network.check_models, cfg, environ, http))
    credentials, clock = found["carrier"]
    return [found["reachability"], found["streamUpgrade"], credentials, clock, keys,
            found["models"]]
