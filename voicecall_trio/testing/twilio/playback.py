"""What the fake Twilio's caller hears of a media stream: the daemon's outbound audio queued
and played in real time, and when each ``mark`` is due to be echoed.

Twilio buffers the ``media`` a server sends and plays it at 8000 bytes a second; a ``mark``
comes back once the audio sent before it has been played (at once if nothing is queued);
``clear`` drops what is not yet played and echoes every pending mark at once. This module is
that arithmetic and nothing else: pure, times passed in (``trio.current_time()`` in the
stream task), no I/O, so the stream shell stays thin and the rules are tested by table.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

ULAW_BYTES_PER_S = 8000


@dataclass
class Playback:
    """One stream's playback buffer. ``ends_at``: when the queued audio will have played."""

    ends_at: float = 0.0
    _marks: deque[tuple[float, str]] = field(default_factory=deque)  # (due, name), in order

    def audio(self, now: float, nbytes: int) -> None:
        """``nbytes`` of mu-law arrived: it plays after what is queued (or now, if idle)."""
        self.ends_at = max(now, self.ends_at) + nbytes / ULAW_BYTES_PER_S

    def mark(self, now: float, name: str) -> None:
        """A mark arrived: due once the audio before it has played."""
        self._marks.append((max(now, self.ends_at), name))

    def next_due(self) -> float | None:
        """When the next mark is due (None: none pending)."""
        return self._marks[0][0] if self._marks else None

    def pop_due(self, now: float) -> list[str]:
        """The marks due by ``now``, in the order they were sent."""
        due = []
        while self._marks and self._marks[0][0] <= now:
            due.append(self._marks.popleft()[1])
        return due

    def clear(self, now: float) -> tuple[list[str], int]:
        """Drop the unplayed audio: (every pending mark, to echo now; bytes dropped)."""
        dropped = max(0, round((self.ends_at - now) * ULAW_BYTES_PER_S))
        self.ends_at = min(self.ends_at, now)
        names = [name for _, name in self._marks]
        self._marks.clear()
        return names, dropped

    def unplayed_s(self, now: float) -> float:
        """Seconds of queued audio still ahead of ``now``."""
        return max(0.0, self.ends_at - now)
