"""When each outgoing 20 ms frame may leave, and how much of what was sent has been heard.

A carrier plays frames as they arrive and buffers the rest, so sending faster than real time
only moves audio into a buffer we can no longer take back: a barge-in ``clear`` would then
silence audio the caller never heard, and a ``mark`` would be echoed long after we think.
So frame n of a run is *due* (starts playing) at ``base + n * frame_s`` and may be sent at most
``lead_s`` before that: a small cushion against jitter, nothing more.

Drift: due times are computed from the run's base, never by adding up sleeps, so oversleeping
one frame makes the next one earlier, not everything later. Stalls: if a frame is sent after
its due time by more than a frame (no audio came for a while, or there was no stream to send
to), the far end has already run dry, so the run re-bases at that moment instead of sending a
burst to "catch up". (Up to a frame late is timer jitter when ``lead_s`` is 0: kept on schedule.)
``reset()`` starts over (after a ``clear`` or a new stream: nothing is buffered over there).
*Pure*: the caller passes the time (the trio clock, in seconds).
"""

from __future__ import annotations

from typing import Final

FRAME_S: Final = 0.020
LEAD_S: Final = 0.06  # 3 frames: covers scheduler jitter on a busy box, keeps `clear` quick


class Pacer:
    """The schedule of one outgoing stream of frames."""

    def __init__(self, *, frame_s: float = FRAME_S, lead_s: float = LEAD_S) -> None:
        if frame_s <= 0 or lead_s < 0:
            raise ValueError("frame_s must be > 0 and lead_s >= 0")
        self.frame_s = frame_s
        self.lead_s = lead_s
        self._base: float | None = None  # when frame 0 of the current run plays
        self._count = 0  # frames sent in the current run

    def send_at(self) -> float | None:
        """The earliest time the next frame may be sent; None: at once (a new run)."""
        if self._base is None:
            return None
        return self._base + self._count * self.frame_s - self.lead_s

    def sent(self, now: float) -> float:
        """Record one frame sent at ``now``; returns when it starts playing."""
        due = self.end
        if due is None or now - due > self.frame_s:  # the far end ran dry: a new run from now
            self._base, self._count, due = now, 0, now
        self._count += 1
        return due

    @property
    def end(self) -> float | None:
        """When the last frame sent stops playing (None before any, or after ``reset``)."""
        if self._base is None:
            return None
        return self._base + self._count * self.frame_s

    def ahead(self, now: float) -> float:
        """Seconds of audio sent but not yet played at ``now``."""
        end = self.end
        return 0.0 if end is None else max(0.0, end - now)

    def reset(self) -> None:
        """The far end holds nothing any more: the next frame starts a new run."""
        self._base, self._count = None, 0


def heard_ms(frames_sent: int, ahead_s: float, frame_s: float = FRAME_S) -> int:
    """Audio of an utterance the listener has heard: what was sent for it, less what was still
    ahead of real time (bounded to 0..sent)."""
    sent_ms = frames_sent * frame_s * 1000.0
    return round(min(sent_ms, max(0.0, sent_ms - max(0.0, ahead_s) * 1000.0)))


__all__ = ["FRAME_S", "LEAD_S", "Pacer", "heard_ms"]
