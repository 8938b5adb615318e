"""Journal: group-commit writer, replay that survives torn and garbage lines, rotation."""

from __future__ import annotations

import errno
import os
import threading
import time
from pathlib import Path

import pytest
import trio
import trio.lowlevel
from rigs import FlakyDisk, RecordingDisk

from voicecall_trio.errors import JournalError
from voicecall_trio.events import CallAnswered, CallEnded
from voicecall_trio.journal import Journal
from voicecall_trio.journal_disk import Disk
from voicecall_trio.journal_lines import encode_record
from voicecall_trio.journal_tail import tail_lines
from voicecall_trio.model import CallRecord, apply, new_record
from voicecall_trio.replay import replay_bytes, replay_file


def rec(n: int = 0) -> CallRecord:
    return new_record(provider="mock", direction="outbound", from_="+15550001111",
                      to="+15550002222", call_id=f"call-{n}", provider_call_id=f"p{n}", at=1000)


def test_replay_takes_the_last_line_per_call_and_splits_live_from_ended() -> None:
    a, b = rec(1), rec(2)
    a2 = apply(a, CallAnswered(id="x"), at=int(time.time() * 1000))
    b2 = apply(b, CallEnded(id="y", reason="busy"), at=int(time.time() * 1000))
    data = b"".join(encode_record(r) for r in (a, b, a2, b2))
    result = replay_bytes(data)
    assert result.live == {"call-1": a2}
    assert "call-2" in result.index and result.ended == 1
    assert result.bad_lines == [] and not result.torn_tail and result.lines == 4


def test_replay_skips_garbage_and_a_torn_tail_and_reports_them() -> None:
    good = encode_record(rec(1))
    torn = encode_record(apply(rec(1), CallAnswered(id="x"), at=int(time.time() * 1000)))[:40]
    data = good + b"not json at all\n" + b'{"callId": 3}\n' + torn
    result = replay_bytes(data)
    assert result.live == {"call-1": rec(1)}  # the torn update is not applied
    assert result.bad_lines == [2, 3, 4] and result.torn_tail
    assert "torn" in result.describe_bad()


def test_replay_of_a_missing_file_is_empty(tmp_path: Path) -> None:
    assert replay_file(tmp_path / "none.jsonl").lines == 0


async def test_writer_appends_durably_in_order(tmp_path: Path) -> None:
    path = tmp_path / "calls.jsonl"
    journal = Journal(path)
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        for i in range(50):
            journal.append(rec(i))
        await journal.append_durable(rec(99))
        assert path.read_bytes().count(b"\n") == 51
        await journal.close()
    assert journal.batches < 51  # appends were batched into fewer writes
    assert [r.call_id for r in replay_file(path).live.values()][-1] == "call-99"


async def test_appends_after_the_writer_stopped_are_still_written(tmp_path: Path) -> None:
    path = tmp_path / "calls.jsonl"
    journal = Journal(path)
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        nursery.cancel_scope.cancel()
    journal.append(rec(7))
    assert "call-7" in replay_file(path).live


async def test_a_torn_tail_does_not_swallow_the_next_record(tmp_path: Path) -> None:
    path = tmp_path / "calls.jsonl"
    path.write_bytes(encode_record(rec(1)) + b'{"callId":"call-1","sta')
    journal = Journal(path)
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        await journal.append_durable(rec(2))
        await journal.close()
    result = replay_file(path)
    assert set(result.live) == {"call-1", "call-2"} and result.bad_lines == [2]


async def test_rotation_bounds_the_file_and_carries_live_calls(tmp_path: Path) -> None:
    path = tmp_path / "calls.jsonl"
    live = apply(rec(0), CallAnswered(id="a"), at=int(time.time() * 1000))
    journal = Journal(path, max_bytes=4000, keep_files=2, live_records=lambda: [live])
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        await journal.append_durable(live)  # carried over: it was written once
        for i in range(1, 60):
            await journal.append_durable(apply(rec(i), CallEnded(id="e", reason="completed"),
                at=int(time.time() * 1000)))
        await journal.close()
    assert path.stat().st_size < 4000 + 1000
    assert (tmp_path / "calls.jsonl.1").exists() and (tmp_path / "calls.jsonl.2").exists()
    assert not (tmp_path / "calls.jsonl.3").exists()
    assert replay_file(path).live["call-0"] == live  # the live call survived rotation


def test_tail_lines_reads_from_the_end(tmp_path: Path) -> None:
    path = tmp_path / "calls.jsonl"
    path.write_bytes(b"".join(encode_record(rec(i)) for i in range(100)))
    lines = tail_lines(path, 3)
    assert len(lines) == 3 and b"call-99" in lines[-1]
    assert tail_lines(tmp_path / "nope", 5) == []
    assert os.path.getsize(path) > 0


async def test_close_while_a_batch_is_being_drained_loses_nothing(tmp_path: Path) -> None:
    path = tmp_path / "calls.jsonl"
    journal = Journal(path)
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        for i in range(10):
            journal.append(rec(i))
        await journal.close()  # the writer drains the batch, then meets the closed channel
    assert len(replay_file(path).live) == 10


def test_a_line_without_a_transcript_still_replays() -> None:
    line = (b'{"callId":"old","provider":"twilio","direction":"outbound","state":"answered",'
            b'"from":"+15550001111","to":"+15550002222","startedAt":1,"providerCallId":"CA1"}\n')
    result = replay_bytes(line)
    assert result.live["old"].transcript == () and result.bad_lines == []


async def test_a_failing_disk_is_reported_not_fatal(tmp_path: Path) -> None:

    path = tmp_path / "calls.jsonl"
    journal = Journal(path)
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        real_write = journal._write_locked

        def full(payload: list[bytes]) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        journal._write_locked = full  # type: ignore[method-assign]
        journal.append(rec(1))  # a plain append never raises
        try:
            await journal.append_durable(rec(2))
        except JournalError as exc:
            assert "No space left" in str(exc)
        else:
            raise AssertionError("a durable append on a full disk must fail")
        journal._write_locked = real_write  # type: ignore[method-assign]
        await journal.append_durable(rec(3))  # the writer is still alive
        await journal.close()
    assert "call-3" in replay_file(path).live


async def test_journal_files_are_private_whatever_the_umask(tmp_path: Path) -> None:
    path = tmp_path / "calls.jsonl"
    path.write_bytes(b"")
    os.chmod(path, 0o644)
    old = os.umask(0o022)
    try:
        journal = Journal(path, max_bytes=1, keep_files=2)
        async with trio.open_nursery() as nursery:
            await nursery.start(journal.run)
            await journal.append_durable(rec(1))
            await journal.append_durable(rec(2))
            await journal.close()
    finally:
        os.umask(old)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert os.stat(tmp_path / "calls.jsonl.1").st_mode & 0o777 == 0o600


# -- a failing disk leaves nothing behind (issue 8, item 9) --------------------------------


async def test_after_enospc_and_recovery_the_file_holds_no_refused_record(
        tmp_path: Path) -> None:
    """Refused records must not be flushed later (Python's buffered file used to keep them),
    and the writer's idea of the size must stay the file's."""
    path = tmp_path / "calls.jsonl"
    disk = FlakyDisk()
    journal = Journal(path, disk=disk)
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        await journal.append_durable(rec(1))  # fits before the disk fills
        disk.full, disk.short_done = 3, False
        for n in (2, 3, 4):
            with pytest.raises(JournalError, match="No space left"):
                await journal.append_durable(rec(n))
            assert journal._size == path.stat().st_size
        await journal.append_durable(rec(5))  # space is back
        journal.append(rec(6))
        await journal.close()
    assert journal._size == path.stat().st_size
    result = replay_file(path)
    assert set(result.live) == {"call-1", "call-5", "call-6"}
    assert result.bad_lines == [] and not result.torn_tail
    assert b"call-2" not in path.read_bytes() and b"call-3" not in path.read_bytes()
    assert "call-2" not in journal.index and journal.lookup_sync("call-5") == rec(5)


async def test_a_failed_fsync_is_cut_back_so_the_record_never_appears(tmp_path: Path) -> None:
    path = tmp_path / "calls.jsonl"
    journal = Journal(path, disk=FlakyDisk(fsync_fails=1))
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        with pytest.raises(JournalError, match="Input/output error"):
            await journal.append_durable(rec(1))
        await journal.append_durable(rec(2))
        await journal.close()
    assert set(replay_file(path).live) == {"call-2"}
    assert journal._size == path.stat().st_size


async def test_append_durable_returns_only_once_its_line_is_fsynced(tmp_path: Path) -> None:
    path = tmp_path / "calls.jsonl"
    disk = RecordingDisk()
    journal = Journal(path, disk=disk)
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        for n in range(5):
            journal.append(rec(100 + n))  # queued alongside: one batch, one fsync
            await journal.append_durable(rec(n))
            assert encode_record(rec(n)) in disk.durable
        await journal.close()


async def test_the_event_loop_never_waits_for_the_disk(tmp_path: Path) -> None:
    """Writes and fsyncs run in a worker thread: while one is stuck, the loop goes on."""
    entered = trio.Event()
    released = threading.Event()

    class StuckDisk(Disk):
        def fsync(self, fd: int) -> None:
            trio.from_thread.run_sync(entered.set)  # raises if run on the loop's own thread
            released.wait(timeout=5)  # a hung disk (bounded: a regression fails, not hangs)
            super().fsync(fd)

    journal = Journal(tmp_path / "calls.jsonl", disk=StuckDisk())
    written = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)

        async def durable() -> None:
            await journal.append_durable(rec(1))
            written.set()

        nursery.start_soon(durable)
        with trio.fail_after(5):
            await entered.wait()
        for _ in range(10):
            await trio.lowlevel.checkpoint()  # other tasks run while the fsync is stuck
        assert not written.is_set()
        released.set()
        with trio.fail_after(5):
            await written.wait()
        await journal.close()


# -- the index: every call's last line, across rotation and restart (issue 8, item 7) -------


def ended(n: int) -> CallRecord:
    return apply(rec(n), CallEnded(id="e", reason="completed"), 2000)


async def test_the_index_finds_every_kept_call_across_rotations_and_a_restart(
        tmp_path: Path) -> None:
    path = tmp_path / "calls.jsonl"
    live = apply(rec(0), CallAnswered(id="a"), at=int(time.time() * 1000))
    journal = Journal(path, max_bytes=6000, keep_files=2, live_records=lambda: [live])
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        await journal.append_durable(live)
        for n in range(1, 120):
            journal.append(rec(n))
            await journal.append_durable(ended(n))
        await journal.close()
    assert journal.index.segment >= 3  # rotated at least three times: a file was dropped
    kept = set()
    for age in (2, 1, 0):
        name = path if age == 0 else path.with_name(f"calls.jsonl.{age}")
        kept |= {line.split(b'"callId":"')[1].split(b'"')[0].decode()
                 for line in name.read_bytes().splitlines()}
    assert "call-1" not in kept  # its file was dropped: it is forgotten, memory stays bounded
    assert "call-1" not in journal.index and journal.index.call_for_provider("p1") is None
    for call_id in kept:
        n = int(call_id.split("-")[1])
        expected = live if n == 0 else ended(n)
        assert journal.lookup_sync(call_id) == expected
        assert journal.index.call_for_provider(f"p{n}") == call_id
    assert len(journal.index) == len(kept)

    restarted = replay_file(path, keep_files=2)  # what the next daemon reads
    assert set(restarted.live) == {"call-0"} and restarted.files == 3
    again = Journal(path, keep_files=2, index=restarted.index)
    for call_id in kept:
        assert again.lookup_sync(call_id) == journal.lookup_sync(call_id)
    assert again.index.locate("call-119") == journal.index.locate("call-119")


def test_replay_reads_rotated_files_oldest_first(tmp_path: Path) -> None:
    path = tmp_path / "calls.jsonl"
    path.with_name("calls.jsonl.2").write_bytes(encode_record(rec(1)) + encode_record(rec(2)))
    path.with_name("calls.jsonl.1").write_bytes(encode_record(ended(1)) + b"garbage\n")
    path.write_bytes(encode_record(rec(3)))
    result = replay_file(path, keep_files=3)
    assert set(result.live) == {"call-2", "call-3"}  # call-1 ended in a newer file
    assert result.bad_rotated == 1 and result.bad_lines == [] and result.ended == 1
    journal = Journal(path, index=result.index)
    assert journal.lookup_sync("call-1") == ended(1)
    assert result.index.call_for_provider("p2") == "call-2"
    assert replay_file(path).live.keys() == {"call-3"}  # keep_files=0: calls.jsonl alone


async def test_rotation_never_copies_a_call_whose_first_line_is_not_written(
        tmp_path: Path) -> None:
    """A call being admitted is live in memory before its line is on disk; if rotation
    copied it and its own write then failed (full disk), the refused call would come back."""
    path = tmp_path / "calls.jsonl"
    written, admitting = rec(1), rec(2)
    disk = FlakyDisk()
    journal = Journal(path, max_bytes=2000, keep_files=2, disk=disk,
                      live_records=lambda: [written, admitting])
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        await journal.append_durable(written)
        for n in range(10, 20):  # enough to rotate
            await journal.append_durable(ended(n))
        assert journal.index.segment >= 1
        disk.full = 1
        with pytest.raises(JournalError):
            await journal.append_durable(admitting)
        await journal.close()
    assert b"call-2" not in path.read_bytes()
    assert "call-1" in replay_file(path).live  # a written live call is carried over
