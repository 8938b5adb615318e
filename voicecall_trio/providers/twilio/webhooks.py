"""Twilio voice webhooks -> our events. Pure: the body and query in, a ``TwilioWebhook`` out.

Our own query parameters say what a request is for, because we wrote them into the URLs
we gave Twilio (``urls`` holds that grammar: ``callId``, ``type``, ``turn``, ``said``).
Requests to the bare webhook URL (the number's Voice URL in the console) are inbound offers,
or status callbacks when Twilio marks them ``CallbackSource=call-progress-events``.

Event ids are built from the webhook content only, so a redelivered webhook yields the
same ids and the call model ignores it (``twilio:<CallSid>:<CallStatus>[:<SequenceNumber>]``
for status callbacks, ``twilio:<CallSid>:gather:<turn>:speech`` for a Gather result).

Status mapping (``STATUS_END_REASONS``): ``completed`` is "completed" whoever hung up
(Twilio does not say; a hangup we asked for is recorded by the supervisor before the
callback arrives), ``canceled`` is "no-answer": the call ended before anyone answered it.
Unknown parameters are ignored, since Twilio adds new ones without notice.

Carrier text and times: ``Timestamp`` becomes the events' (informational) ``timestamp``, never
a time the daemon acts on; a date that cannot be parsed, or is not a plausible one, is 0.
Text that reaches a record (``SpeechResult``, ``From``, ``To``, ``Digits``) is valid Unicode
(the form decoder turns a percent-encoded surrogate into U+FFFD; a JSON body with a lone
``\ud83d`` escape is refused by msgspec, hence 400) and bounded (``events.carrier_text``); a
``CallSid`` longer than ``MAX_ID_CHARS`` is refused.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime

import msgspec

from ...errors import WebhookParseError
from ...events import (
    MAX_ID_CHARS,
    MAX_TEXT_CHARS,
    AnyEvent,
    CallAnswered,
    CallDtmf,
    CallEnded,
    CallInitiated,
    CallMachineDetection,
    CallRinging,
    CallSpeech,
    EndReason,
    carrier_text,
    carrier_timestamp_ms,
    finite_or_none,
)
from ..forms import form_pairs
from . import urls
from .urls import Callback, parse_callback

STATUS_END_REASONS: dict[str, EndReason] = {
    "completed": "completed",
    "busy": "busy",
    "no-answer": "no-answer",
    "failed": "failed",
    "canceled": "no-answer",
}
LIVE_STATUSES = frozenset({"queued", "initiated", "ringing", "in-progress"})


class RequestKind(enum.StrEnum):
    FETCH = "twiml-fetch"  # Twilio wants the call's TwiML (answer of an outbound, inbound offer)
    STATUS = "status"  # status callback or async AMD result: answer an empty Response
    GATHER = "gather"  # result of our <Gather>
    HOLD = "hold"  # our own <Redirect> loop while the bot thinks


@dataclass(frozen=True, slots=True)
class TwilioWebhook:
    kind: RequestKind
    call_sid: str
    call_id: str | None = None  # ours, from the query
    status: str | None = None  # CallStatus
    direction: str | None = None
    from_: str = ""
    to: str = ""
    turn: str | None = None  # Gather turn token
    said: str | None = None  # hold redirect after a <Say>: which one finished
    answered_by: str | None = None
    error: str | None = None  # "ErrorCode: ErrorMessage" of a failed call
    events: tuple[AnyEvent, ...] = ()
    inbound_offer: CallInitiated | None = None
    params: Mapping[str, str] = field(default_factory=dict)


def read_params(body: bytes, content_type: str = "") -> dict[str, str]:
    """Form (default) or JSON object body -> flat str dict; first value of a repeated key."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise WebhookParseError("body is not UTF-8") from None
    if "json" in content_type.lower():
        try:
            doc = msgspec.json.decode(body)
        except msgspec.DecodeError:
            raise WebhookParseError("body is not valid JSON") from None
        if not isinstance(doc, dict):
            raise WebhookParseError("JSON body is not an object")
        return {
            str(k): ("true" if v is True else "false" if v is False else str(v))
            for k, v in doc.items()
            if isinstance(v, str | int | float | bool)
        }
    try:
        pairs = form_pairs(text, strict=True)
    except ValueError:
        raise WebhookParseError("body is not form-encoded") from None
    out: dict[str, str] = {}
    for key, value in pairs:
        out.setdefault(key, value)
    return out


def machine_result(answered_by: str) -> str:
    """Twilio's AnsweredBy -> ``human`` | ``machine`` | ``unknown``."""
    if answered_by == "human":
        return "human"
    if answered_by.startswith("machine") or answered_by == "fax":
        return "machine"
    return "unknown"


def _timestamp_ms(value: str | None) -> int:
    """RFC 2822 date -> ms on the carrier's clock; 0 when it is not a plausible date."""
    if not value or len(value) > 64:
        return 0
    try:
        return carrier_timestamp_ms(parsedate_to_datetime(value).timestamp())
    except (TypeError, ValueError, IndexError, OverflowError):
        return 0


def _kind(callback: Callback, params: Mapping[str, str]) -> RequestKind:
    kind = callback.type
    if kind:
        if kind == urls.AMD:
            return RequestKind.STATUS
        try:
            return RequestKind(kind)
        except ValueError:
            raise WebhookParseError(f"unknown request type {kind!r}") from None
    if params.get("CallbackSource") == "call-progress-events":
        return RequestKind.STATUS
    if params.get("CallStatus") in STATUS_END_REASONS:
        # Twilio never asks for TwiML of an ended call: this is a status callback whatever
        # its other parameters say (a number's "call status changes" URL set to the webhook)
        return RequestKind.STATUS
    if "AnsweredBy" in params and "CallStatus" not in params:
        return RequestKind.STATUS  # async AMD callback
    return RequestKind.FETCH


def _status_events(
    sid: str, call_id: str | None, params: Mapping[str, str]
) -> list[AnyEvent]:
    status = params.get("CallStatus", "")[:32]
    seq = params.get("SequenceNumber", "")[:32]
    eid = f"twilio:{sid}:{status}" + (f":{seq}" if seq else "")
    at = _timestamp_ms(params.get("Timestamp"))
    if status == "initiated":
        inbound = params.get("Direction") == "inbound" and call_id is None
        return [CallInitiated(id=eid, call_id=call_id, provider_call_id=sid, timestamp=at,
                              direction="inbound" if inbound else "outbound",
                              from_=_party(params, "From"), to=_party(params, "To"))]
    if status == "ringing":
        return [CallRinging(id=eid, call_id=call_id, provider_call_id=sid, timestamp=at)]
    if status == "in-progress":
        return [CallAnswered(id=eid, call_id=call_id, provider_call_id=sid, timestamp=at)]
    if status in STATUS_END_REASONS:
        return [CallEnded(id=eid, call_id=call_id, provider_call_id=sid, timestamp=at,
                          reason=STATUS_END_REASONS[status])]
    return []  # queued, or a status Twilio invents later


def _gather_events(
    sid: str, call_id: str | None, turn: str | None, params: Mapping[str, str], body: bytes
) -> list[AnyEvent]:
    key = turn or hashlib.sha256(body).hexdigest()[:16]
    events: list[AnyEvent] = []
    speech = carrier_text(params.get("SpeechResult", "").strip(), MAX_TEXT_CHARS)
    if speech:
        try:
            confidence = finite_or_none(float(params["Confidence"][:64]))
        except (KeyError, ValueError):
            confidence = None
        events.append(CallSpeech(id=f"twilio:{sid}:gather:{key}:speech", call_id=call_id,
                                 provider_call_id=sid, text=speech, is_final=True,
                                 confidence=confidence))
    digits = carrier_text(params.get("Digits", "").strip())
    if digits:
        events.append(CallDtmf(id=f"twilio:{sid}:gather:{key}:dtmf", call_id=call_id,
                               provider_call_id=sid, digits=digits))
    return events


def _party(params: Mapping[str, str], key: str) -> str:
    """``From`` / ``To``: a number, a client name or a SIP URI; bounded, valid Unicode."""
    return carrier_text(params.get(key, ""))


def strict_form(body: bytes, content_type: str) -> list[tuple[str, str]] | None:
    """The body's form pairs if it is a well-formed UTF-8 form, else None.

    Decoded once per webhook and shared by the signature check and ``parse_webhook``: for
    such a body the lenient and the strict decodings agree, so sharing changes no answer.
    """
    if "json" in content_type.lower():
        return None
    try:
        return form_pairs(body.decode("utf-8"), strict=True)
    except ValueError:  # UnicodeDecodeError is one
        return None


def parse_webhook(
    body: bytes, query_string: str, content_type: str = "application/x-www-form-urlencoded",
    *, form: list[tuple[str, str]] | None = None,
) -> TwilioWebhook:
    """Classify one webhook and turn it into events; raises ``WebhookParseError``.

    ``form`` is ``strict_form(body, content_type)`` when the caller already has it.
    """
    if form is not None:
        params: dict[str, str] = {}
        for key, value in form:
            params.setdefault(key, value)
    else:
        params = read_params(body, content_type)
    callback = parse_callback(query_string)
    sid = params.get("CallSid", "").strip()
    if not sid:
        raise WebhookParseError("missing CallSid")
    if len(sid) > MAX_ID_CHARS:
        raise WebhookParseError("CallSid too long")
    sid = carrier_text(sid, MAX_ID_CHARS)
    call_id = callback.call_id
    kind = _kind(callback, params)
    events: list[AnyEvent] = []
    offer: CallInitiated | None = None
    status = params.get("CallStatus")
    if kind is RequestKind.STATUS:
        events += _status_events(sid, call_id, params)
    elif kind is RequestKind.GATHER:
        events += _gather_events(sid, call_id, callback.turn, params, body)
    elif kind is RequestKind.FETCH:
        if call_id is None and params.get("Direction") == "inbound":
            offer = CallInitiated(id=f"twilio:{sid}:inbound", provider_call_id=sid,
                                  direction="inbound", from_=_party(params, "From"),
                                  to=_party(params, "To"))
        elif status == "in-progress":
            events.append(CallAnswered(id=f"twilio:{sid}:answered", call_id=call_id,
                                       provider_call_id=sid))
    answered_by = carrier_text(params.get("AnsweredBy")) or None
    if answered_by and kind is not RequestKind.GATHER and kind is not RequestKind.HOLD:
        events.append(CallMachineDetection(id=f"twilio:{sid}:amd", call_id=call_id,
                                           provider_call_id=sid,
                                           result=machine_result(answered_by)))
    error = None
    if params.get("ErrorCode"):
        error = carrier_text(
            f"{params['ErrorCode']}: {params.get('ErrorMessage', '')}".rstrip(": "))
    return TwilioWebhook(
        kind=kind, call_sid=sid, call_id=call_id, status=status,
        direction=params.get("Direction"), from_=_party(params, "From"),
        to=_party(params, "To"), turn=callback.turn,
        said=callback.said, answered_by=answered_by, error=error,
        events=tuple(events), inbound_offer=offer, params=params,
    )
