"""A supervisor wired to the mock carrier and a real journal, for tests on MockClock."""

from __future__ import annotations

import errno
import itertools
import json
import os
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from voicecall_trio.config import build_config
from voicecall_trio.journal import Journal
from voicecall_trio.journal_disk import Disk
from voicecall_trio.providers.mock import MockProvider
from voicecall_trio.supervisor import Supervisor


class FlakyDisk(Disk):
    """ENOSPC for the next ``full`` writes; the first of them is a short write (part of the
    data reaches the file, as on a disk that fills up mid-write). ``fsync_fails`` makes the
    next fsyncs fail with EIO after the data was written."""

    def __init__(self, full: int = 0, fsync_fails: int = 0) -> None:
        self.full = full
        self.fsync_fails = fsync_fails
        self.short_done = False

    def write(self, fd: int, data: memoryview) -> int:
        if self.full > 0:
            if not self.short_done and len(data) > 1:
                self.short_done = True
                return os.write(fd, data[: len(data) // 2])  # the rest will not fit
            self.full -= 1
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().write(fd, data)

    def fsync(self, fd: int) -> None:
        if self.fsync_fails > 0:
            self.fsync_fails -= 1
            raise OSError(errno.EIO, "Input/output error")
        super().fsync(fd)


class RecordingDisk(Disk):
    """Remembers the file's bytes at each fsync: what a crash right then would keep."""

    def __init__(self) -> None:
        self.durable = b""

    def fsync(self, fd: int) -> None:
        super().fsync(fd)
        self.durable = os.pread(fd, 1 << 24, 0)


class Rig:
    def __init__(self, sup: Supervisor, mock: MockProvider, path: Path) -> None:
        self.sup, self.mock, self.path = sup, mock, path

    async def journal_states(self, call_id: str) -> list[str]:
        if not self.sup.journal._closed:
            await self.sup.journal.flush()
        return [json.loads(line)["state"] for line in self.path.read_text().splitlines()
                if json.loads(line)["callId"] == call_id]

    async def ended(self, call_id: str) -> str:
        call = self.sup.live.get(call_id)
        if call is not None:
            await call.task_done.wait()
        record = self.sup.get_record(call_id)
        assert record is not None
        return record.state.value


def counting_ids() -> Callable[[], str]:
    """Deterministic call ids, shaped like the daemon's uuid4s: ...-000000000001, ...2, ..."""
    counter = itertools.count(1)
    return lambda: str(uuid.UUID(int=next(counter), version=4))


@asynccontextmanager
async def rig(tmp_path: Path, replayed: Any = None, *, disk: Disk | None = None,
              fsync: bool = False, mock_class: type[MockProvider] = MockProvider,
              **overrides: Any) -> AsyncIterator[Rig]:
    """``overrides`` are config keys (``journal={"maxBytes": ...}`` too); ``disk`` and
    ``fsync`` go to the journal (fsync off by default: tests don't need the disk's speed);
    ``replayed`` is what a restart would have read, its index included."""
    doc: dict[str, Any] = {"store": str(tmp_path), "mock": {"speakMsPerChar": 10}}
    doc.update(overrides)
    config = build_config(doc, {})
    mock = mock_class(config)
    journal = Journal(config.journal_path, fsync=fsync, disk=disk,
                      max_bytes=config.journal.max_bytes, keep_files=config.journal.keep_files,
                      index=getattr(replayed, "index", None))
    sup = Supervisor(config, mock, journal, clock=trio.current_time, ids=counting_ids())
    journal.live_records = sup.live_records
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        await nursery.start(mock.run, sup)
        await nursery.start(sup.run, replayed)
        yield Rig(sup, mock, config.journal_path)
        await sup.shutdown(1)
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def real_time_limit(seconds: float) -> AsyncIterator[None]:
    """Turn a hang of a MockClock test into a failure after ``seconds`` of *real* time.

    A trio deadline cannot do it there: the autojump clock jumps to the nearest deadline
    whenever every task waits, including while the journal's worker thread runs, so a
    ``fail_after`` would fire in the middle of a healthy test."""
    done = threading.Event()
    expired = False
    async with trio.open_nursery() as nursery:

        async def watchdog() -> None:
            nonlocal expired
            if not await trio.to_thread.run_sync(done.wait, seconds, abandon_on_cancel=True):
                expired = True
                nursery.cancel_scope.cancel()

        nursery.start_soon(watchdog)
        try:
            yield
        finally:
            done.set()
    if expired:
        raise AssertionError(f"the test did not finish within {seconds} s (real time)")

