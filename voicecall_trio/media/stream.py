"""The seams between a carrier's media stream and the call that listens to it.

Carrier-neutral: the media route (``route.py``) speaks only these types, so a second carrier
(Telnyx) adds a ``StreamFraming`` and a ``StreamAuthenticator`` and nothing else. The route
owns the socket; the call's voice session owns what is said and heard; the supervisor decides
which call a stream belongs to (``StreamSessions.attach``).

Decoded messages are ``StreamEvent`` values. Audio, the per-frame case (50 a second per
call), is plain ``bytes`` (the decoded mu-law), with no wrapper object around it.

Pure: no trio, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ..providers import WebhookRequest


class MediaStream(Protocol):
    """One accepted media WebSocket, as the call's voice session sees it."""

    stream_id: str  # Twilio streamSid
    carrier_call_id: str  # Twilio callSid (may be "")

    async def send_audio(self, frame: bytes) -> None:
        """Send one 20 ms frame of 8 kHz mu-law (160 bytes); never raises for a dead socket."""
        ...

    async def send_mark(self, name: str) -> None: ...

    async def send_clear(self) -> None: ...

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Idempotent, never raises."""
        ...


class StreamHandler(Protocol):
    """What the route feeds once a stream is attached to a call (sync: the per-frame path)."""

    def media(self, stream: MediaStream, audio: bytes) -> None:
        """Decoded mu-law, in order."""
        ...

    def mark(self, stream: MediaStream, name: str) -> None:
        """The carrier echoed a mark (its audio was played, or cleared)."""
        ...

    def dtmf(self, stream: MediaStream, digits: str) -> None: ...

    def stopped(self, stream: MediaStream) -> None:
        """``stop`` received or the socket gone; called exactly once per attached stream."""
        ...


class StreamSessions(Protocol):
    """The supervisor side: who owns the stream for a call id."""

    def attach(self, call_id: str, stream: MediaStream) -> StreamHandler | None:
        """The handler for the call's stream; None: no live streamed call with this id (the
        route closes with 1008). If the call already has a stream, the session itself closes
        the older one with 1000."""
        ...


# -- what a framing decodes to -----------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Hello:
    """The carrier's greeting before ``start`` (Twilio ``connected``): nothing to do."""


@dataclass(frozen=True, slots=True)
class Started:
    stream_id: str
    carrier_call_id: str
    token: str | None  # our per-call token from the stream's custom parameters


@dataclass(frozen=True, slots=True)
class MarkEcho:
    name: str


@dataclass(frozen=True, slots=True)
class Digits:
    digits: str


@dataclass(frozen=True, slots=True)
class Stopped:
    """The carrier ends the stream (Twilio ``stop``)."""


@dataclass(frozen=True, slots=True)
class Malformed:
    """A message that could not be read; ``reason`` is for one log line (no payload in it)."""

    reason: str


# bytes: a media frame's decoded audio (the common case, so it carries no wrapper)
StreamEvent = bytes | Hello | Started | MarkEcho | Digits | Stopped | Malformed


class StreamFraming(Protocol):
    """A carrier's media-stream message codec: text in, events out; outbound as text."""

    def decode(self, message: str | bytes) -> StreamEvent:
        """One inbound message; never raises (``Malformed`` instead)."""
        ...

    def media(self, stream_id: str, frame: bytes) -> str: ...

    def mark(self, stream_id: str, name: str) -> str: ...

    def clear(self, stream_id: str) -> str: ...


class StreamAuthenticator(Protocol):
    """The carrier's checks on a media stream (``TwilioProvider`` implements it)."""

    framing: StreamFraming

    def verify_upgrade(self, request: WebhookRequest) -> str | None:
        """None: the upgrade request is the carrier's; else why not (answered 403)."""
        ...

    def call_id_for_token(self, token: str) -> str | None:
        """The call id a stream token was issued for, or None if it is not ours."""
        ...
