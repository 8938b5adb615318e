"""The SSE parser (pure): the vectors' exact bytes, split anywhere, and hostile streams."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voicecall_trio.agent.sse import SseEvent, SseParser
from voicecall_trio.errors import ChatStreamError

VECTORS = Path(__file__).resolve().parents[3] / "shared" / "vectors"
CHAT = json.loads((VECTORS / "openai_chat_stream.json").read_text())


def parse(*chunks: bytes) -> list[SseEvent]:
    parser = SseParser()
    return [event for chunk in chunks for event in parser.feed(chunk)]


@pytest.mark.parametrize("name", ["text_stream", "tool_call_stream"])
def test_the_vectors_decode_to_their_chunks_and_done(name: str) -> None:
    stream = CHAT[name]
    events = parse(stream["sse_raw"].encode())
    assert [json.loads(e.data) for e in events[:-1]] == stream["chunks"]
    assert events[-1].data == "[DONE]"


@given(st.lists(st.integers(min_value=0, max_value=4000), max_size=20))
def test_chunk_boundaries_mean_nothing(cuts: list[int]) -> None:
    raw = CHAT["text_stream"]["sse_raw"].encode()
    points = sorted({min(c, len(raw)) for c in cuts})
    pieces = [raw[a:b] for a, b in zip([0, *points], [*points, len(raw)], strict=True)]
    assert parse(*pieces) == parse(raw)


def test_line_endings_comments_fields_and_bom() -> None:
    raw = (b"\xef\xbb\xbf: keep-alive\r\n\r\nevent: update\r\nid: 7\r\ndata: one\r\n"
           b"data:two\r\nretry: 10\r\nunknown: x\r\n\r\ndata: cr\r\rdata: lf\n\n")
    assert parse(raw) == [SseEvent("one\ntwo", "update", "7"), SseEvent("cr", "message", "7"),
                          SseEvent("lf", "message", "7")]
    # a CRLF split between two reads is one line end, and the BOM split too
    assert parse(b"\xef\xbb", b"\xbfdata: a\r", b"\n\r", b"\n") == [SseEvent("a")]


def test_an_empty_data_block_dispatches_nothing_and_pending_shows_a_cut() -> None:
    parser = SseParser()
    assert parser.feed(b"event: x\n\n") == []
    assert parser.feed(b"data: half") == [] and parser.pending
    assert parser.feed(b"\n") == [] and parser.pending  # a data line, no blank line yet
    assert parser.feed(b"\n") == [SseEvent("half")] and not parser.pending


def test_bounded_lines_and_events() -> None:
    parser = SseParser(max_event_bytes=100)
    with pytest.raises(ChatStreamError, match="over 100 bytes"):
        parser.feed(b"data: " + b"x" * 200)
    parser = SseParser(max_event_bytes=100)
    with pytest.raises(ChatStreamError):
        for _ in range(20):
            parser.feed(b"data: " + b"y" * 10 + b"\n")


def test_invalid_utf8_is_replaced_not_raised() -> None:
    assert parse(b"data: \xff\xfe ok\n\n") == [SseEvent("\ufffd\ufffd ok")]


@given(st.lists(st.binary(max_size=200), max_size=20))
def test_any_bytes_parse_or_are_a_stream_error(chunks: list[bytes]) -> None:
    parser = SseParser(max_event_bytes=500)
    try:
        for chunk in chunks:
            for event in parser.feed(chunk):
                assert isinstance(event.data, str)
    except ChatStreamError:
        pass
