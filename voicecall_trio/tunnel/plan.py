"""Which public URL the config asks for, and who provides it (pure).

Order of precedence, as the seed has it: ``publicUrl`` wins over any tunnel; then
``tunnel.provider``; then the legacy ``tailscale.mode`` (with ``tailscale.path``). The daemon,
``voicecall expose`` and ``voicecall doctor`` all ask this one function.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from ..config import VoiceCallConfig

Kind = Literal["none", "config", "ngrok", "tailscale"]


@dataclass(frozen=True, slots=True)
class TunnelPlan:
    """What provides the public URL: ``kind`` (also how ``doctor`` names the source), the
    config key that chose it (for messages), and for Tailscale its mode and paths."""

    kind: Kind
    key: str  # "publicUrl", "tunnel.provider", "tailscale.mode" or ""
    mode: Literal["funnel", "serve"] | None = None
    paths: tuple[str, ...] = ()
    overridden: str | None = None  # a tunnel setting that publicUrl overrides


def _tailscale_paths(config: VoiceCallConfig, path: str) -> tuple[str, ...]:
    # the media stream must be reachable the same way when streaming is on
    stream = config.streaming.stream_path
    if config.streaming.enabled and stream != path:
        return (path, stream)
    return (path,)


def tailscale_paths(config: VoiceCallConfig) -> tuple[str, ...]:
    """The paths Tailscale exposes for this config (``voicecall expose`` uses them whatever
    ``tunnel.provider`` says): the legacy ``tailscale.path`` when ``tailscale.mode`` is on,
    else ``serve.path``; plus the stream path when streaming is on."""
    legacy = config.tunnel.provider == "none" and config.tailscale.mode != "off"
    return _tailscale_paths(config, config.tailscale.path if legacy else config.serve.path)


def tunnel_setting(config: VoiceCallConfig) -> str | None:
    """The tunnel the config asks for, as ``key: value`` (None: no tunnel)."""
    if config.tunnel.provider != "none":
        return f'tunnel.provider "{config.tunnel.provider}"'
    if config.tailscale.mode != "off":
        return f'tailscale.mode "{config.tailscale.mode}"'
    return None


def plan_for(config: VoiceCallConfig) -> TunnelPlan:
    """The one answer to "where does the public URL come from?"."""
    if config.public_url:
        return TunnelPlan("config", "publicUrl", overridden=tunnel_setting(config))
    provider = config.tunnel.provider
    if provider == "ngrok":
        return TunnelPlan("ngrok", "tunnel.provider")
    if provider in ("tailscale-serve", "tailscale-funnel"):
        mode: Literal["funnel", "serve"] = "serve" if provider == "tailscale-serve" else "funnel"
        return TunnelPlan("tailscale", "tunnel.provider", mode,
                          _tailscale_paths(config, config.serve.path))
    if config.tailscale.mode in ("serve", "funnel"):
        return TunnelPlan("tailscale", "tailscale.mode", config.tailscale.mode,
                          _tailscale_paths(config, config.tailscale.path))
    return TunnelPlan("none", "")
