"""Reading the end of ``calls.jsonl`` without the daemon (``voicecall tail``); stdlib only."""

from __future__ import annotations

import os
from pathlib import Path


def tail_lines(path: Path, count: int) -> list[bytes]:
    """The last ``count`` complete lines of the journal (reads from the end)."""
    try:
        with open(path, "rb") as file:
            file.seek(0, os.SEEK_END)
            end = file.tell()
            block = 64 * 1024
            data = b""
            pos = end
            while pos > 0 and data.count(b"\n") <= count:
                step = min(block, pos)
                pos -= step
                file.seek(pos)
                data = file.read(step) + data
    except FileNotFoundError:
        return []
    lines = [line for line in data.split(b"\n") if line.strip()]
    return lines[-count:] if count else []
