"""Fuzzing the journal replay and its index: hostile and near-miss bytes in ``calls.jsonl``.

A journal can hold anything a crash, a full disk or a hand edit leaves: torn lines, garbage,
huge lines, wrong types, invalid UTF-8, many snapshots of one call. Replay must never raise,
must take the last readable line per ``callId``, must report a torn tail, and its index must
point at exactly that line (in ``calls.jsonl`` or a rotated file). Lines are generated with
their kind known, so the expected outcome comes from the generator, not from a second parser.

"Readable" is the replay's own rule: a line whose head (``callId`` and ``state`` strings)
decodes. A head-readable line that is not a whole record still wins for its call (it is the
newest thing known); a live call whose winning line cannot be decoded is reported as bad, an
ended one is simply not found on lookup.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import msgspec
import trio
from hypothesis import given
from hypothesis import strategies as st

from voicecall_trio.journal import Journal
from voicecall_trio.journal_lines import encode_record
from voicecall_trio.model import CallRecord, CallState, TranscriptEntry, new_record
from voicecall_trio.replay import replay_bytes, replay_file

CALL_IDS = ["a", "b", "c", "d-\u00e9", "e-\U0001f600"]
PROVIDER_IDS = [None, "CA1", "CA2", "v3:x"]


@dataclass(frozen=True)
class Line:
    data: bytes  # without the newline
    call_id: str | None  # the call it counts for (head-readable), or None (skipped/bad)
    terminal: bool = False
    record: CallRecord | None = None  # set when the line is a whole record
    provider_call_id: str | None = None


@st.composite
def records(draw: st.DrawFn) -> CallRecord:
    state = draw(st.sampled_from(list(CallState)))
    texts = draw(st.lists(st.text(max_size=40), max_size=3))
    huge = draw(st.booleans()) and draw(st.integers(0, 9)) == 0
    if huge:
        texts.append("x" * draw(st.integers(70_000, 140_000)))  # longer than one read
    record = new_record(provider="mock", direction=draw(st.sampled_from(["inbound",
                                                                         "outbound"])),
                        from_="+15550001111", to="+15550002222",
                        call_id=draw(st.sampled_from(CALL_IDS)),
                        provider_call_id=draw(st.sampled_from(PROVIDER_IDS)),
                        at=draw(st.integers(0, 2**41)))
    transcript = tuple(TranscriptEntry(n, draw(st.sampled_from(["bot", "user"])), text)
                       for n, text in enumerate(texts))
    return msgspec.structs.replace(record, state=state, transcript=transcript,
                                   metadata={"n": draw(st.integers(-(2**63), 2**63 - 1))})


def whole(record: CallRecord) -> Line:
    return Line(encode_record(record)[:-1], record.call_id, record.state.terminal, record,
                record.provider_call_id)


@st.composite
def lines(draw: st.DrawFn) -> Line:
    kind = draw(st.sampled_from(["valid", "valid", "valid", "truncated", "garbage",
                                 "wrong-type", "bad-utf8", "blank", "head-only"]))
    if kind == "valid":
        return whole(draw(records()))
    if kind == "truncated":
        data = encode_record(draw(records()))[:-1]
        return Line(data[: draw(st.integers(1, len(data) - 1))], None)
    if kind == "garbage":
        noise = draw(st.binary(max_size=200)).replace(b"\n", b"")
        return Line(b"#" + noise, None)
    if kind == "wrong-type":
        value = draw(st.sampled_from([b"3", b"null", b"[]", b"{}", b"true", b"1e999"]))
        field = draw(st.sampled_from([b'"callId":%s,"state":"answered"',
                                      b'"callId":"a","state":%s']))
        return Line(b"{" + field % value + b"}", None)
    if kind == "bad-utf8":
        data = encode_record(draw(records()))[:-1]
        cut = data.index(b'"callId":"') + len(b'"callId":"')
        return Line(data[:cut] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80"]))
                    + data[cut:], None)
    if kind == "blank":
        return Line(draw(st.sampled_from([b"", b" ", b"\t ", b"\r"])), None)
    call_id = draw(st.sampled_from(CALL_IDS))
    state = draw(st.sampled_from(["completed", "answered", "no-such-state"]))
    data = msgspec.json.encode({"callId": call_id, "state": state})
    return Line(data, call_id, state in {s.value for s in CallState if s.terminal})


def expected_winners(journal: list[Line]) -> dict[str, Line]:
    winners: dict[str, Line] = {}
    for line in journal:
        if line.call_id is not None:
            winners[line.call_id] = line
    return winners


def join(journal: list[Line], trailing_newline: bool) -> bytes:
    data = b"\n".join(line.data for line in journal)
    return data + b"\n" if journal and trailing_newline else data


@given(st.binary(max_size=4096))
def test_replay_of_arbitrary_bytes_never_raises(data: bytes) -> None:
    result = replay_bytes(data)
    for call_id, record in result.live.items():
        where = result.index.locate(call_id)
        assert where is not None and where[0] == 0
        assert record.call_id == call_id and not record.terminal
    assert all(1 <= n <= max(result.lines, 1) for n in result.bad_lines)
    result.describe_bad()


@given(st.lists(lines(), max_size=25), st.booleans())
def test_the_last_readable_line_per_call_wins_and_the_index_points_at_it(
        journal: list[Line], trailing_newline: bool) -> None:
    data = join(journal, trailing_newline)
    result = replay_bytes(data)
    winners = expected_winners(journal)
    assert len(result.index) == len(winners)
    for call_id, line in winners.items():
        where = result.index.locate(call_id)
        assert where is not None and where[0] == 0
        assert data[where[1]:].split(b"\n", 1)[0] == line.data
        if line.provider_call_id:
            owner = result.index.call_for_provider(line.provider_call_id)
            assert owner is not None  # the last call seen with it
        if line.terminal:
            assert call_id not in result.live
        elif line.record is not None:
            assert result.live[call_id] == line.record
        else:
            assert call_id not in result.live
    assert set(result.live) == {cid for cid, line in winners.items()
                                if not line.terminal and line.record is not None}
    last_number = {line.call_id: n for n, line in enumerate(journal, 1) if line.call_id}
    bad = {n for n, line in enumerate(journal, 1) if line.call_id is None and line.data.strip()}
    bad |= {last_number[cid] for cid, line in winners.items()
            if not line.terminal and line.record is None}
    assert set(result.bad_lines) == bad
    last = journal[-1] if journal else None
    torn = (last is not None and not trailing_newline and last.call_id is None
            and bool(last.data.strip()))
    assert result.torn_tail is torn


@given(st.lists(lines(), max_size=12), st.lists(lines(), max_size=12), st.booleans())
def test_rotated_files_replay_oldest_first_and_the_writer_appends_after_any_tail(
        older: list[Line], current: list[Line], trailing_newline: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="vcfz") as tmp:
        path = Path(tmp) / "calls.jsonl"
        path.with_name("calls.jsonl.1").write_bytes(join(older, True))
        path.write_bytes(join(current, trailing_newline))
        result = replay_file(path, keep_files=3)
        winners = expected_winners(older + current)
        assert len(result.index) == len(winners)
        journal = Journal(path, keep_files=3, index=result.index, fsync=False)
        for call_id, line in winners.items():
            if line.record is not None:
                assert journal.lookup_sync(call_id) == line.record
            else:
                assert journal.lookup_sync(call_id) is None
        assert set(result.live) == {cid for cid, line in winners.items()
                                    if not line.terminal and line.record is not None}

        fresh = new_record(provider="mock", direction="outbound", from_="+1", to="+2",
                           call_id="fresh", provider_call_id="CA-fresh", at=1)

        async def append() -> None:
            with trio.fail_after(10):
                async with trio.open_nursery() as nursery:
                    await nursery.start(journal.run)
                    await journal.append_durable(fresh)
                    await journal.close()
            journal.close_file()

        trio.run(append)
        assert journal.lookup_sync("fresh") == fresh
        again = replay_file(path, keep_files=3)
        assert again.live["fresh"] == fresh  # a torn tail never swallows the next record
        assert again.index.call_for_provider("CA-fresh") == "fresh"
        for call_id, line in winners.items():
            if line.record is not None and call_id != "fresh":
                assert Journal(path, keep_files=3, index=again.index).lookup_sync(
                    call_id) == line.record
