"""Telnyx Call Control v2 webhooks -> our events, without I/O.

A delivery is ``{"data": {"event_type", "id", "occurred_at", "payload"}, "meta": {...}}``
(``meta`` may be absent). Every event we emit takes its ``id`` from ``data.id``, Telnyx's own
event id, so a redelivered webhook is recognised by the model and changes nothing.

We pass ``client_state = base64(callId)`` on every command, so later webhooks name our call;
``client_state`` set by something else just fails to match and the call is found by its
``call_control_id`` instead.

Hangup causes (``end_reason``), chosen so ``calls.jsonl`` says what an operator would:

==================  ==============================================================
``user_busy``       ``busy``
``no_answer``       ``no-answer`` (also ``timeout``: the ring timeout ran out)
``time_limit``      ``timeout`` (Telnyx's own call length limit)
``call_rejected``   ``failed`` (also ``not_found``: the number does not exist)
``originator_cancel`` the caller gave up before an answer: ``hangup-bot`` on our
                    outbound calls, ``hangup-user`` on inbound ones
``normal_clearing`` ``hangup-user`` / ``hangup-bot`` when ``hangup_source`` says who
                    (caller is us on outbound calls, the remote party on inbound);
                    otherwise ``completed``
anything else       as ``normal_clearing`` if the call was answered, else ``failed``
==================  ==============================================================

Carrier text and times: ``occurred_at`` becomes the events' (informational) ``timestamp``,
never a time the daemon acts on (a delayed retry keeps its original ``occurred_at``); a value
that is not a plausible ISO 8601 date is 0. msgspec refuses a lone surrogate escape
(``"\ud83d"``) and invalid UTF-8 anywhere in the body, so such a delivery is a parse error
(400); text that reaches a record (transcripts, numbers, digits) is bounded
(``events.carrier_text``), and ids longer than ``MAX_ID_CHARS`` are refused.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec

from ...errors import TelnyxParseError
from ...events import (
    MAX_ID_CHARS,
    MAX_TEXT_CHARS,
    AnyEvent,
    CallActive,
    CallAnswered,
    CallDtmf,
    CallEnded,
    CallInitiated,
    CallMachineDetection,
    CallSpeaking,
    CallSpeech,
    CallSpoken,
    Direction,
    EndReason,
    carrier_text,
    carrier_timestamp_ms,
    finite_or_none,
)


class _TranscriptionData(msgspec.Struct):
    transcript: str = ""
    is_final: bool = False
    confidence: float | None = None
    transcription_track: str | None = None


class _Payload(msgspec.Struct):
    call_control_id: str | None = None
    client_state: str | None = None
    direction: str | None = None
    from_: str | None = msgspec.field(default=None, name="from")
    to: str | None = None
    digit: str | None = None
    digits: str | None = None
    result: str | None = None
    status: str | None = None
    hangup_cause: str | None = None
    hangup_source: str | None = None
    transcription_data: _TranscriptionData | None = None
    speech: Any = None


class _Data(msgspec.Struct):
    event_type: str
    id: str
    occurred_at: str | None = None
    payload: _Payload | None = None


class _Envelope(msgspec.Struct):
    data: _Data


# strict=False: Telnyx may send "0.97" for a float or "1" for a bool; that is not garbage.
_decoder = msgspec.json.Decoder(_Envelope, strict=False)


@dataclass(frozen=True, slots=True)
class TelnyxWebhook:
    """One parsed delivery: what the shell needs to find the call and act."""

    event_type: str
    event_id: str
    call_control_id: str | None
    call_id: str | None  # decoded client_state, when it looks like ours
    direction: Direction | None  # only on call.initiated
    from_: str
    to: str
    occurred_at_ms: int
    hangup_cause: str | None
    hangup_source: str | None
    events: tuple[AnyEvent, ...]

    @property
    def is_inbound_offer(self) -> bool:
        return self.event_type == "call.initiated" and self.direction == "inbound"


def encode_client_state(call_id: str) -> str:
    return base64.b64encode(call_id.encode("utf-8")).decode("ascii")


def decode_client_state(value: str | None) -> str | None:
    """Our call id back from ``client_state``; ``None`` when it cannot be one of ours."""
    if not value or len(value) > 512:
        return None
    try:
        text = base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    if not text or len(text) > 128 or not text.isprintable():
        return None
    return text


def end_reason(
    cause: str | None,
    source: str | None,
    *,
    direction: Direction | None = None,
    answered: bool = True,
) -> EndReason:
    """Map ``hangup_cause``/``hangup_source`` to an end reason (table in the module doc)."""
    cause = (cause or "unspecified").lower()
    if cause == "user_busy":
        return "busy"
    if cause in ("no_answer", "timeout"):
        return "no-answer"
    if cause == "time_limit":
        return "timeout"
    if cause in ("call_rejected", "not_found"):
        return "failed"
    if cause == "originator_cancel":
        return "hangup-user" if direction == "inbound" else "hangup-bot"
    if cause != "normal_clearing" and not answered:
        return "failed"
    who = _who_hung_up(source, direction)
    if who == "bot":
        return "hangup-bot"
    if who == "user":
        return "hangup-user"
    return "completed"


def _who_hung_up(source: str | None, direction: Direction | None) -> str | None:
    if direction is None or source not in ("caller", "callee"):
        return None
    we_are_caller = direction == "outbound"
    return "bot" if (source == "caller") == we_are_caller else "user"


def machine_result(value: str | None) -> str:
    """``human`` / ``machine`` / ``unknown`` from Telnyx's (and premium AMD's) results."""
    value = (value or "").lower()
    if value.startswith("human"):
        return "human"
    if value.startswith(("machine", "fax", "silence")):
        return "machine"
    return "unknown"


def _millis(occurred_at: str | None) -> int:
    if not occurred_at or len(occurred_at) > 64:
        return 0
    try:
        return carrier_timestamp_ms(datetime.fromisoformat(occurred_at).timestamp())
    except (ValueError, OverflowError, OSError):
        return 0


def _speech_text(speech: Any) -> str:
    if isinstance(speech, str):
        return speech
    if isinstance(speech, dict):
        for key in ("transcript", "text", "result"):
            value = speech.get(key)
            if isinstance(value, str):
                return value
    return ""


def parse_webhook(body: bytes) -> TelnyxWebhook:
    """Parse one delivery; raises ``TelnyxParseError`` for anything that is not one."""
    try:
        envelope = _decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise TelnyxParseError(f"not a Telnyx webhook: {exc}") from None
    data = envelope.data
    if not data.event_type or not data.id:
        raise TelnyxParseError("not a Telnyx webhook: empty event_type or id")
    payload = data.payload or _Payload()
    ccid = payload.call_control_id or None
    if max(len(data.id), len(data.event_type), len(ccid or "")) > MAX_ID_CHARS:
        raise TelnyxParseError("not a Telnyx webhook: id, event_type or call_control_id too long")
    if data.event_type.startswith("call.") and ccid is None:
        raise TelnyxParseError(f"{data.event_type} without call_control_id")
    direction: Direction | None = None
    if data.event_type == "call.initiated":
        direction = "inbound" if payload.direction == "incoming" else "outbound"
    hook = TelnyxWebhook(
        event_type=data.event_type,
        event_id=data.id,
        call_control_id=ccid,
        call_id=decode_client_state(payload.client_state),
        direction=direction,
        from_=carrier_text(payload.from_),
        to=carrier_text(payload.to),
        occurred_at_ms=_millis(data.occurred_at),
        hangup_cause=carrier_text(payload.hangup_cause) or None,
        hangup_source=carrier_text(payload.hangup_source) or None,
        events=(),
    )
    return dataclasses.replace(hook, events=_events(hook, payload))


def _events(hook: TelnyxWebhook, p: _Payload) -> tuple[AnyEvent, ...]:
    common: dict[str, Any] = {
        "id": hook.event_id,
        "call_id": hook.call_id,
        "provider_call_id": hook.call_control_id,
        "timestamp": hook.occurred_at_ms,
    }
    match hook.event_type:
        case "call.initiated":
            assert hook.direction is not None
            return (CallInitiated(direction=hook.direction, from_=hook.from_, to=hook.to,
                                  **common),)
        case "call.answered":
            return (CallAnswered(**common),)
        case "call.bridged":
            return (CallActive(**common),)
        case "call.speak.started":
            return (CallSpeaking(**common),)
        case "call.speak.ended":
            return (CallSpoken(**common),)
        case "call.transcription":
            data = p.transcription_data
            if data is None or data.transcription_track == "outbound":
                return ()  # no words, or the bot hearing itself
            text = carrier_text(data.transcript.strip(), MAX_TEXT_CHARS)
            if not text:
                return ()
            return (CallSpeech(text=text, is_final=data.is_final,
                               confidence=finite_or_none(data.confidence), **common),)
        case "call.gather.ended":
            out: list[AnyEvent] = []
            speech = carrier_text(_speech_text(p.speech).strip(), MAX_TEXT_CHARS)
            if speech:
                out.append(CallSpeech(text=speech, **common))
            if digits := carrier_text(p.digits):
                dtmf_id = f"{hook.event_id}:dtmf" if out else hook.event_id
                out.append(CallDtmf(digits=digits, **{**common, "id": dtmf_id}))
            return tuple(out)
        case "call.dtmf.received":
            digit = carrier_text(p.digit)
            return (CallDtmf(digits=digit, **common),) if digit else ()
        case "call.machine.detection.ended" | "call.machine.premium.detection.ended":
            return (CallMachineDetection(result=machine_result(p.result), **common),)
        case "call.hangup":
            reason = end_reason(hook.hangup_cause, hook.hangup_source)
            return (CallEnded(reason=reason, **common),)
    return ()


def bind_events(
    hook: TelnyxWebhook, *, call_id: str, direction: Direction, answered: bool
) -> tuple[AnyEvent, ...]:
    """The events addressed to the call we found, with the hangup reason made exact.

    The parser cannot know the call's direction or whether it was answered; the shell does,
    once it has found the record, and that is what turns ``normal_clearing`` into who hung up.
    """
    out: list[AnyEvent] = []
    for event in hook.events:
        changes: dict[str, Any] = {"call_id": call_id}
        if isinstance(event, CallEnded):
            changes["reason"] = end_reason(
                hook.hangup_cause, hook.hangup_source, direction=direction, answered=answered
            )
        out.append(msgspec.structs.replace(event, **changes))
    return tuple(out)
