"""The Realtime transcription codec (``stt/realtime.py``, ``stt/order.py``) against the vector.

Pure: messages in, values out. The vector's shapes were checked against the openai SDK's own
types; finals released in committed order are checked on random interleavings (hypothesis).
"""

from __future__ import annotations

import base64
import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voicecall_trio.stt import realtime
from voicecall_trio.stt.order import MAX_WAITING, CommitOrder
from voicecall_trio.stt.realtime import (
    Final,
    Interim,
    RealtimeDecoder,
    SpeechStarted,
    SpeechStopped,
    SttFailure,
    append,
    decode_event,
    session_update,
    transcription_url,
)

VECTORS = Path(__file__).resolve().parents[3] / "shared" / "vectors"
VECTOR = json.loads((VECTORS / "openai_realtime_transcription.json").read_text())


def _without_include(message: dict[str, Any]) -> dict[str, Any]:
    """The vector asks for logprobs; we do not use them."""
    message = copy.deepcopy(message)
    del message["session"]["include"]
    return message


def test_session_update_ga_matches_the_vector() -> None:
    ours = json.loads(session_update("gpt-4o-transcribe", 0.5, 500, language="en", prompt="",
                                     noise_reduction="near_field"))
    assert ours == _without_include(VECTOR["client_events"]["session_update_ga"])


def test_session_update_beta_matches_the_vector() -> None:
    ours = json.loads(session_update("gpt-4o-transcribe", 0.5, 500, language="en", prompt="",
                                     noise_reduction="near_field", beta=True))
    assert ours == _without_include(
        VECTOR["client_events"]["transcription_session_update_beta"])


def test_session_update_defaults_send_no_language_and_keep_the_prefix_padding() -> None:
    ours = json.loads(session_update("gpt-4o-mini-transcribe", 0.7, 800))
    audio_input = ours["session"]["audio"]["input"]
    assert ours["type"] == "session.update"
    assert ours["session"]["type"] == "transcription"
    assert audio_input == {
        "format": {"type": "audio/pcmu"},
        "transcription": {"model": "gpt-4o-mini-transcribe"},
        "turn_detection": {"type": "server_vad", "threshold": 0.7, "prefix_padding_ms": 300,
                           "silence_duration_ms": 800},
    }


def test_append_matches_the_vector_and_carries_the_bytes_untouched() -> None:
    expected = VECTOR["client_events"]["input_audio_buffer_append"]
    ulaw = base64.b64decode(expected["audio"])
    assert json.loads(append(ulaw)) == expected
    every_byte = bytes(range(256)) * 3
    assert base64.b64decode(json.loads(append(every_byte))["audio"]) == every_byte
    assert json.loads(append(b"")) == {"type": "input_audio_buffer.append", "audio": ""}


@pytest.mark.parametrize(("url", "expected"), [
    ("wss://api.openai.com/v1/realtime", "wss://api.openai.com/v1/realtime?intent=transcription"),
    ("ws://127.0.0.1:9/v1/realtime?x=1", "ws://127.0.0.1:9/v1/realtime?x=1&intent=transcription"),
    ("wss://h/v1/realtime?intent=transcription", "wss://h/v1/realtime?intent=transcription"),
    ("wss://h/v1/realtime?intent=other", "wss://h/v1/realtime?intent=other"),
])
def test_the_url_gets_the_transcription_intent_once(url: str, expected: str) -> None:
    assert transcription_url(url) == expected
    assert transcription_url(VECTOR["connection"]["url"]) == VECTOR["connection"]["url"]


def test_the_vectors_server_events_become_stt_events() -> None:
    decoder = RealtimeDecoder()
    out = [decoder.receive(json.dumps(event)) for event in VECTOR["server_events"]]
    assert out == [
        [SpeechStarted("item_1", 1200)],
        [SpeechStopped("item_1", 3400)],
        [],  # committed: the order of finals, nothing to say yet
        [Interim("item_1", "Hello,")],
        [Interim("item_1", "Hello, I would like to book a table for two.")],
        [Final("item_1", "Hello, I would like to book a table for two.")],
        [SttFailure("server error: invalid_request_error invalid_value: Invalid value: "
                    "'g711'. (param session.audio.input.format.type)")],
    ]
    assert (decoder.ignored, decoder.malformed) == (0, 0)


def test_bytes_decode_like_text() -> None:
    event = VECTOR["server_events"][0]
    assert RealtimeDecoder().receive(json.dumps(event).encode()) == [
        SpeechStarted("item_1", 1200)]


@pytest.mark.parametrize("message", [
    '{"type":"session.created","session":{"type":"transcription"}}',
    '{"type":"session.updated"}',
    '{"type":"conversation.item.added","item":{"id":"item_1"}}',
    '{"type":"rate_limits.updated","rate_limits":[]}',
    '{"type":"something.new","payload":[1,2,3]}',
])
def test_unknown_types_are_ignored(message: str) -> None:
    decoder = RealtimeDecoder()
    assert decoder.receive(message) == []
    assert (decoder.ignored, decoder.malformed) == (1, 0)


@pytest.mark.parametrize("message", [
    '{"type":"input_audio_buffer.speech_started"}',
    '{"type":"input_audio_buffer.speech_started","item_id":"a","audio_start_ms":-1}',
    '{"type":"input_audio_buffer.speech_started","item_id":"a","audio_start_ms":"12"}',
    '{"type":"input_audio_buffer.speech_started","item_id":"a","audio_start_ms":1.5}',
    '{"type":"input_audio_buffer.committed","item_id":7}',
    '{"type":"conversation.item.input_audio_transcription.delta","item_id":"a","delta":5}',
    '{"type":"conversation.item.input_audio_transcription.completed","item_id":"a"}',
    '{"type":"error"}',
    '{"type":"error","error":"boom"}',
    '{"type":"input_audio_buffer.committed","item_id":"' + "x" * 300 + '"}',
])
def test_malformed_known_types_decode_to_nothing(message: str) -> None:
    assert decode_event(message) is None
    decoder = RealtimeDecoder()
    assert decoder.receive(message) == []
    assert (decoder.ignored, decoder.malformed) == (0, 1)


@pytest.mark.parametrize("message", [
    "", "not json", "[]", "null", "42", '"error"', '{"type":null}', "{", '{"type":"error"',
    b"\xff\xfe\x00", b'{"type":"error","error":{"message":"\xff"}}', "\ud800",
    '{"type":"error","error":{"message":' + "[" * 5000 + "]" * 5000 + "}}",
])
def test_garbage_never_raises(message: str | bytes) -> None:
    assert decode_event(message) is None
    assert RealtimeDecoder().receive(message) == []


def test_a_failure_text_is_bounded_and_has_no_control_characters() -> None:
    message = json.dumps({"type": "error", "error": {
        "message": "line one\nFAKE LOG LINE\r\x1b[31m" + "x" * 5000, "code": "c"}})
    (failure,) = RealtimeDecoder().receive(message)
    assert isinstance(failure, SttFailure)
    assert len(failure.message) <= realtime.MAX_FAILURE_CHARS
    assert not any(ord(ch) < 32 for ch in failure.message)


def _ev(kind: str, item: str, **fields: Any) -> str:
    names = {
        "committed": "input_audio_buffer.committed",
        "delta": "conversation.item.input_audio_transcription.delta",
        "completed": "conversation.item.input_audio_transcription.completed",
        "failed": "conversation.item.input_audio_transcription.failed",
    }
    return json.dumps({"type": names[kind], "item_id": item, **fields})


def _finals(decoder: RealtimeDecoder, *messages: str) -> list[tuple[str, str]]:
    out = []
    for message in messages:
        out += [(e.item_id, e.text) for e in decoder.receive(message) if isinstance(e, Final)]
    return out


def test_a_completed_turn_waits_for_the_one_committed_before_it() -> None:
    d = RealtimeDecoder()
    assert _finals(d, _ev("committed", "a", previous_item_id=None),
                   _ev("committed", "b", previous_item_id="a"),
                   _ev("completed", "b", transcript="second")) == []
    assert _finals(d, _ev("completed", "a", transcript="first")) == [
        ("a", "first"), ("b", "second")]


def test_previous_item_id_orders_even_commits_that_arrive_late() -> None:
    d = RealtimeDecoder()
    got = _finals(d, _ev("committed", "a", previous_item_id=None),
                  _ev("committed", "c", previous_item_id="a"),
                  _ev("committed", "b", previous_item_id="a"),  # b sits between a and c
                  _ev("completed", "c", transcript="C"), _ev("completed", "b", transcript="B"),
                  _ev("completed", "a", transcript="A"))
    assert got == [("a", "A"), ("b", "B"), ("c", "C")]


def test_a_turn_that_never_completes_is_skipped_after_a_few_later_ones() -> None:
    d = RealtimeDecoder()
    prev = None
    for item in "abcd":
        d.receive(_ev("committed", item, previous_item_id=prev))
        prev = item
    assert _finals(d, _ev("completed", "b", transcript="B"),
                   _ev("completed", "c", transcript="C")) == []
    assert _finals(d, _ev("completed", "d", transcript="D")) == [
        ("b", "B"), ("c", "C"), ("d", "D")]
    assert d.skipped == 1
    # the skipped turn completes after all: late, but not lost; only once
    assert _finals(d, _ev("completed", "a", transcript="A")) == [("a", "A")]
    assert _finals(d, _ev("completed", "a", transcript="A")) == []


def test_a_failed_turn_lets_the_next_go_and_is_reported() -> None:
    d = RealtimeDecoder()
    d.receive(_ev("committed", "a"))
    d.receive(_ev("committed", "b", previous_item_id="a"))
    assert _finals(d, _ev("completed", "b", transcript="B")) == []
    out = d.receive(_ev("failed", "a", error={"message": "audio unclear", "code": "x"}))
    assert out == [SttFailure("transcription failed for a: x: audio unclear"),
                   Final("b", "B")]


def test_duplicates_and_late_deltas_change_nothing() -> None:
    d = RealtimeDecoder()
    d.receive(_ev("committed", "a"))
    assert d.receive(_ev("completed", "a", transcript="A")) == [Final("a", "A")]
    assert d.receive(_ev("completed", "a", transcript="A")) == []
    assert d.receive(_ev("committed", "a")) == []
    assert d.receive(_ev("delta", "a", delta="late")) == []


def test_a_completion_never_committed_comes_after_those_waiting() -> None:
    d = RealtimeDecoder()
    d.receive(_ev("committed", "a"))
    assert _finals(d, _ev("completed", "x", transcript="X")) == []
    assert _finals(d, _ev("completed", "a", transcript="A")) == [("a", "A"), ("x", "X")]


def test_an_empty_transcript_is_no_final_but_releases_the_next() -> None:
    d = RealtimeDecoder()
    d.receive(_ev("committed", "a"))
    d.receive(_ev("committed", "b", previous_item_id="a"))
    d.receive(_ev("completed", "b", transcript="B"))
    assert _finals(d, _ev("completed", "a", transcript="  ")) == [("b", "B")]


def test_deltas_join_into_interims_and_are_bounded() -> None:
    d = RealtimeDecoder()
    assert d.receive(_ev("delta", "a", delta="Hel")) == [Interim("a", "Hel")]
    assert d.receive(_ev("delta", "a", delta="")) == []
    assert d.receive(_ev("delta", "a", delta="lo")) == [Interim("a", "Hello")]
    (big,) = d.receive(_ev("delta", "a", delta="x" * 20000))
    assert isinstance(big, Interim) and len(big.text) == realtime.MAX_TEXT_CHARS
    assert d.receive(_ev("delta", "a", delta="more")) == []
    for n in range(100):  # many items with interims: only the newest are tracked
        d.receive(_ev("delta", f"i{n}", delta="w"))
    assert len(d._interim) <= realtime.MAX_INTERIM_ITEMS
    (final,) = d.receive(_ev("completed", "z", transcript="y" * 20000))
    assert isinstance(final, Final) and len(final.text) == realtime.MAX_TEXT_CHARS


def test_waiting_turns_are_bounded() -> None:
    order = CommitOrder()
    prev = None
    for n in range(10 * MAX_WAITING):
        order.committed(f"i{n}", prev)
        prev = f"i{n}"
        assert order.waiting <= MAX_WAITING
    assert len(order._skipped) <= 64 and len(order._released) <= 64


def test_a_new_session_releases_what_completed_and_forgets_the_rest() -> None:
    d = RealtimeDecoder()
    d.receive(_ev("committed", "a"))
    d.receive(_ev("committed", "b", previous_item_id="a"))
    d.receive(_ev("completed", "b", transcript="B"))
    d.receive(_ev("delta", "a", delta="partial"))
    assert d.new_session() == [Final("b", "B")]
    # the new session's first turn has no predecessor and is not held behind "a"
    d.receive(_ev("committed", "n1"))
    assert _finals(d, _ev("completed", "n1", transcript="N")) == [("n1", "N")]


@st.composite
def _interleavings(draw: st.DrawFn) -> tuple[int, list[tuple[str, int]]]:
    """Commits in order; each turn's deltas and completion anywhere after its commit."""
    n = draw(st.integers(1, 8))
    steps: list[tuple[str, int]] = []
    waiting: list[tuple[str, int]] = []  # events not yet placed, each after its commit
    for item in range(n):
        steps.append(("committed", item))
        waiting += [("delta", item)] * draw(st.integers(0, 3)) + [("completed", item)]
        take = draw(st.integers(0, len(waiting)))
        for _ in range(take):
            steps.append(waiting.pop(draw(st.integers(0, len(waiting) - 1))))
    while waiting:
        # a turn's deltas may come after its completion (and are then ignored)
        steps.append(waiting.pop(draw(st.integers(0, len(waiting) - 1))))
    return n, steps


def _run(skip_after: int, n: int, steps: list[tuple[str, int]]) -> list[str]:
    d = RealtimeDecoder(skip_after=skip_after)
    out: list[str] = []
    for kind, item in steps:
        name = f"item_{item}"
        if kind == "committed":
            message = _ev(kind, name, previous_item_id=f"item_{item - 1}" if item else None)
        elif kind == "delta":
            message = _ev(kind, name, delta=f"w{item} ")
        else:
            message = _ev(kind, name, transcript=f"text {item}")
        for event in d.receive(message):
            if isinstance(event, Final):
                assert event.text == f"text {event.item_id.split('_')[1]}"
                out.append(event.item_id)
    return out


@settings(max_examples=300, deadline=None)
@given(_interleavings())
def test_finals_come_in_committed_order_whatever_the_interleaving(
        case: tuple[int, list[tuple[str, int]]]) -> None:
    n, steps = case
    assert _run(skip_after=n + 1, n=n, steps=steps) == [f"item_{i}" for i in range(n)]


@settings(max_examples=300, deadline=None)
@given(_interleavings())
def test_with_the_default_bound_every_final_comes_once_and_waits_its_turn(
        case: tuple[int, list[tuple[str, int]]]) -> None:
    n, steps = case
    out = _run(skip_after=3, n=n, steps=steps)
    assert sorted(out) == sorted(f"item_{i}" for i in range(n))  # each exactly once
    # an item released out of order is one that was skipped: 3 later ones completed first
    completed_at = {item: i for i, (kind, item) in enumerate(steps) if kind == "completed"}
    for pos, name in enumerate(out):
        item = int(name.split("_")[1])
        later_first = [o for o in out[:pos] if int(o.split("_")[1]) > item]
        if later_first:
            earlier_done = sum(1 for other, at in completed_at.items()
                               if other > item and at < completed_at[item])
            assert earlier_done >= 3


def test_the_codec_imports_no_trio() -> None:
    code = ("import sys, voicecall_trio.stt.realtime, voicecall_trio.stt.order; "
            "heavy = {'trio', 'trio_websocket', 'httpx', 'quart'} & set(sys.modules); "
            "sys.exit(str(sorted(heavy)) if heavy else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                  max_size=4),
    max_leaves=12)
_field_names = st.sampled_from(["item_id", "previous_item_id", "audio_start_ms",
                                "audio_end_ms", "delta", "transcript", "error", "message"])


@settings(max_examples=500, deadline=None)
@given(st.sampled_from([*sorted(realtime.KNOWN_TYPES), "other"]),
       st.dictionaries(_field_names, _json | st.text(max_size=300), max_size=6),
       st.lists(st.integers(0, 6), max_size=3))
def test_hostile_events_of_every_type_never_raise(
        kind: str, fields: dict[str, Any], cuts: list[int]) -> None:
    decoder = RealtimeDecoder()
    message = json.dumps({"type": kind, **fields})
    for event in decoder.receive(message):
        assert isinstance(event, SpeechStarted | SpeechStopped | Interim | Final | SttFailure)
    for cut in cuts:  # a message cut short is no JSON at all
        assert decoder.receive(message[: len(message) * cut // 7]) == []
