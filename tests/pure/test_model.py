"""The call state machine: the table, idempotence, terminal finality."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from voicecall_trio import model
from voicecall_trio.events import (
    CallActive,
    CallAnswered,
    CallDtmf,
    CallEnded,
    CallError,
    CallEvent,
    CallMachineDetection,
    CallRinging,
    CallSpeaking,
    CallSpeech,
    CallSpoken,
    decode_event,
    encode_event,
)
from voicecall_trio.model import CallState, apply, can_move, new_record


def fresh() -> model.CallRecord:
    return new_record(provider="mock", direction="outbound", from_="+15550001111",
                      to="+15550002222", call_id="c1", at=1000)


def test_terminal_states_never_move() -> None:
    for state in model.TERMINAL_STATES:
        for target in CallState:
            assert not can_move(state, target)


def test_live_states_can_always_end() -> None:
    for state in CallState:
        if not state.terminal:
            for target in model.TERMINAL_STATES:
                assert can_move(state, target)


def test_no_backwards_moves() -> None:
    assert not can_move(CallState.ANSWERED, CallState.RINGING)
    assert not can_move(CallState.LISTENING, CallState.ANSWERED)
    assert can_move(CallState.SPEAKING, CallState.LISTENING)
    assert can_move(CallState.LISTENING, CallState.SPEAKING)


def test_lifecycle_records_times_transcript_and_reason() -> None:
    r = fresh()
    r = apply(r, CallRinging(id="1"), at=1100)
    r = apply(r, CallAnswered(id="2"), at=1200)
    assert r.state is CallState.ANSWERED and r.answered_at == 1200
    r = apply(r, CallSpeaking(id="3", text="Hello"), at=1300)
    r = apply(r, CallSpoken(id="4"), at=1400)
    r = apply(r, CallSpeech(id="5", text="Hi there"), at=1500)
    assert [(e.speaker, e.text) for e in r.transcript] == [("bot", "Hello"), ("user", "Hi there")]
    r = apply(r, CallEnded(id="6", reason="completed"), at=1600)
    assert r.state is CallState.COMPLETED
    assert (r.end_reason, r.ended_at) == ("completed", 1600)


def test_late_ringing_does_not_rewind_an_answered_call() -> None:
    r = apply(apply(fresh(), CallAnswered(id="a"), at=1100), CallRinging(id="r"), at=1100)
    assert r.state is CallState.ANSWERED


def test_events_after_the_end_change_nothing() -> None:
    ended = apply(fresh(), CallEnded(id="e", reason="busy"), at=1100)
    assert apply(ended, CallAnswered(id="late"), at=1100) is ended
    assert apply(ended, CallSpeech(id="s", text="hello?"), at=1100) is ended


def test_partial_transcripts_are_not_recorded() -> None:
    r = apply(apply(fresh(), CallAnswered(id="a"), at=1100),
              CallSpeech(id="p", text="hel", is_final=False), at=1100)
    assert r.transcript == ()


def test_dtmf_machine_detection_and_retryable_errors_go_to_metadata() -> None:
    r = apply(fresh(), CallAnswered(id="a"), at=1100)
    r = apply(apply(r, CallDtmf(id="d1", digits="1"), at=1100), CallDtmf(id="d2", digits="2"),
              at=1100)
    r = apply(r, CallMachineDetection(id="m", result="human"), at=1100)
    r = apply(r, CallError(id="x", error="blip", retryable=True), at=1100)
    assert r.metadata["dtmf"] == "12" and r.metadata["answeredBy"] == "human"
    assert r.state is CallState.ANSWERED
    r = apply(r, CallError(id="y", error="fatal"), at=1100)
    assert r.state is CallState.ERROR and r.end_reason == "error"


EVENTS = st.one_of(
    st.builds(CallRinging, id=st.sampled_from("abcdef")),
    st.builds(CallAnswered, id=st.sampled_from("abcdef")),
    st.builds(CallActive, id=st.sampled_from("abcdef")),
    st.builds(CallSpeaking, id=st.sampled_from("abcdef"), text=st.text(max_size=5)),
    st.builds(CallSpoken, id=st.sampled_from("abcdef")),
    st.builds(CallSpeech, id=st.sampled_from("abcdef"), text=st.text(max_size=5)),
    st.builds(CallEnded, id=st.sampled_from("abcdef"),
              reason=st.sampled_from(["completed", "busy", "hangup-user"])),
)


@given(st.lists(EVENTS, max_size=12))
def test_applying_any_event_twice_changes_nothing(events: list[object]) -> None:
    r = fresh()
    for event in events:
        once = apply(r, event, at=5)  # type: ignore[arg-type]
        assert apply(once, event, at=6) == once  # type: ignore[arg-type]
        r = once


@given(st.lists(EVENTS, max_size=12))
def test_terminal_is_final_under_any_sequence(events: list[object]) -> None:
    r = fresh()
    ended_at = None
    for event in events:
        r = apply(r, event, at=5)  # type: ignore[arg-type]
        if r.terminal and ended_at is None:
            ended_at = (r.state, r.ended_at)
        if ended_at is not None:
            assert (r.state, r.ended_at) == ended_at


def test_events_round_trip_as_tagged_json() -> None:
    event = CallSpeech(id="x", call_id="c", text="hi", confidence=0.5)
    data = encode_event(event)
    assert b'"type":"call.speech"' in data and b'"callId":"c"' in data
    assert decode_event(data) == event


def test_record_json_uses_the_seed_field_names() -> None:
    r = apply(fresh(), CallAnswered(id="a"), at=1200)
    doc = msgspec.json.decode(msgspec.json.encode(r))
    assert {"callId", "provider", "direction", "state", "from", "to", "startedAt",
            "answeredAt", "transcript", "processedEventIds"} <= set(doc)
    assert doc["state"] == "answered"
    assert "endReason" not in doc  # unset optionals are omitted, as the seed's readers expect


@pytest.mark.parametrize("reason", sorted(model.END_REASONS if hasattr(model, "END_REASONS")
                                          else {"completed"}))
def test_end_record_accepts_every_reason(reason: str) -> None:
    assert model.end_record(fresh(), reason, at=1100).end_reason == reason  # type: ignore[arg-type]


# -- the daemon's clock, not the carrier's (issue 8, item 4) ---------------------------------

DAEMON_MS = 1_800_000_000_000  # "now" on the daemon's clock
SKEWS_MS = [-3_600_000, -360_000, 0, 3_600_000]  # an hour behind, a delayed retry, ahead


@pytest.mark.parametrize("skew", SKEWS_MS)
def test_answer_and_end_times_are_the_daemons_clock(skew: int) -> None:
    r = apply(fresh(), CallAnswered(id="a", timestamp=DAEMON_MS + skew), at=DAEMON_MS)
    assert r.answered_at == DAEMON_MS
    assert r.metadata["carrierAnsweredAt"] == DAEMON_MS + skew  # kept, for diagnostics
    r = apply(r, CallSpeech(id="s", text="hello", timestamp=DAEMON_MS + skew),
              at=DAEMON_MS + 500)
    assert [e.timestamp for e in r.transcript] == [DAEMON_MS + 500]
    r = apply(r, CallEnded(id="e", reason="completed", timestamp=DAEMON_MS + skew),
              at=DAEMON_MS + 900)
    assert (r.ended_at, r.metadata["carrierEndedAt"]) == (DAEMON_MS + 900, DAEMON_MS + skew)


def test_a_callee_heard_before_any_answer_is_answered_on_the_daemons_clock() -> None:
    r = apply(fresh(), CallSpeech(id="s", text="hi", timestamp=DAEMON_MS - 360_000),
              at=DAEMON_MS)
    assert r.answered_at == DAEMON_MS and r.transcript[0].timestamp == DAEMON_MS


def test_the_pure_core_has_no_clock_and_makes_no_ids() -> None:
    """The time and the call id always come from the caller (the supervisor's clock and id
    source): ``model`` reads no clock and makes no id, so nothing can fall back to one."""
    import inspect

    for needs_time in (apply, model.end_record):
        assert inspect.signature(needs_time).parameters["at"].default is inspect.Parameter.empty
    params = inspect.signature(new_record).parameters
    assert params["at"].default is params["call_id"].default is inspect.Parameter.empty
    source = inspect.getsource(model)
    assert "import time" not in source and "import uuid" not in source


@pytest.mark.parametrize("carrier_ms", [-1, 0, 253_402_300_800_000, 2**63 - 1])
def test_absurd_carrier_timestamps_are_not_recorded(carrier_ms: int) -> None:
    r = apply(fresh(), CallAnswered(id="a", timestamp=carrier_ms), at=DAEMON_MS)
    assert r.answered_at == DAEMON_MS and "carrierAnsweredAt" not in r.metadata
    r = apply(r, CallEnded(id="e", reason="completed", timestamp=carrier_ms), at=DAEMON_MS)
    assert r.ended_at == DAEMON_MS and "carrierEndedAt" not in r.metadata


def test_carrier_times_stay_two_keys_however_many_events() -> None:
    r = apply(fresh(), CallAnswered(id="a", timestamp=DAEMON_MS - 1), at=DAEMON_MS)
    for i in range(50):
        r = apply(r, CallSpeech(id=f"s{i}", text="x", timestamp=DAEMON_MS + i), at=DAEMON_MS)
        r = apply(r, CallAnswered(id=f"a{i}", timestamp=DAEMON_MS + i), at=DAEMON_MS)
    assert r.metadata["carrierAnsweredAt"] == DAEMON_MS - 1  # the first answer only
    assert [k for k in r.metadata if k.startswith("carrier")] == ["carrierAnsweredAt"]


def test_the_callers_times_are_the_records_times() -> None:
    r = new_record(provider="mock", direction="outbound", from_="+15550001111",
                   to="+15550002222", call_id="c1", at=DAEMON_MS)
    r = apply(r, CallAnswered(id="a"), DAEMON_MS + 1)
    r = model.end_record(r, "timeout", DAEMON_MS + 2)
    assert (r.started_at, r.answered_at, r.ended_at) == (DAEMON_MS, DAEMON_MS + 1, DAEMON_MS + 2)


# -- text in a record is valid Unicode (issue 8, item 5) -------------------------------------

def test_lone_surrogates_never_reach_a_record() -> None:
    r = apply(fresh(), CallAnswered(id="a"), at=DAEMON_MS)
    r = apply(r, CallSpeaking(id="b", text="bot \ud83d"), at=DAEMON_MS)
    r = apply(r, CallSpeech(id="u", text="user \udc00!"), at=DAEMON_MS)
    r = apply(r, CallDtmf(id="d", digits="1\ud800"), at=DAEMON_MS)
    r = apply(r, CallError(id="e", error="oops \udfff", retryable=True), at=DAEMON_MS)
    assert [e.text for e in r.transcript] == ["bot \ufffd", "user \ufffd!"]
    assert (r.metadata["dtmf"], r.metadata["lastError"]) == ("1\ufffd", "oops \ufffd")
    msgspec.json.encode(r).decode("utf-8")  # journaling it cannot fail


def test_dtmf_metadata_is_bounded() -> None:
    r = apply(fresh(), CallAnswered(id="a"), at=DAEMON_MS)
    for i in range(100):
        r = apply(r, CallDtmf(id=f"d{i}", digits="0123456789"), at=DAEMON_MS)
    assert len(r.metadata["dtmf"]) == model.MAX_DTMF_CHARS
    assert r.metadata["dtmf"].endswith("0123456789")


# -- the table (issue 9, item 2) -------------------------------------------------------------

def test_the_end_reasons_are_the_terminal_states_defined_once() -> None:
    from typing import get_args

    from voicecall_trio.events import END_REASONS, EndReason
    from voicecall_trio.states import TERMINAL_STATE_NAMES

    assert set(get_args(EndReason)) == TERMINAL_STATE_NAMES == END_REASONS
    assert {s.value for s in model.TERMINAL_STATES} == TERMINAL_STATE_NAMES


@pytest.mark.parametrize("state", [s for s in CallState if not s.terminal])
def test_every_move_in_the_table_is_one_apply_makes(state: CallState) -> None:
    start = msgspec.structs.replace(fresh(), state=state, answered_at=900)
    for kind, target in model.EVENT_TRANSITIONS[state].items():
        event = kind(id="x", text="hi") if kind in (CallSpeaking, CallSpeech) else kind(id="x")
        assert apply(start, event, at=1100).state is target, (state, kind)


def test_spoken_counts_the_utterances_that_changed_the_record() -> None:
    r = apply(fresh(), CallAnswered(id="a"), at=1100)
    r = apply(r, CallSpeaking(id="s1", text="Hello"), at=1200)
    r = apply(r, CallSpoken(id="d1"), at=1300)
    assert r.spoken == 1
    assert apply(r, CallSpoken(id="d1"), at=1400).spoken == 1  # a redelivery
    assert apply(r, CallSpoken(id="d2"), at=1400) is r  # listening already: nothing changes
    r = apply(apply(r, CallSpeaking(id="s2", text="Bye"), at=1500), CallSpoken(id="d3"), at=1600)
    assert r.spoken == 2 and "spoken" not in model.record_to_builtins(r)


# -- rule 7: late confirmations, and whether a call was answered ------------------------------

_S = CallState


@pytest.mark.parametrize(("state", "event", "late"), [
    # call.speak.started confirms the speaking state the supervisor set before asking
    (_S.SPEAKING, CallSpeaking(id="s", text="hi"), False),
    (_S.LISTENING, CallSpeaking(id="s", text="hi"), True),  # after call.speak.ended
    (_S.ACTIVE, CallSpeaking(id="s", text="hi"), True),
    (_S.ANSWERED, CallSpeaking(id="s", text="hi"), True),
    (_S.INITIATED, CallSpeaking(id="s", text="hi"), True),
    (_S.COMPLETED, CallSpeaking(id="s", text="hi"), True),
    # nothing else is a confirmation: never late, whatever the state
    (_S.LISTENING, CallSpoken(id="d"), False),
    (_S.SPEAKING, CallSpoken(id="d"), False),
    (_S.LISTENING, CallSpeech(id="t", text="yes"), False),
    (_S.RINGING, CallAnswered(id="a"), False),
    (_S.ACTIVE, CallEnded(id="e", reason="hangup-user"), False),
])
def test_a_confirmation_is_late_once_the_call_left_its_state(
        state: CallState, event: CallEvent, late: bool) -> None:
    record = msgspec.structs.replace(fresh(), state=state)
    assert model.is_late_confirmation(record, event) is late


def test_every_confirmation_names_a_live_state_its_event_moves_to() -> None:
    for kind, state in model.CONFIRMATIONS.items():
        assert not state.terminal
        assert any(row.get(kind) is state for row in model.EVENT_TRANSITIONS.values())


@pytest.mark.parametrize(("state", "answered_at", "answered"), [
    (_S.INITIATED, None, False),
    (_S.RINGING, None, False),
    (_S.ANSWERED, None, True),
    (_S.ACTIVE, None, True),
    (_S.SPEAKING, None, True),
    (_S.LISTENING, None, True),
    (_S.RINGING, 900, True),  # an answer time was recorded
    (_S.NO_ANSWER, None, False),
    (_S.COMPLETED, 900, True),
])
def test_was_answered(state: CallState, answered_at: int | None, answered: bool) -> None:
    record = msgspec.structs.replace(fresh(), state=state, answered_at=answered_at)
    assert model.was_answered(record) is answered


def test_a_barge_in_marks_the_playing_bot_line_and_keeps_its_text() -> None:
    from voicecall_trio.events import CallInterrupted
    from voicecall_trio.journal_lines import encode_record

    r = apply(fresh(), CallAnswered(id="a"), at=2000)
    r = apply(r, CallSpeaking(id="bot:1", text="Our opening hours are nine to five."), at=3000)
    assert r.state is CallState.SPEAKING and r.metadata["lastUtterance"] == "bot:1"
    plain_line = encode_record(r)
    assert b"interrupted" not in plain_line and b"heardMs" not in plain_line
    cut = apply(r, CallInterrupted(id="bot:1:cut", utterance="bot:1", heard_ms=740), at=4000)
    (line,) = cut.transcript
    assert line.text == "Our opening hours are nine to five."
    assert line.interrupted is True and line.heard_ms == 740
    assert cut.state is CallState.LISTENING
    assert b'"interrupted":true' in encode_record(cut) and b'"heardMs":740' in encode_record(cut)
    # a late report about an older line marks nothing new
    again = apply(cut, CallSpeaking(id="bot:2", text="Anything else?"), at=5000)
    stale = apply(again, CallInterrupted(id="bot:1:cut2", utterance="bot:1", heard_ms=5), at=6000)
    assert stale.transcript[-1].interrupted is msgspec.UNSET
    assert decode_event(encode_event(CallInterrupted(id="x", utterance="u", heard_ms=3))) == \
        CallInterrupted(id="x", utterance="u", heard_ms=3)
