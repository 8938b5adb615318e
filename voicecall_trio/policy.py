"""Who may call in, what an accepted inbound call starts with, what an outbound request may
ask for: pure decisions.

The supervisor asks ``inbound_refusal`` for every new inbound offer that is not a replay of a
call it already knows (``None`` means accept), and ``outbound_request`` for every
``initiate``. Nothing here does I/O or keeps state, so the
policy is tested as a table of (config, caller, daemon state) -> verdict.
"""

from __future__ import annotations

from typing import Any

from .config import E164, VoiceCallConfig
from .errors import InvalidInput
from .text import check_text

DEFAULT_GREETING = "Hello! How can I help you today?"


def inbound_refusal(config: VoiceCallConfig, caller: str, *, accepting: bool,
                    active_calls: int) -> str | None:
    """Why an inbound call from ``caller`` is refused (a log line and the event's reason), or
    None to accept it. Exact E.164 match; an anonymous caller never matches an allowlist."""
    policy = config.inbound_policy
    if not accepting:
        return "the daemon is shutting down"
    if policy == "disabled":
        return "inboundPolicy is disabled"
    if policy in ("allowlist", "pairing") and (
        not E164.match(caller or "") or caller not in config.allow_from
    ):
        return "caller is not in allowFrom"
    if active_calls >= config.max_concurrent_calls:
        return f"Maximum concurrent calls ({config.max_concurrent_calls}) reached"
    return None


def outbound_request(config: VoiceCallConfig, to: str | None, message: str,
                     mode: str | None) -> tuple[str, str]:
    """The number to call and the mode of an ``initiate``, or ``InvalidInput`` saying what is
    wrong with the request (the daemon's own state, shutdown and the limit, is checked by
    the supervisor)."""
    target = to or config.to_number
    if not target:
        raise InvalidInput("No destination: pass `to` or set toNumber in the config")
    if not E164.match(target):
        raise InvalidInput(f"Invalid phone number {target!r}: must be E.164, like +15550001234")
    chosen = mode or config.outbound.default_mode
    if chosen not in ("notify", "conversation"):
        raise InvalidInput(f"Invalid mode {chosen!r}: must be notify or conversation")
    if not message.strip():
        raise InvalidInput("message must not be empty")
    check_text(message)
    return target, chosen


def inbound_metadata(config: VoiceCallConfig) -> dict[str, Any]:
    """An accepted inbound call is a conversation that starts with the greeting."""
    return {"mode": "conversation",
            "initialMessage": config.inbound_greeting or DEFAULT_GREETING}


def mask(number: str) -> str:
    """A phone number for a log line: ``+``, the first digit and the last four
    (``+1******1234``); enough to tell calls apart, not enough to dial."""
    if len(number) <= 6:
        return number or "anonymous"
    return number[:2] + "*" * (len(number) - 6) + number[-4:]


__all__ = ["DEFAULT_GREETING", "inbound_metadata", "inbound_refusal", "mask", "outbound_request"]
