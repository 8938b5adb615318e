"""The call journal ``<store>/calls.jsonl``: one writer task, replay, rotation.

Every change to a call appends a full snapshot of its record as one JSON line (the seed's
format), so the last line per ``callId`` is the truth. Durability policy (see
docs/architecture.md): the writer drains everything queued, writes it in one ``write`` and
``fsync``s once per batch (group commit) in a worker thread, so the event loop never blocks on
the disk. ``append_durable`` returns only after the fsync that covers the record: the daemon
uses it for the record of an outbound call before asking the carrier to dial.

Rotation keeps the file under ``journal.maxBytes``: the full file moves to ``calls.jsonl.1``
(older ones shift up to ``journal.keepFiles``) and the new file starts with a snapshot of every
live call, so replay after rotation still sees them. The swap is done with a hard link and an
atomic rename: at no moment is there no ``calls.jsonl``.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import msgspec
import trio

from .model import CallRecord

log = logging.getLogger("voicecall.journal")

_encoder = msgspec.json.Encoder()
_record_decoder = msgspec.json.Decoder(CallRecord)


class _Head(msgspec.Struct):
    """Just enough of a line to index it; msgspec skips the rest cheaply."""

    callId: str
    state: str


_head_decoder = msgspec.json.Decoder(_Head)
_TERMINAL = frozenset(
    {"completed", "hangup-user", "hangup-bot", "timeout", "error", "failed", "no-answer",
     "busy", "voicemail"}
)


def encode_record(record: CallRecord) -> bytes:
    return _encoder.encode(record) + b"\n"


def decode_record(line: bytes) -> CallRecord:
    """Decode one journal line; lines written without a transcript (older writers) get []."""
    try:
        return _record_decoder.decode(line)
    except msgspec.ValidationError:
        obj = msgspec.json.decode(line)
        if not isinstance(obj, dict) or "transcript" in obj:
            raise
        obj["transcript"] = []
        return msgspec.convert(obj, CallRecord)


@dataclass
class ReplayResult:
    live: dict[str, CallRecord] = field(default_factory=dict)
    ended_lines: dict[str, bytes] = field(default_factory=dict)  # decoded lazily on lookup
    bad_lines: list[int] = field(default_factory=list)  # 1-based line numbers
    torn_tail: bool = False
    lines: int = 0

    def describe_bad(self) -> str:
        shown = ", ".join(str(n) for n in self.bad_lines[:10])
        more = f" (+{len(self.bad_lines) - 10} more)" if len(self.bad_lines) > 10 else ""
        tail = "; the last line was torn (an interrupted write)" if self.torn_tail else ""
        return f"skipped {len(self.bad_lines)} unreadable journal line(s): {shown}{more}{tail}"


def replay_bytes(data: bytes) -> ReplayResult:
    """Last line per callId wins; unreadable lines are skipped and counted, never fatal."""
    result = ReplayResult()
    latest: dict[str, tuple[int, bytes, bool]] = {}
    lines = data.split(b"\n")
    torn_candidate = bool(lines) and lines[-1] != b""
    if not torn_candidate:
        lines.pop()  # the empty string after the final newline
    result.lines = len(lines)
    decode_head = _head_decoder.decode
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            head = decode_head(line)
        except (msgspec.DecodeError, msgspec.ValidationError):
            result.bad_lines.append(number)
            if torn_candidate and number == len(lines):
                result.torn_tail = True
            continue
        latest[head.callId] = (number, line, head.state in _TERMINAL)
    for call_id, (number, line, terminal) in latest.items():
        if terminal:
            result.ended_lines[call_id] = line
            continue
        try:
            result.live[call_id] = decode_record(line)
        except (msgspec.DecodeError, msgspec.ValidationError):
            result.bad_lines.append(number)
    result.bad_lines.sort()
    return result


def replay_file(path: Path) -> ReplayResult:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return ReplayResult()
    return replay_bytes(data)


class JournalError(OSError):
    """The journal could not be written (disk full, I/O error); the message says why."""


class _Item:
    __slots__ = ("data", "done", "error")

    def __init__(self, data: bytes, done: trio.Event | None) -> None:
        self.data = data
        self.done = done
        self.error: OSError | None = None


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
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.keep_files = max(1, keep_files)
        self.live_records = live_records
        self.fsync = fsync
        self._send, self._receive = trio.open_memory_channel[_Item](math.inf)
        self._file: BinaryIO | None = None
        self._size = 0
        self._closed = False
        self._lock = threading.Lock()  # the writer thread vs. a late synchronous append
        self.appended = 0
        self.batches = 0

    # -- producer side (any task) -------------------------------------------------------
    def append(self, record: CallRecord) -> None:
        """Queue a snapshot; returns at once. After shutdown it is written synchronously."""
        self._enqueue(_Item(encode_record(record), None))

    async def append_durable(self, record: CallRecord) -> None:
        """Queue a snapshot and wait until it is on disk (fsynced); JournalError if it is not."""
        done = trio.Event()
        item = _Item(encode_record(record), done)
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
                self._write_batch([item.data])
            except OSError as exc:
                item.error = exc
                log.error("journal %s: write failed: %s", self.path, exc)
        if item.done is not None:
            item.done.set()

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
                self._write_batch([item.data for item in leftovers])
                for item in leftovers:
                    if item.done is not None:
                        item.done.set()

    async def close(self) -> None:
        """Let the writer drain what is queued, then stop it."""
        self._send.close()

    async def _write_items(self, batch: list[_Item]) -> None:
        # A failing disk must not end the writer (and with it the daemon): the batch is
        # reported, durable waiters get the error, and later batches are tried again.
        payload = [item.data for item in batch if item.data]
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
            live = [encode_record(r) for r in self.live_records()]
            with trio.CancelScope(shield=True):
                try:
                    await trio.to_thread.run_sync(self._rotate, live)
                except OSError as exc:
                    self.max_bytes *= 2  # don't retry on every batch; appends go on
                    log.error("journal %s: rotation failed (%s); next try at %d bytes",
                              self.path, exc, self.max_bytes)

    # -- blocking helpers (worker thread) -------------------------------------------------
    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        file = _open_private(self.path)
        self._size = file.tell()
        if self._size:
            # a torn last line must not swallow the next record
            with open(self.path, "rb") as reader:
                reader.seek(-1, os.SEEK_END)
                if reader.read(1) != b"\n":
                    file.write(b"\n")
                    file.flush()
                    self._size += 1
        self._file = file

    def _write_batch(self, payload: list[bytes]) -> None:
        with self._lock:
            self._write_locked(payload)

    def _write_locked(self, payload: list[bytes]) -> None:
        if self._file is None:
            self._open()
        assert self._file is not None
        data = b"".join(payload)
        self._file.write(data)
        self._file.flush()
        if self.fsync:
            os.fsync(self._file.fileno())
        self._size += len(data)
        self.appended += len(payload)
        self.batches += 1

    def _rotate(self, live: list[bytes]) -> None:
        with self._lock:
            self._rotate_locked(live)

    def _rotate_locked(self, live: list[bytes]) -> None:
        path = self.path
        for n in range(self.keep_files - 1, 0, -1):
            older = path.with_name(f"{path.name}.{n}")
            if older.exists():
                os.replace(older, path.with_name(f"{path.name}.{n + 1}"))
        first = path.with_name(f"{path.name}.1")
        if first.exists():
            first.unlink()
        os.link(path, first)
        tmp = path.with_name(path.name + ".tmp")
        with _open_private(tmp, truncate=True) as out:
            out.write(b"".join(live))
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
        if self._file is not None:
            self._file.close()
        self._file = _open_private(path)
        self._size = self._file.tell()
        log.info("journal rotated: %s -> %s (%d live calls carried over)", path, first, len(live))

    def close_file(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _open_private(path: Path, *, truncate: bool = False) -> BinaryIO:
    """Open for appending (or rewriting), readable by the owner only: the journal holds phone
    numbers and transcripts, whatever the umask or the mode of an older file."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if truncate else os.O_APPEND)
    fd = os.open(path, flags, 0o600)
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, "wb" if truncate else "ab")


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
