"""The one vocabulary spoken between carriers, calls, the journal and the control socket.

Every carrier (mock, Twilio, Telnyx) turns what it hears into these events; the call model
(`model.apply`) is the only thing that interprets them. Each event carries an ``id`` that is
stable across redeliveries of the same carrier message, which is what makes webhooks
idempotent: the model remembers the ids it has applied and ignores repeats.

Events are msgspec tagged unions (tag field ``type``), so they encode to the same JSON that
``voicecall.event`` notifications carry.
"""

from __future__ import annotations

import math
import re
from typing import Literal

import msgspec

from .states import TERMINAL_STATE_NAMES

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
# the type checker's spelling of ``states.TERMINAL_STATE_NAMES`` (tests/pure/test_model.py checks
# that the two agree); code that needs the set at run time uses that one
END_REASONS: frozenset[str] = TERMINAL_STATE_NAMES

# -- carrier input that lands in a record: valid Unicode, bounded ---------------------------
#
# Text from carriers (transcripts, numbers, caller ids) goes into call records, the journal
# and RPC replies, all UTF-8. A lone surrogate (a JSON "\ud83d" escape, what a gateway sends
# when it cuts a UTF-16 string inside an emoji) cannot be encoded as UTF-8, so one such
# character in a record would break every later encode of it. The carrier parsers pass their
# text through ``carrier_text`` and the model repairs what it stores, so no record ever holds
# one. The limits are far above anything a carrier sends; they only stop a 1 MiB "transcript
# line" from becoming a 1 MiB journal line on every change of the call.
MAX_TEXT_CHARS = 4096  # one transcript line (Twilio SpeechResult, a Telnyx transcript)
MAX_FIELD_CHARS = 256  # a number, a SIP URI, DTMF digits of one event, an error message
MAX_ID_CHARS = 256  # CallSid (34), call_control_id (~80), Telnyx event id (36)
# Carrier timestamps outside [epoch, year 9999] are noise, not dates.
MAX_CARRIER_TIMESTAMP_MS = 253_402_300_799_999
_SURROGATE = re.compile("[\ud800-\udfff]")


def valid_unicode(text: str) -> str:
    """``text`` with each lone surrogate replaced by U+FFFD (UTF-8 encodable)."""
    if text.isascii():
        return text
    return _SURROGATE.sub("\ufffd", text)


def carrier_text(text: str | None, limit: int = MAX_FIELD_CHARS) -> str:
    """Carrier text as a record may hold it: valid Unicode, at most ``limit`` characters."""
    if not text:
        return ""
    return valid_unicode(text[:limit])


def carrier_timestamp_ms(seconds: float) -> int:
    """Seconds since the epoch -> ms, or 0 (unknown) when it is not a plausible date."""
    if not math.isfinite(seconds):
        return 0
    ms = int(seconds * 1000)
    return ms if 0 < ms <= MAX_CARRIER_TIMESTAMP_MS else 0


def finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


class CallEvent(msgspec.Struct, tag_field="type", kw_only=True, frozen=True, rename="camel"):
    """Common fields: ``id`` deduplicates; a call is found by ``call_id`` then ``provider_call_id``."""

    id: str
    call_id: str | None = None
    provider_call_id: str | None = None
    # when the carrier says it happened, ms since the epoch on the *carrier's* clock (0:
    # unknown). Diagnostics only: the model times everything by when the daemon learned of
    # the event (``model.apply``'s ``at``), so a skewed or delayed carrier cannot move timers.
    timestamp: int = 0


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


class CallInterrupted(CallEvent, tag="call.interrupted", frozen=True):
    """The callee talked over the bot (barge-in): its speech was cut after ``heard_ms``.

    ``utterance`` is the event id of the bot's line that was playing (its ``CallSpeaking``)."""

    utterance: str = ""
    heard_ms: int = 0


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
    | CallInterrupted
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
