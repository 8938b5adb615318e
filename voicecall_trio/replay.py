"""Journal replay: the last line per ``callId`` wins, and unreadable lines are never fatal.

Replay reads the rotated files oldest first, then ``calls.jsonl``, one file at a time in
memory, and returns the live calls, a ``JournalIndex`` covering every call in the kept files,
and an account of the lines it skipped (a torn last line, an interrupted write, is reported as
such).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from .journal_index import JournalIndex
from .journal_lines import decode_record, segment_path
from .model import CallRecord
from .states import TERMINAL_STATE_NAMES


class _Head(msgspec.Struct):
    """Just enough of a line to index it; msgspec skips the rest cheaply."""

    callId: str
    state: str
    providerCallId: str | None = None


_head_decoder = msgspec.json.Decoder(_Head)


@dataclass
class ReplayResult:
    live: dict[str, CallRecord] = field(default_factory=dict)
    index: JournalIndex = field(default_factory=JournalIndex)  # every call, live or ended
    bad_lines: list[int] = field(default_factory=list)  # 1-based, in calls.jsonl
    bad_rotated: int = 0  # unreadable lines in calls.jsonl.1..N
    torn_tail: bool = False
    lines: int = 0
    files: int = 0

    @property
    def ended(self) -> int:
        return len(self.index) - len(self.live)

    def describe_bad(self) -> str:
        shown = ", ".join(str(n) for n in self.bad_lines[:10])
        more = f" (+{len(self.bad_lines) - 10} more)" if len(self.bad_lines) > 10 else ""
        tail = "; the last line was torn (an interrupted write)" if self.torn_tail else ""
        rotated = (f"; {self.bad_rotated} more in rotated files" if self.bad_rotated else "")
        return (f"skipped {len(self.bad_lines)} unreadable journal line(s): "
                f"{shown}{more}{tail}{rotated}")


class _Scan:
    """Replay state across files (oldest first): the last line seen per callId."""

    def __init__(self) -> None:
        # callId -> (segment, offset, line number, the line if not terminal, providerCallId)
        self.latest: dict[str, tuple[int, int, int, bytes | None, str | None]] = {}

    def feed(self, data: bytes, segment: int, result: ReplayResult, *, current: bool) -> None:
        lines = data.split(b"\n")
        torn_candidate = lines[-1] != b""
        if not torn_candidate:
            lines.pop()  # the empty string after the final newline
        result.lines += len(lines)
        decode_head = _head_decoder.decode
        latest = self.latest
        offset = 0
        last = len(lines)
        for number, line in enumerate(lines, 1):
            start = offset
            offset += len(line) + 1
            if not line.strip():
                continue
            try:
                head = decode_head(line)
            except (msgspec.DecodeError, msgspec.ValidationError):
                if current:
                    result.bad_lines.append(number)
                    if torn_candidate and number == last:
                        result.torn_tail = True
                else:
                    result.bad_rotated += 1
                continue
            live_line = None if head.state in TERMINAL_STATE_NAMES else line
            latest[head.callId] = (segment, start, number if current else 0, live_line,
                                   head.providerCallId)

    def finish(self, result: ReplayResult) -> ReplayResult:
        index = result.index
        for call_id, (segment, offset, number, line, provider_call_id) in self.latest.items():
            index.note(call_id, provider_call_id, offset, segment)
            if line is None:
                continue
            try:
                result.live[call_id] = decode_record(line)
            except (msgspec.DecodeError, msgspec.ValidationError):
                if number:
                    result.bad_lines.append(number)
                else:
                    result.bad_rotated += 1
        result.bad_lines.sort()
        return result


def replay_bytes(data: bytes) -> ReplayResult:
    """Last line per callId wins; unreadable lines are skipped and counted, never fatal."""
    result = ReplayResult(files=1)
    scan = _Scan()
    scan.feed(data, 0, result, current=True)
    return scan.finish(result)


def replay_file(path: Path, keep_files: int = 0) -> ReplayResult:
    """Replay ``calls.jsonl.<keep_files>`` .. ``.1`` then ``calls.jsonl``, oldest first, so
    the index covers calls that live only in rotated files (one file at a time in memory)."""
    result = ReplayResult()
    scan = _Scan()
    present = [age for age in range(1, keep_files + 1) if segment_path(path, age).exists()]
    oldest = max(present, default=0)
    result.index.segment = oldest
    for age in sorted(present, reverse=True):
        try:
            data = segment_path(path, age).read_bytes()
        except FileNotFoundError:
            continue
        scan.feed(data, oldest - age, result, current=False)
        result.files += 1
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        data = b""
    else:
        result.files += 1
    scan.feed(data, oldest, result, current=True)
    return scan.finish(result)
