"""The one vocabulary spoken between carriers, calls, the journal and the control socket.

Every carrier (mock, Twilio, Telnyx) turns what it hears into these events; the call model
(`model.apply`) is the only thing that interprets them. Each event carries an ``id`` that is
stable across redeliveries of the same carrier message, which is what makes webhooks
idempotent: the model remembers the ids it has applied and ignores repeats.

Events are msgspec tagged unions (tag field ``type``), so they encode to the same JSON that
``voicecall.event`` notifications carry.
"""

from __future__ import annotations

from typing import Literal

import msgspec

Direction = Literal["outbound", "inbound"]
EndReason = Literal[
    "completed",
    "hangup-user",
    "hangup-bot",
    "timeout",
    "error",
    "failed",
    "no-answer",
    "busy",
    "voicemail",
]
END_REASONS: frozenset[str] = frozenset(EndReason.__args__)  # type: ignore[attr-defined,unused-ignore]


class CallEvent(msgspec.Struct, tag_field="type", kw_only=True, frozen=True, rename="camel"):
    """Common fields: ``id`` deduplicates; a call is found by ``call_id`` then ``provider_call_id``."""

    id: str
    call_id: str | None = None
    provider_call_id: str | None = None
    timestamp: int = 0  # ms since the epoch; 0 means "when applied"


class CallInitiated(CallEvent, tag="call.initiated", frozen=True):
    """The carrier has the call. For ``direction="inbound"`` this is an offer the policy decides."""

    direction: Direction = "outbound"
    from_: str = msgspec.field(default="", name="from")
    to: str = ""


class CallRinging(CallEvent, tag="call.ringing", frozen=True):
    pass


class CallAnswered(CallEvent, tag="call.answered", frozen=True):
    pass


class CallActive(CallEvent, tag="call.active", frozen=True):
    """Media is flowing (bridged, stream connected)."""


class CallSpeaking(CallEvent, tag="call.speaking", frozen=True):
    """The bot started saying ``text``."""

    text: str = ""


class CallSpoken(CallEvent, tag="call.spoken", frozen=True):
    """The bot finished saying what it last started (Telnyx ``call.speak.ended``, mock)."""


class CallSpeech(CallEvent, tag="call.speech", frozen=True):
    """The callee said something (a transcript)."""

    text: str
    is_final: bool = True
    confidence: float | None = None


class CallDtmf(CallEvent, tag="call.dtmf", frozen=True):
    digits: str


class CallMachineDetection(CallEvent, tag="call.machine", frozen=True):
    """Answering-machine detection result: ``human``, ``machine`` or ``unknown``."""

    result: str


class CallEnded(CallEvent, tag="call.ended", frozen=True):
    reason: EndReason


class CallError(CallEvent, tag="call.error", frozen=True):
    error: str
    retryable: bool = False


AnyEvent = (
    CallInitiated
    | CallRinging
    | CallAnswered
    | CallActive
    | CallSpeaking
    | CallSpoken
    | CallSpeech
    | CallDtmf
    | CallMachineDetection
    | CallEnded
    | CallError
)

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(AnyEvent)


def encode_event(event: CallEvent) -> bytes:
    return _encoder.encode(event)


def decode_event(data: bytes | str) -> AnyEvent:
    event: AnyEvent = _decoder.decode(data)
    return event


def event_to_builtins(event: CallEvent) -> dict[str, object]:
    """The JSON object form used in ``voicecall.event`` notifications."""
    out = msgspec.to_builtins(event)
    assert isinstance(out, dict)
    return out
