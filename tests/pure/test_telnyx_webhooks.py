"""Telnyx webhook bodies (built from the SDK's models) -> our events."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from voicecall_trio.errors import TelnyxParseError
from voicecall_trio.events import (
    MAX_FIELD_CHARS,
    MAX_TEXT_CHARS,
    CallActive,
    CallAnswered,
    CallDtmf,
    CallEnded,
    CallInitiated,
    CallMachineDetection,
    CallSpeaking,
    CallSpeech,
    CallSpoken,
)
from voicecall_trio.providers.telnyx.webhooks import (
    bind_events,
    decode_client_state,
    encode_client_state,
    end_reason,
    machine_result,
    parse_webhook,
)

VECTORS = Path(__file__).resolve().parents[3] / "shared" / "vectors"
if not (VECTORS / "telnyx_webhooks.json").is_file():
    pytest.skip(f"Telnyx webhook vectors not found in {VECTORS}", allow_module_level=True)

BODIES: dict[str, Any] = json.loads((VECTORS / "telnyx_webhooks.json").read_text("utf-8"))
CCID = "v3:u5OAKGEPT3Dx8SZSSDRWEMdNH2OripQhO"

# vector name -> (event class, fields it must carry); None: no event at all
EXPECTED: dict[str, tuple[type, dict[str, Any]] | None] = {
    "call.initiated": (CallInitiated, {"direction": "inbound", "from_": "+14155551234",
                                       "to": "+15005550006"}),
    "call.initiated_outgoing": (CallInitiated, {"direction": "outbound"}),
    "call.answered": (CallAnswered, {}),
    "call.speak.started": (CallSpeaking, {"text": ""}),
    "call.speak.ended": (CallSpoken, {}),
    "call.transcription_interim": (CallSpeech, {"text": "hello I would like to",
                                                "is_final": False, "confidence": 0.71}),
    "call.transcription_final": (CallSpeech, {"text": "hello I would like to book a table for two",
                                              "is_final": True, "confidence": 0.977219}),
    "call.gather.ended": (CallDtmf, {"digits": "1"}),
    "call.dtmf.received": (CallDtmf, {"digits": "1"}),
    "call.machine.detection.ended": (CallMachineDetection, {"result": "human"}),
    "call.playback.started": None,
    "call.playback.ended": None,
    "call.hangup": (CallEnded, {"reason": "completed"}),
}


def raw(name: str) -> bytes:
    return json.dumps(BODIES[name]).encode()


def test_every_vector_is_covered() -> None:
    assert set(EXPECTED) == {k for k in BODIES if not k.startswith("_")}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_vector_maps_to_event(name: str) -> None:
    hook = parse_webhook(raw(name))
    data = BODIES[name]["data"]
    assert hook.event_type == data["event_type"]
    assert hook.event_id == data["id"]
    assert hook.call_control_id == CCID
    expected = EXPECTED[name]
    if expected is None:
        assert hook.events == ()
        return
    cls, fields = expected
    (event,) = hook.events
    assert type(event) is cls
    assert event.id == data["id"]  # Telnyx's event id: redeliveries dedupe in the model
    assert event.provider_call_id == CCID
    assert event.timestamp > 0
    for field, value in fields.items():
        assert getattr(event, field) == value, field


def test_envelope_without_meta_parses() -> None:
    body = {"data": BODIES["call.answered"]["data"]}
    (event,) = parse_webhook(json.dumps(body).encode()).events
    assert isinstance(event, CallAnswered)


def test_inbound_offer_and_foreign_client_state() -> None:
    hook = parse_webhook(raw("call.initiated"))
    assert hook.is_inbound_offer and hook.call_id is None  # client_state null
    hook = parse_webhook(raw("call.answered"))
    assert not hook.is_inbound_offer
    assert hook.call_id == '{"tenant":"acme"}'  # not ours: the shell falls back to the ccid


def test_client_state_round_trip() -> None:
    call_id = "0b6f3a1e-6c1d-4f83-9a8e-0d7b6a5c4e3f"
    assert decode_client_state(encode_client_state(call_id)) == call_id
    assert decode_client_state(None) is None
    assert decode_client_state("***") is None
    assert decode_client_state("gA==") is None  # not UTF-8


@pytest.mark.parametrize(
    "body",
    [b"", b"not json", b"[]", b"{}", b'{"data": 1}', b'{"data": {"id": "x"}}',
     b'{"data": {"event_type": "call.answered", "id": ""}}',
     b'{"data": {"event_type": "call.answered", "id": "x", "payload": {}}}',
     b'{"data": {"event_type": 5, "id": "x"}}', "\udcff".encode("utf-8", "surrogatepass")],
)
def test_garbage_is_a_parse_error(body: bytes) -> None:
    with pytest.raises(TelnyxParseError):
        parse_webhook(body)


def test_unknown_event_type_is_not_an_error() -> None:
    body = {"data": {"event_type": "message.received", "id": "e1", "payload": {}}}
    assert parse_webhook(json.dumps(body).encode()).events == ()


def with_payload(name: str, **payload: Any) -> bytes:
    body = json.loads(raw(name))
    body["data"]["payload"].update(payload)
    return json.dumps(body).encode()


def test_outbound_track_transcription_is_ignored() -> None:
    data = {"transcript": "the bot itself", "is_final": True, "transcription_track": "outbound"}
    assert parse_webhook(with_payload("call.transcription_final",
                                      transcription_data=data)).events == ()


def test_empty_transcript_gives_nothing() -> None:
    data = {"transcript": "  ", "is_final": True}
    assert parse_webhook(with_payload("call.transcription_final",
                                      transcription_data=data)).events == ()


def test_gather_with_speech_and_digits_gives_two_distinct_events() -> None:
    hook = parse_webhook(with_payload("call.gather.ended", speech={"transcript": "yes please"}))
    speech, dtmf = hook.events
    assert isinstance(speech, CallSpeech) and speech.text == "yes please"
    assert isinstance(dtmf, CallDtmf) and dtmf.digits == "1"
    assert speech.id != dtmf.id


def test_bridged_is_active() -> None:
    body = json.loads(raw("call.answered"))
    body["data"]["event_type"] = "call.bridged"
    (event,) = parse_webhook(json.dumps(body).encode()).events
    assert isinstance(event, CallActive)


@pytest.mark.parametrize(
    ("cause", "source", "direction", "answered", "reason"),
    [
        ("normal_clearing", "caller", None, True, "completed"),
        ("normal_clearing", "caller", "inbound", True, "hangup-user"),
        ("normal_clearing", "callee", "inbound", True, "hangup-bot"),
        ("normal_clearing", "caller", "outbound", True, "hangup-bot"),
        ("normal_clearing", "callee", "outbound", True, "hangup-user"),
        ("normal_clearing", "unknown", "outbound", True, "completed"),
        ("user_busy", "callee", "outbound", False, "busy"),
        ("no_answer", None, "outbound", False, "no-answer"),
        ("timeout", None, "outbound", False, "no-answer"),
        ("time_limit", None, "outbound", True, "timeout"),
        ("call_rejected", None, "outbound", False, "failed"),
        ("not_found", None, "outbound", False, "failed"),
        ("originator_cancel", "caller", "outbound", False, "hangup-bot"),
        ("originator_cancel", "caller", "inbound", False, "hangup-user"),
        ("unspecified", None, "outbound", False, "failed"),
        ("unspecified", None, "outbound", True, "completed"),
        (None, None, None, True, "completed"),
    ],
)
def test_end_reason_mapping(
    cause: str | None, source: str | None, direction: Any, answered: bool, reason: str
) -> None:
    assert end_reason(cause, source, direction=direction, answered=answered) == reason


def test_every_documented_hangup_cause_maps_to_an_end_reason() -> None:
    for cause in BODIES["_enums"]["call.hangup.hangup_cause"]:
        for source in BODIES["_enums"]["call.hangup.hangup_source"]:
            assert end_reason(cause, source, direction="outbound", answered=False)


def test_bind_events_addresses_our_call_and_refines_the_hangup() -> None:
    hook = parse_webhook(raw("call.hangup"))  # hangup_source caller
    (event,) = bind_events(hook, call_id="ours", direction="inbound", answered=True)
    assert isinstance(event, CallEnded)
    assert event.call_id == "ours" and event.reason == "hangup-user"
    assert event.id == hook.event_id


def test_machine_results() -> None:
    assert [machine_result(v) for v in ("human", "machine", "not_sure", None,
                                        "human_residence", "fax_detected")] == [
        "human", "machine", "unknown", "unknown", "human", "machine"]


# -- carrier text and times (issue 8, items 4 and 5) -----------------------------------------

def transcription(text: str, **data: Any) -> bytes:
    return with_payload("call.transcription_final", transcription_data={
        "transcript": text, "is_final": True, "transcription_track": "inbound", **data})


def test_a_lone_surrogate_escape_is_a_parse_error() -> None:
    body = transcription("cut \ud83d")  # json.dumps writes the escape "\\ud83d"
    assert b"\\ud83d" in body
    with pytest.raises(TelnyxParseError):
        parse_webhook(body)
    with pytest.raises(TelnyxParseError):
        parse_webhook(with_payload("call.initiated", **{"from": "\udc00"}))


def test_a_surrogate_pair_is_an_emoji() -> None:
    (speech,) = parse_webhook(transcription("ok \U0001f600")).events
    assert isinstance(speech, CallSpeech) and speech.text == "ok \U0001f600"


def test_huge_carrier_fields_are_bounded() -> None:
    huge = "y" * 1_048_576
    (speech,) = parse_webhook(transcription(huge)).events
    assert isinstance(speech, CallSpeech) and len(speech.text) == MAX_TEXT_CHARS
    hook = parse_webhook(with_payload("call.initiated", **{"from": huge, "to": huge}))
    assert len(hook.from_) == MAX_FIELD_CHARS and len(hook.to) == MAX_FIELD_CHARS
    (dtmf,) = parse_webhook(with_payload("call.dtmf.received", digit="5" * 100_000)).events
    assert isinstance(dtmf, CallDtmf) and len(dtmf.digits) == MAX_FIELD_CHARS
    (gathered, _) = parse_webhook(with_payload("call.gather.ended", speech=huge)).events
    assert isinstance(gathered, CallSpeech) and len(gathered.text) == MAX_TEXT_CHARS


@pytest.mark.parametrize("field", ["id", "event_type"])
def test_absurdly_long_ids_are_refused(field: str) -> None:
    body = json.loads(raw("call.answered"))
    body["data"][field] = "call." + "e" * 1000
    with pytest.raises(TelnyxParseError):
        parse_webhook(json.dumps(body).encode())
    with pytest.raises(TelnyxParseError):
        parse_webhook(with_payload("call.answered", call_control_id="v3:" + "c" * 1000))


@pytest.mark.parametrize("confidence", ["nan", "inf", "-inf"])
def test_a_non_finite_confidence_is_dropped(confidence: str) -> None:
    (speech,) = parse_webhook(transcription("hello", confidence=confidence)).events
    assert isinstance(speech, CallSpeech) and speech.confidence is None


@pytest.mark.parametrize("occurred_at", [
    "9999-12-31T23:59:59-23:59",  # past year 9999 in UTC
    "0001-01-01T00:00:00+23:59",  # before the epoch
    "1969-12-31T23:59:59Z", "not a date", "", "2" * 5000, 5, None,
])
def test_implausible_occurred_at_is_unknown_not_an_error(occurred_at: Any) -> None:
    body = json.loads(raw("call.answered"))
    body["data"]["occurred_at"] = occurred_at
    try:
        hook = parse_webhook(json.dumps(body).encode())
    except TelnyxParseError:
        assert not isinstance(occurred_at, str | None)  # a number is not a date string
        return
    assert hook.occurred_at_ms == 0 and hook.events[0].timestamp == 0
