"""Twilio webhook parsing against the documented parameter sets in shared/vectors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from voicecall_trio.errors import WebhookParseError
from voicecall_trio.events import (
    MAX_FIELD_CHARS,
    MAX_TEXT_CHARS,
    CallAnswered,
    CallDtmf,
    CallEnded,
    CallInitiated,
    CallMachineDetection,
    CallRinging,
    CallSpeech,
)
from voicecall_trio.providers.twilio.webhooks import (
    STATUS_END_REASONS,
    RequestKind,
    machine_result,
    parse_webhook,
)

VECTORS = Path(__file__).resolve().parents[3] / "shared" / "vectors"
_PATH = VECTORS / "twilio_webhooks.json"
HOOKS: dict[str, Any] = (
    json.loads(_PATH.read_text(encoding="utf-8")) if _PATH.is_file() else {}
)
pytestmark = pytest.mark.skipif(
    not HOOKS, reason=f"Twilio webhook vectors not found at {_PATH}"
)


def _body(params: dict[str, str]) -> bytes:
    return urlencode(params).encode()


STATUS_CASES = {k: v for k, v in HOOKS.get("status_callbacks", {}).items() if not k.startswith("_")}
EXPECTED_STATUS: dict[str, tuple[type, str | None]] = {
    "initiated": (CallInitiated, None),
    "ringing": (CallRinging, None),
    "answered": (CallAnswered, None),
    "completed": (CallEnded, "completed"),
    "busy": (CallEnded, "busy"),
    "no-answer": (CallEnded, "no-answer"),
    "failed": (CallEnded, "failed"),
    "canceled": (CallEnded, "no-answer"),
}


@pytest.mark.parametrize("name", sorted(STATUS_CASES))
def test_every_status_callback(name: str) -> None:
    params = STATUS_CASES[name]
    hook = parse_webhook(_body(params), "callId=call-1&type=status")
    assert hook.kind is RequestKind.STATUS
    assert len(hook.events) == 1
    event = hook.events[0]
    kind, reason = EXPECTED_STATUS[name]
    assert isinstance(event, kind)
    assert event.call_id == "call-1"
    assert event.provider_call_id == params["CallSid"]
    sid, status, seq = params["CallSid"], params["CallStatus"], params["SequenceNumber"]
    assert event.id == f"twilio:{sid}:{status}:{seq}"
    assert event.timestamp > 1_700_000_000_000  # from the Timestamp parameter
    if reason is not None:
        assert isinstance(event, CallEnded) and event.reason == reason
    if isinstance(event, CallInitiated):
        assert event.direction == "outbound"
        assert (event.from_, event.to) == (params["From"], params["To"])


def test_all_status_vectors_covered() -> None:
    assert set(STATUS_CASES) == set(EXPECTED_STATUS)


def test_failed_carries_error_text() -> None:
    hook = parse_webhook(_body(STATUS_CASES["failed"]), "callId=c&type=status")
    assert hook.error is not None and hook.error.startswith("32009: ")


def test_queued_is_ignored() -> None:
    params = dict(STATUS_CASES["initiated"], CallStatus="queued")
    assert parse_webhook(_body(params), "callId=c&type=status").events == ()


def test_duplicate_delivery_same_ids() -> None:
    body = _body(STATUS_CASES["completed"])
    first = parse_webhook(body, "callId=c&type=status")
    again = parse_webhook(body, "callId=c&type=status")
    assert [e.id for e in first.events] == [e.id for e in again.events]


def test_status_without_sequence_number() -> None:
    params = {k: v for k, v in STATUS_CASES["ringing"].items() if k != "SequenceNumber"}
    event = parse_webhook(_body(params), "callId=c&type=status").events[0]
    assert event.id == f"twilio:{params['CallSid']}:ringing"


def test_console_status_callback_recognised_without_type() -> None:
    """An inbound number's status callback (console-configured URL, no query)."""
    params = dict(STATUS_CASES["completed"], Direction="inbound")
    hook = parse_webhook(_body(params), "")
    assert hook.kind is RequestKind.STATUS and hook.call_id is None
    assert isinstance(hook.events[0], CallEnded)
    init = parse_webhook(_body(dict(STATUS_CASES["initiated"], Direction="inbound")), "")
    assert isinstance(init.events[0], CallInitiated) and init.events[0].direction == "inbound"


@pytest.mark.parametrize("status", ["completed", "busy", "no-answer", "failed", "canceled"])
def test_final_status_without_callback_source_is_a_status_callback(status: str) -> None:
    """A final CallStatus at the bare URL is never a TwiML fetch (or a second inbound offer)."""
    params = {k: v for k, v in STATUS_CASES[status].items() if k != "CallbackSource"}
    params["Direction"] = "inbound"
    hook = parse_webhook(_body(params), "")
    assert hook.kind is RequestKind.STATUS and hook.inbound_offer is None
    (event,) = hook.events
    assert isinstance(event, CallEnded)


def test_inbound_first_request_is_an_offer() -> None:
    params = HOOKS["inbound_call_initial"]["params"]
    hook = parse_webhook(_body(params), "")
    assert hook.kind is RequestKind.FETCH
    assert hook.events == ()
    offer = hook.inbound_offer
    assert offer is not None
    assert offer.direction == "inbound"
    assert (offer.from_, offer.to) == ("+14155551234", "+15005550006")
    assert offer.provider_call_id == params["CallSid"]
    assert offer.id == f"twilio:{params['CallSid']}:inbound"


def test_outbound_answer_fetch() -> None:
    params = HOOKS["outbound_call_answered_voice_url"]["params"]
    hook = parse_webhook(_body(params), "callId=call-9")
    assert hook.kind is RequestKind.FETCH and hook.inbound_offer is None
    answered, amd = hook.events
    assert isinstance(answered, CallAnswered) and answered.call_id == "call-9"
    assert isinstance(amd, CallMachineDetection) and amd.result == "human"


def test_async_amd_callback() -> None:
    params = HOOKS["async_amd_callback"]["params"]
    for query in ("", "callId=c&type=amd"):
        hook = parse_webhook(_body(params), query)
        assert hook.kind is RequestKind.STATUS
        (event,) = hook.events
        assert isinstance(event, CallMachineDetection) and event.result == "machine"


@pytest.mark.parametrize(
    ("answered_by", "result"),
    [("human", "human"), ("machine_start", "machine"), ("machine_end_beep", "machine"),
     ("machine_end_silence", "machine"), ("machine_end_other", "machine"), ("fax", "machine"),
     ("unknown", "unknown")],
)
def test_machine_results(answered_by: str, result: str) -> None:
    assert machine_result(answered_by) == result


def test_gather_speech() -> None:
    params = HOOKS["gather_speech_result"]["params"]
    hook = parse_webhook(_body(params), "callId=c&type=gather&turn=T1")
    assert hook.kind is RequestKind.GATHER and hook.turn == "T1"
    (speech,) = hook.events
    assert isinstance(speech, CallSpeech)
    assert speech.text == "I would like to book a table for two."
    assert speech.is_final is True
    assert speech.confidence == pytest.approx(0.9217463)
    assert speech.id == f"twilio:{params['CallSid']}:gather:T1:speech"


def test_gather_dtmf() -> None:
    params = HOOKS["gather_dtmf_result"]["params"]
    hook = parse_webhook(_body(params), "callId=c&type=gather&turn=T")
    (dtmf,) = hook.events
    assert isinstance(dtmf, CallDtmf) and dtmf.digits == "1"


def test_gather_empty() -> None:
    params = HOOKS["gather_empty_result"]["params"]
    hook = parse_webhook(_body(params), "callId=c&type=gather&turn=T")
    assert hook.kind is RequestKind.GATHER and hook.events == ()


def test_hold_with_said_marker() -> None:
    params = HOOKS["gather_empty_result"]["params"]
    hook = parse_webhook(_body(params), "callId=c&type=hold&said=S1")
    assert hook.kind is RequestKind.HOLD and hook.said == "S1" and hook.events == ()


def test_unknown_params_ignored_and_json_body_accepted() -> None:
    params = dict(STATUS_CASES["ringing"], BrandNewTwilioParam="x")
    assert isinstance(parse_webhook(_body(params), "type=status").events[0], CallRinging)
    body = json.dumps({"CallSid": "CA1", "CallStatus": "busy", "SequenceNumber": 2}).encode()
    hook = parse_webhook(body, "callId=c&type=status", "application/json")
    assert isinstance(hook.events[0], CallEnded) and hook.events[0].id == "twilio:CA1:busy:2"


@pytest.mark.parametrize(
    ("body", "query", "ctype"),
    [
        (b"\xff\xfe\x00garbage", "", "application/x-www-form-urlencoded"),
        (b"From=%2B1415", "callId=c", "application/x-www-form-urlencoded"),  # no CallSid
        (b"not json", "", "application/json"),
        (b"[1, 2]", "", "application/json"),
        (b"CallSid=CA1", "type=bogus", "application/x-www-form-urlencoded"),
        (b"CallSid=CA1&&&=", "", "application/x-www-form-urlencoded"),
    ],
)
def test_unreadable(body: bytes, query: str, ctype: str) -> None:
    with pytest.raises(WebhookParseError):
        parse_webhook(body, query, ctype)


def test_canceled_documented_as_no_answer() -> None:
    assert STATUS_END_REASONS["canceled"] == "no-answer"


# -- carrier text and times (issue 8, items 4 and 5) -----------------------------------------

def _gather(**changes: str) -> dict[str, str]:
    params = dict(HOOKS["gather_speech_result"]["params"])
    params.update(changes)
    return params


def test_a_percent_encoded_surrogate_becomes_a_replacement_character() -> None:
    # %ED%A0%BD is the UTF-8 form of the lone surrogate U+D83D (an emoji cut in half)
    params = dict(HOOKS["gather_speech_result"]["params"])
    params.pop("SpeechResult")
    body = _body(params) + b"&SpeechResult=hi+%F0%9F%98%80+%ED%A0%BD"
    (speech,) = parse_webhook(body, "callId=c&type=gather&turn=T").events
    assert isinstance(speech, CallSpeech)
    assert speech.text.startswith("hi \U0001f600 \ufffd")
    speech.text.encode("utf-8")  # strict: it can be journaled


def test_a_json_body_with_a_lone_surrogate_escape_is_refused() -> None:
    body = json.dumps(_gather(SpeechResult="cut \ud83d")).encode()  # ASCII: "\\ud83d"
    assert b"\\ud83d" in body
    with pytest.raises(WebhookParseError):
        parse_webhook(body, "callId=c&type=gather&turn=T", "application/json")


def test_raw_invalid_utf8_in_a_form_is_refused() -> None:
    with pytest.raises(WebhookParseError):
        parse_webhook(b"CallSid=CA1&SpeechResult=\xed\xa0\xbd", "callId=c&type=gather&turn=T")


def test_huge_carrier_fields_are_bounded() -> None:
    huge = "x" * 1_048_576
    params = _gather(SpeechResult=huge, Digits="1" * 100_000, From=huge, To=huge,
                     Confidence="9" * 5000)
    hook = parse_webhook(_body(params), "callId=c&type=gather&turn=T")
    speech, dtmf = hook.events
    assert isinstance(speech, CallSpeech) and isinstance(dtmf, CallDtmf)
    assert len(speech.text) == MAX_TEXT_CHARS
    assert len(dtmf.digits) <= MAX_FIELD_CHARS
    assert len(hook.from_) <= MAX_FIELD_CHARS and len(hook.to) <= MAX_FIELD_CHARS
    assert speech.confidence is None or speech.confidence < float("inf")


@pytest.mark.parametrize("confidence", ["inf", "-inf", "nan", "1e999"])
def test_a_non_finite_confidence_is_dropped(confidence: str) -> None:
    (speech, *_) = parse_webhook(_body(_gather(Confidence=confidence)),
                                 "callId=c&type=gather&turn=T").events
    assert isinstance(speech, CallSpeech) and speech.confidence is None


def test_an_absurdly_long_callsid_is_refused() -> None:
    with pytest.raises(WebhookParseError):
        parse_webhook(_body(_gather(CallSid="CA" + "0" * 300)), "callId=c&type=gather&turn=T")


ANSWERED = {"CallSid": "CA1", "CallStatus": "in-progress", "CallbackSource":
            "call-progress-events", "SequenceNumber": "1"}


@pytest.mark.parametrize("stamp", [
    "Mon, 1 Jan 99999999999 00:00:00 +0000",  # overflows the C time functions
    "Fri, 31 Dec 9999 23:59:59 -2359",  # past year 9999 in UTC
    "Thu, 01 Jan 1970 00:00:00 +0100",  # before the epoch
    "yesterday", "", "9" * 5000, "Mon, 32 Jan 2026 00:00:00 +0000",
])
def test_implausible_timestamps_are_unknown_not_errors(stamp: str) -> None:
    (event,) = parse_webhook(_body({**ANSWERED, "Timestamp": stamp}), "type=status").events
    assert isinstance(event, CallAnswered) and event.timestamp == 0


def test_a_plausible_timestamp_is_kept_for_diagnostics() -> None:
    stamp = "Tue, 01 Dec 2026 10:00:00 +0000"
    (event,) = parse_webhook(_body({**ANSWERED, "Timestamp": stamp}), "type=status").events
    assert event.timestamp == 1_796_119_200_000
