"""The system calls on the journal's files: the ``Disk`` seam and private file modes.

Tests override ``Disk`` to inject a full disk, short writes or failed fsyncs, or to record
what was made durable: the writer's appends to ``calls.jsonl`` (and the truncation that undoes
a failed one) go through it. Every journal file is opened by ``open_private``.
"""

from __future__ import annotations

import os
from pathlib import Path


class Disk:
    """The system calls the writer makes on ``calls.jsonl``. Tests override these to inject a
    full disk, short writes or failed fsyncs, or to record what was made durable."""

    def write(self, fd: int, data: memoryview) -> int:
        return os.write(fd, data)

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def truncate(self, fd: int, size: int) -> None:
        os.ftruncate(fd, size)


def open_private(path: Path, *, truncate: bool = False) -> int:
    """Open for appending (or rewriting), readable by the owner only: the journal holds phone
    numbers and transcripts, whatever the umask or the mode of an older file."""
    flags = os.O_RDWR | os.O_CREAT | (os.O_TRUNC if truncate else os.O_APPEND)
    fd = os.open(path, flags, 0o600)
    os.fchmod(fd, 0o600)
    return fd


def fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
