"""Journal reading for the CLI: turn-latency statistics (pure) and the ``tail`` follower.

The follower is driven by calling ``poll`` after each write: no sleeps, no threads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from voicecall_trio.cli import journal_stats as stats
from voicecall_trio.cli.journal import JournalFollower
from voicecall_trio.cli.render import journal_line


def record(call_id: str, *turns: tuple[str, float], **fields: Any) -> dict[str, Any]:
    transcript = [{"speaker": who, "timestamp": at, "text": "...", "isFinal": True}
                  for who, at in turns]
    return {"callId": call_id, "state": "active", "transcript": transcript, **fields}


def line(value: Any) -> bytes:
    return json.dumps(value).encode() + b"\n"


def test_latest_record_per_call_wins_and_junk_is_skipped() -> None:
    lines = [line(record("a")), b"{torn", line(record("b")), line([1, 2]), line({"no": "id"}),
             line("text"), b"\xff\xfe\n", line({"callId": ["unhashable"]}),
             line(record("a", state="completed")), "  " + line(record("c")).decode()]
    latest = stats.latest_records(lines)
    assert list(latest) == ["a", "b", "c"]
    assert latest["a"]["state"] == "completed"


def test_turn_gaps_are_user_then_bot_only_sorted() -> None:
    records = [
        record("a", ("bot", 0), ("user", 1000), ("bot", 1900), ("bot", 2500), ("user", 3000),
               ("user", 3100), ("bot", 3400)),
        record("b", ("user", 10), ("bot", 1210)),
        {"callId": "c", "transcript": None}, {"callId": "d"},
    ]
    assert stats.turn_gaps(records) == [300.0, 900.0, 1200.0]


@pytest.mark.parametrize(("values", "q", "expected"), [
    ([], 0.5, None), ([7.0], 0.99, 7.0), ([1.0, 2.0], 0.5, 2.0), ([1.0, 2.0, 3.0], 0.5, 2.0),
    ([float(i) for i in range(100)], 0.9, 90.0), ([float(i) for i in range(100)], 0.99, 99.0),
    ([float(i) for i in range(10)], 0.99, 9.0), ([1.0, 2.0], 1.0, 2.0),
])
def test_nearest_rank(values: list[float], q: float, expected: float | None) -> None:
    assert stats.nearest_rank(values, q) == expected


def test_summary_and_its_text() -> None:
    latest = {"a": record("a", ("user", 0), ("bot", 500)),
              "b": record("b", ("user", 0), ("bot", 100), ("user", 200), ("bot", 1200)),
              "c": record("c")}
    summary = stats.latency_summary(latest)
    assert summary == {"turns": 3, "calls": 3, "p50Ms": 500.0, "p90Ms": 1000.0,
                       "p99Ms": 1000.0, "maxMs": 1000.0}
    assert list(summary) == ["turns", "calls", "p50Ms", "p90Ms", "p99Ms", "maxMs"]
    assert stats.describe_summary(summary) == (
        "3 turns in 3 calls: p50 500.0 ms, p90 1000.0 ms, p99 1000.0 ms, max 1000.0 ms")
    empty = stats.latency_summary({})
    assert empty == {"turns": 0, "calls": 0, "p50Ms": None, "p90Ms": None, "p99Ms": None,
                     "maxMs": None}
    assert stats.describe_summary(empty) == "no turns recorded yet"


def test_read_latest_of_a_missing_file_is_no_calls(tmp_path: Path) -> None:
    assert stats.read_latest(str(tmp_path / "calls.jsonl")) == {}
    path = tmp_path / "calls.jsonl"
    path.write_bytes(line(record("a")) + line(record("a", state="completed")))
    assert stats.read_latest(str(path))["a"]["state"] == "completed"


def test_follower_starts_at_the_end_and_waits_for_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / "calls.jsonl"
    path.write_bytes(b'{"old": 1}\n')
    follower = JournalFollower(path)
    assert follower.poll() == []
    with open(path, "ab") as file:
        file.write(b'{"new": 1}\n\n{"half"')
    assert follower.poll() == [b'{"new": 1}']
    assert follower.poll() == []
    with open(path, "ab") as file:
        file.write(b': 2}\n')
    assert follower.poll() == [b'{"half": 2}']


def test_follower_survives_rotation_and_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "calls.jsonl"
    follower = JournalFollower(path)  # no file yet
    assert follower.poll() == []
    path.write_bytes(b'{"a": 1}\n{"b": 2}\n')
    assert follower.poll() == [b'{"a": 1}', b'{"b": 2}']
    path.rename(tmp_path / "calls.jsonl.1")
    assert follower.poll() == []
    path.write_bytes(b'{"c": 3}\n')  # shorter than before: rotated, read from the top
    assert follower.poll() == [b'{"c": 3}']


@pytest.mark.parametrize("line", [
    b"[" * 200_000, b'{"transcript": 5}', b'{"transcript": [5]}', b'"x"',
    b'{"startedAt": "x"}', b'{"startedAt": 1e400}', b'{"endedAt": -1e300}',
])
def test_tail_shows_a_hostile_line_as_unreadable(line: bytes) -> None:
    assert journal_line(line, False).startswith("(unreadable line)")
