"""Bytes from a child's pipe, cut into lines of bounded length (pure).

A tunnel agent is someone else's program: a line that never ends must not grow a buffer
without bound. A line longer than ``limit`` is cut there and the rest of it dropped.
"""

from __future__ import annotations


class LineBuffer:
    """``feed(chunk)`` returns the complete lines it finished (without their ``\\n``)."""

    def __init__(self, limit: int = 64 * 1024) -> None:
        self.limit = limit
        self._pending = bytearray()
        self._skipping = False  # inside an overlong line: drop bytes until its end
        self.cut = 0  # overlong lines seen

    def feed(self, chunk: bytes | bytearray) -> list[bytes]:
        lines: list[bytes] = []
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            piece = chunk[start:] if end < 0 else chunk[start:end]
            if not self._skipping:
                room = self.limit - len(self._pending)
                self._pending += piece[:room]
                if len(piece) > room:
                    self._skipping = True
                    self.cut += 1
                    lines.append(bytes(self._pending))
                    self._pending.clear()
            if end < 0:
                return lines
            if not self._skipping:
                lines.append(bytes(self._pending).rstrip(b"\r"))
            self._pending.clear()
            self._skipping = False
            start = end + 1

    def flush(self) -> list[bytes]:
        """What is left at end of stream (a last line without ``\\n``)."""
        rest = b"" if self._skipping else bytes(self._pending)
        self._pending.clear()
        self._skipping = False
        return [rest] if rest else []
