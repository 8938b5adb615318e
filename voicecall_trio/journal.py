"""The writer of the call journal ``<store>/calls.jsonl``: one task, group commit, rotation.

Every change to a call appends a full snapshot of its record as one JSON line (the seed's
format), so the last line per ``callId`` is the truth. Durability policy (see
docs/architecture.md): the writer drains everything queued, writes it in one ``write`` and
``fsync``s once per batch (group commit) in a worker thread, so the event loop never blocks on
the disk. ``append_durable`` returns only after the fsync that covers the record: the daemon
uses it for the record of an outbound call before asking the carrier to dial.

A failed write leaves nothing behind: the writer uses ``os.write`` on the raw descriptor (no
buffer that could flush refused bytes later) and, after any failure, truncates the file back
to its last good size, so a record reported as not written can never appear afterwards. The
writer's idea of the size is always the file's.

Rotation keeps the file under ``journal.maxBytes``: the full file moves to ``calls.jsonl.1``
(older ones shift up to ``journal.keepFiles``) and the new file starts with a snapshot of every
live call, so replay after rotation still sees them. The swap is done with a hard link and an
atomic rename: at no moment is there no ``calls.jsonl``.

Replay is ``replay.py``, the index ``journal_index.py``, the line format ``journal_lines.py``
and the system calls ``journal_disk.py``.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

import msgspec
import trio

from .errors import JournalError
from .journal_disk import Disk, fsync_dir, open_private
from .journal_index import JournalIndex
from .journal_lines import decode_record, encode_record, read_line, segment_path
from .model import CallRecord

log = logging.getLogger("voicecall.journal")



class _Item:
    __slots__ = ("call_id", "data", "done", "error", "provider_call_id")

    def __init__(self, data: bytes, done: trio.Event | None, call_id: str = "",
                 provider_call_id: str | None = None) -> None:
        self.data = data
        self.done = done
        self.call_id = call_id
        self.provider_call_id = provider_call_id
        self.error: OSError | None = None


def _item(record: CallRecord, line: bytes | None, done: trio.Event | None) -> _Item:
    return _Item(encode_record(record) if line is None else line, done, record.call_id,
                 record.provider_call_id)


def _carried_over(records: Iterable[CallRecord], index: JournalIndex) -> list[_Item]:
    """Snapshots of the live calls for the new file: only calls already written once. A call
    whose first line is still queued gets it written after the swap, into the new file; and
    if that write fails (a full disk), no copy of it was made that could bring it back."""
    items = []
    for record in records:
        if record.call_id not in index:
            continue
        try:
            items.append(_item(record, None, None))
        except (ValueError, msgspec.EncodeError) as exc:  # never stored: cannot happen
            log.error("journal: call %s cannot be carried over: %s", record.call_id, exc)
    return items


class Journal:
    """The single writer of ``calls.jsonl``. Start ``run`` in a nursery before appending."""

    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int = 64 * 1024 * 1024,
        keep_files: int = 3,
        live_records: Callable[[], Iterable[CallRecord]] = lambda: (),
        fsync: bool = True,
        index: JournalIndex | None = None,
        disk: Disk | None = None,
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.keep_files = max(1, keep_files)
        self.live_records = live_records
        self.fsync = fsync
        self.index = index if index is not None else JournalIndex()
        self.disk = disk if disk is not None else Disk()
        self._send, self._receive = trio.open_memory_channel[_Item](math.inf)
        self._fd: int | None = None
        self._size = 0
        self._closed = False
        self._lock = threading.Lock()  # the writer thread vs. a late synchronous append
        self.appended = 0
        self.batches = 0

    # -- producer side (any task) -------------------------------------------------------
    def append(self, record: CallRecord, line: bytes | None = None) -> None:
        """Queue a snapshot (``line``: its encoding, if the caller has it); returns at once.
        After shutdown it is written synchronously."""
        self._enqueue(_Item(encode_record(record) if line is None else line, None,
                            record.call_id, record.provider_call_id))

    async def append_durable(self, record: CallRecord, line: bytes | None = None) -> None:
        """Queue a snapshot and wait until it is on disk (fsynced); JournalError if it is not,
        and then no trace of it is left in the file."""
        done = trio.Event()
        item = _item(record, line, done)
        self._enqueue(item)
        await done.wait()
        if item.error is not None:
            raise JournalError(f"cannot write the journal {self.path}: "
                               f"{item.error.strerror or item.error}")

    async def flush(self) -> None:
        done = trio.Event()
        self._enqueue(_Item(b"", done))
        await done.wait()

    def _enqueue(self, item: _Item) -> None:
        if not self._closed:
            try:
                self._send.send_nowait(item)
                return
            except trio.ClosedResourceError:
                pass
        # the writer is gone (shutdown or cancellation): never lose a record
        if item.data:
            try:
                self._write_batch([item])
            except OSError as exc:
                item.error = exc
                log.error("journal %s: write failed: %s", self.path, exc)
        if item.done is not None:
            item.done.set()

    # -- reading back (the index) -------------------------------------------------------
    def read_line(self, call_id: str, *, wait: bool = True) -> bytes | None:
        """The last written line of ``call_id`` (blocking: one positioned read). The lock
        keeps rotation from renaming files under the read; ``wait=False`` reads without it
        rather than wait for a write in progress (a race with a rotation then reads some
        other line, which ``lookup_sync`` rejects by its callId)."""
        locked = self._lock.acquire(blocking=wait)
        try:
            where = self.index.locate(call_id)
            if where is None:
                return None
            age, offset = where
            return read_line(segment_path(self.path, age), offset)
        finally:
            if locked:
                self._lock.release()

    def lookup_sync(self, call_id: str, *, wait: bool = True) -> CallRecord | None:
        """The last written record of ``call_id``, from the files (None: unknown or
        unreadable). Blocking; ``lookup`` runs it in a worker thread."""
        if call_id not in self.index:
            return None
        line = self.read_line(call_id, wait=wait)
        if not line:
            return None
        try:
            record = decode_record(line)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None
        return record if record.call_id == call_id else None

    async def lookup(self, call_id: str) -> CallRecord | None:
        if call_id not in self.index:
            return None  # most misses cost no thread
        return await trio.to_thread.run_sync(self.lookup_sync, call_id)

    # -- writer task --------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await trio.to_thread.run_sync(self._open)
        task_status.started()
        try:
            async for first in self._receive:
                batch = [first]
                while True:
                    try:
                        batch.append(self._receive.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break  # nothing more queued, or close(): the loop ends after this batch
                await self._write_items(batch)
        finally:
            self._closed = True
            leftovers: list[_Item] = []
            while True:
                try:
                    leftovers.append(self._receive.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                    break
            if leftovers:
                try:
                    self._write_batch(leftovers)
                except OSError as exc:
                    log.error("journal %s: write of %d record(s) at stop failed: %s",
                              self.path, len(leftovers), exc)
                    for item in leftovers:
                        item.error = exc
                for item in leftovers:
                    if item.done is not None:
                        item.done.set()

    async def close(self) -> None:
        """Let the writer drain what is queued, then stop it."""
        self._send.close()

    async def _write_items(self, batch: list[_Item]) -> None:
        # A failing disk must not end the writer (and with it the daemon): the batch is
        # reported, durable waiters get the error, and later batches are tried again.
        payload = [item for item in batch if item.data]
        error: OSError | None = None
        if payload:
            with trio.CancelScope(shield=True):
                try:
                    await trio.to_thread.run_sync(self._write_batch, payload)
                except OSError as exc:
                    error = exc
                    log.error("journal %s: write of %d record(s) failed: %s", self.path,
                              len(payload), exc)
        for item in batch:
            item.error = error
            if item.done is not None:
                item.done.set()
        if error is None and self._size >= self.max_bytes:
            live = _carried_over(self.live_records(), self.index)
            with trio.CancelScope(shield=True):
                try:
                    await trio.to_thread.run_sync(self._rotate, live)
                except OSError as exc:
                    self.max_bytes *= 2  # don't retry on every batch; appends go on
                    log.error("journal %s: rotation failed (%s); next try at %d bytes",
                              self.path, exc, self.max_bytes)

    # -- blocking helpers (worker thread) -------------------------------------------------
    def _open(self) -> None:
        with self._lock:
            self._open_locked()

    def _open_locked(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = open_private(self.path)
        self._fd = fd
        self._size = os.fstat(fd).st_size
        if self._size and os.pread(fd, 1, self._size - 1) != b"\n":
            # a torn last line must not swallow the next record
            self._write_all(b"\n")

    def _write_batch(self, items: list[_Item]) -> None:
        with self._lock:
            self._write_locked(items)

    def _write_locked(self, items: list[_Item]) -> None:
        if self._fd is None:
            self._open_locked()
        assert self._fd is not None
        start = self._size
        self._write_all(b"".join([item.data for item in items]))
        self.index.note_written(items, start)  # only once written: never a refused line
        self.appended += len(items)
        self.batches += 1

    def _write_all(self, data: bytes) -> None:
        """Write and fsync ``data`` at the end, or leave the file as it was and raise."""
        assert self._fd is not None
        fd, start = self._fd, self._size
        try:
            view = memoryview(data)
            while view:
                written = self.disk.write(fd, view)
                if written <= 0:
                    raise OSError(errno.EIO, "the journal write made no progress")
                view = view[written:]
            if self.fsync:
                self.disk.fsync(fd)
        except OSError:
            self._undo(fd, start)
            raise
        self._size = start + len(data)

    def _undo(self, fd: int, size: int) -> None:
        """Cut off whatever part of a failed write reached the file: a record reported as not
        written must never turn up later (after the disk has room again, or at replay)."""
        try:
            self.disk.truncate(fd, size)
            if self.fsync:
                self.disk.fsync(fd)
        except OSError as exc:
            log.error("journal %s: cannot cut a failed write back to %d bytes: %s",
                      self.path, size, exc)
        try:
            self._size = os.fstat(fd).st_size
        except OSError:
            self._size = size
        if self._size != size:
            # a fragment stayed: start the next record on a fresh line, and replay skips it
            try:
                os.write(fd, b"\n")
                self._size += 1
            except OSError:
                pass

    def _rotate(self, live: list[_Item]) -> None:
        with self._lock:
            self._rotate_locked(live)

    def _rotate_locked(self, live: list[_Item]) -> None:
        path = self.path
        # the new file is complete and durable before any name changes: a failure here
        # leaves the files (and the index) as they were
        tmp = path.with_name(path.name + ".tmp")
        fd = open_private(tmp, truncate=True)
        try:
            data = memoryview(b"".join(item.data for item in live))
            while data:
                data = data[os.write(fd, data):]
            os.fsync(fd)
        finally:
            os.close(fd)
        for n in range(self.keep_files - 1, 0, -1):
            older = segment_path(path, n)
            if older.exists():
                os.replace(older, segment_path(path, n + 1))
        first = segment_path(path, 1)
        if first.exists():
            first.unlink()
        os.link(path, first)
        os.replace(tmp, path)
        fsync_dir(path.parent)
        self.index.rotated(self.keep_files)
        self.index.note_written(live, 0)
        if self._fd is not None:
            os.close(self._fd)
        self._fd = open_private(path)
        self._size = os.fstat(self._fd).st_size
        log.info("journal rotated: %s -> %s (%d live calls carried over)", path, first, len(live))

    def close_file(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
