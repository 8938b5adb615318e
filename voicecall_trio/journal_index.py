"""The ``JournalIndex``: where the last line of every call in the kept journal files is.

It also says which call a carrier's id belongs to, so an ended call the supervisor no longer
holds in memory is read back with one positioned read instead of a scan. It is built by replay
and kept true by the writer: only written lines enter it, and rotation drops the entries of
the file it deletes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .journal import _Item

_OFFSET_BITS = 40  # a file offset below 1 TiB; the segment number sits above it
_OFFSET_MASK = (1 << _OFFSET_BITS) - 1


class JournalIndex:
    """Where the last line of each call is, and which call a carrier's id belongs to.

    Files are numbered by *segment*: ``calls.jsonl`` is ``segment``, ``calls.jsonl.k`` is
    ``segment - k``. Rotation only increments ``segment``, so no entry moves when files shift
    names. A location is one int (segment and offset packed) to keep the cost per call small.
    Mutated only by the journal's writer (under its lock); read from any thread.
    """

    __slots__ = ("_lines", "_providers", "segment")

    def __init__(self) -> None:
        self.segment = 0
        self._lines: dict[str, int] = {}
        self._providers: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self._lines)

    def __contains__(self, call_id: object) -> bool:
        return call_id in self._lines

    def note(self, call_id: str, provider_call_id: str | None, offset: int,
             segment: int | None = None) -> None:
        """The last line of ``call_id`` now starts at ``offset`` of ``segment`` (current)."""
        seg = self.segment if segment is None else segment
        self._lines[call_id] = (seg << _OFFSET_BITS) | offset
        if provider_call_id:
            self._providers[provider_call_id] = call_id

    def note_written(self, items: Iterable[_Item], offset: int) -> None:
        """``items`` were written one after the other from ``offset`` of the current file."""
        lines, providers = self._lines, self._providers
        segment = self.segment << _OFFSET_BITS
        for item in items:
            call_id = item.call_id
            if call_id:
                lines[call_id] = segment | offset
                if item.provider_call_id:
                    providers[item.provider_call_id] = call_id
            offset += len(item.data)

    def locate(self, call_id: str) -> tuple[int, int] | None:
        """(age, offset): the line is in ``calls.jsonl`` (age 0) or ``calls.jsonl.<age>``."""
        packed = self._lines.get(call_id)
        if packed is None:
            return None
        return self.segment - (packed >> _OFFSET_BITS), packed & _OFFSET_MASK

    def call_for_provider(self, provider_call_id: str) -> str | None:
        return self._providers.get(provider_call_id)

    def rotated(self, keep_files: int) -> None:
        """The current file became ``.1``; files older than ``.keep_files`` are gone, and so
        are the calls whose last line was in them (a newer line would have moved the entry)."""
        self.segment += 1
        oldest = self.segment - keep_files
        stale = [cid for cid, packed in self._lines.items() if packed >> _OFFSET_BITS < oldest]
        for call_id in stale:
            del self._lines[call_id]
        if stale:
            self._providers = {pid: cid for pid, cid in self._providers.items()
                               if cid in self._lines}
