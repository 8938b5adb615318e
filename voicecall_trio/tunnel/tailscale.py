"""Tailscale Serve/Funnel as command lines and readings of their output (pure).

``tailscale status --json`` gives this node's DNS name; ``tailscale <serve|funnel> --bg --yes
--set-path <path> http://127.0.0.1:<port><path>`` puts one path behind it (``tailscaled``
keeps it up, so there is no process of ours to watch); ``tailscale <mode> --set-path <path>
off`` takes it off again. The daemon's tunnel (``tunnel/tailscale_run.py``) and ``voicecall
expose`` both build their command lines here, so the two cannot drift.

Nothing here runs a process or raises for a failed command: it says what to run and what a
result means.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Literal

TailscaleMode = Literal["funnel", "serve", "off"]

NOT_INSTALLED = ("the tailscale binary was not found on PATH (https://tailscale.com/download); "
                 "or expose the webhook another way and set publicUrl")
# Serve answers only inside the tailnet, where no carrier is
SERVE_IS_PRIVATE = ("Tailscale Serve is private to your tailnet: Twilio/Telnyx cannot reach "
                    "it. Use funnel (tunnel.provider \"tailscale-funnel\") for carrier webhooks.")
MAX_DETAIL = 300  # characters of tailscale's own words kept in a message


def local_target(port: int, path: str) -> str:
    """Where the tunnel forwards to: the daemon's HTTP front on loopback."""
    return f"http://127.0.0.1:{port}{path}"


def status_json_command(tailscale: str) -> list[str]:
    """The command line whose JSON names this node (``Self.DNSName``)."""
    return [tailscale, "status", "--json"]


def up_command(tailscale: str, mode: Literal["funnel", "serve"], *, port: int, path: str
               ) -> list[str]:
    """Put ``path`` behind Funnel (public) or Serve (tailnet only), in the background."""
    return [tailscale, mode, "--bg", "--yes", "--set-path", path, local_target(port, path)]


def off_command(tailscale: str, mode: Literal["funnel", "serve"], path: str) -> list[str]:
    """Take ``path`` off ``mode`` again."""
    return [tailscale, mode, "--set-path", path, "off"]


def expose_commands(tailscale: str, mode: TailscaleMode, *, port: int, path: str
                    ) -> list[list[str]]:
    """The command lines that put ``path`` behind Funnel or Serve, or (``off``) take it off
    both (``voicecall expose --mode off`` does not know which one was used)."""
    if mode == "off":
        return [off_command(tailscale, kind, path) for kind in ("funnel", "serve")]
    return [up_command(tailscale, mode, port=port, path=path)]


def status_command(tailscale: str, mode: TailscaleMode) -> list[str]:
    """The command line that shows what is exposed now (Funnel's view unless ``serve``)."""
    return [tailscale, "funnel" if mode != "serve" else "serve", "status"]


def clip(text: str, limit: int = MAX_DETAIL) -> str:
    """A subprocess's words, one line and bounded: they go into a log line or an error."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def step_failure(mode: TailscaleMode, command: Sequence[str], returncode: int, stderr: str
                 ) -> str | None:
    """Why a step failed, or None when it did not or does not matter (``off`` of a path that
    was never exposed fails harmlessly)."""
    if returncode == 0 or mode == "off":
        return None
    return f"`tailscale {' '.join(command[1:])}` failed (exit {returncode}): {clip(stderr)}"


def dns_name(status_json: bytes | str) -> str | None:
    """``Self.DNSName`` of ``tailscale status --json`` without its trailing dot, or None when
    the output is not that JSON (or this node has no name: logged out, no MagicDNS)."""
    try:
        doc = json.loads(status_json)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    me = doc.get("Self") if isinstance(doc, dict) else None
    name = me.get("DNSName") if isinstance(me, dict) else None
    if not isinstance(name, str):
        return None
    name = name.strip().rstrip(".").lower()
    # a DNS name, not something that would change the URL's meaning
    if not name or len(name) > 253 or any(c in name for c in "/?#@:[] \\") or not name.isascii():
        return None
    return name


def public_url(dns: str, path: str) -> str:
    """The URL carriers call: Funnel serves HTTPS on the node's name."""
    return f"https://{dns}{path}"
