"""Per-turn latency milestones on one monotonic clock (``trio.current_time()``), pure.

A turn starts when the caller stopped speaking: the STT's ``speech_stopped`` on a media stream
(the voice session marks ``callerStopped``), or the arrival of a Gather / Telnyx / mock result
(``replies.py`` marks ``finalTranscript``, which starts a turn of its own when the current one
already has a final transcript or none is open). Each later stage keeps its first mark in the
turn. ``turns()`` gives the last ``MAX_TURNS`` turns as the journal keeps them
(``metadata.turns``): offsets in ms from ``callerStopped``, one decimal, plus the token
``usage``. ``on_change`` (set by ``replies.py``) is told after each mark, so the figures reach
the call's record through the supervisor, the only writer of records.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

CALLER_STOPPED = "callerStopped"
FINAL_TRANSCRIPT = "finalTranscript"
STAGES = (CALLER_STOPPED, FINAL_TRANSCRIPT, "replyRequested", "firstToken", "firstSentence",
          "ttsFirstByte", "firstAudioOut", "heard")
TOTAL = "firstAudioOut"  # the total of a turn: caller stopped -> first audio out
MAX_TURNS = 50


class _Turn:
    __slots__ = ("marks", "usage")

    def __init__(self, at: float) -> None:
        self.marks: dict[str, float] = {CALLER_STOPPED: at}
        self.usage: dict[str, int] | None = None


class Waterfall:
    """One call's turns and their milestones."""

    def __init__(self, max_turns: int = MAX_TURNS) -> None:
        self.max_turns = max_turns
        self._turns: deque[_Turn] = deque(maxlen=max_turns)
        self._earlier: list[dict[str, Any]] = []  # journaled before a restart (offsets)
        self.on_change: Callable[[], None] | None = None

    def restore(self, journaled: Any) -> None:
        """Keep the turns a record already has (a call resumed after a restart), so the
        next ``turns()`` adds to them instead of replacing them."""
        if isinstance(journaled, list) and not self._turns:
            self._earlier = [t for t in journaled if isinstance(t, dict)][-self.max_turns:]

    def mark(self, stage: str, *, at: float) -> None:
        """Record ``stage`` of the current turn at ``at`` (seconds, the trio clock)."""
        if stage not in STAGES:
            raise ValueError(f"unknown waterfall stage {stage!r}")
        turn = self._turns[-1] if self._turns else None
        if stage == CALLER_STOPPED or (stage == FINAL_TRANSCRIPT
                                       and (turn is None or FINAL_TRANSCRIPT in turn.marks)):
            turn = _Turn(at)
            self._turns.append(turn)
        if turn is None or stage in turn.marks:
            return
        turn.marks[stage] = at
        self._changed()

    def usage(self, tokens: dict[str, int]) -> None:
        """The token use of the current turn's completion."""
        if self._turns and tokens:
            self._turns[-1].usage = dict(tokens)
            self._changed()

    def current(self) -> dict[str, float] | None:
        """The open turn's marks (seconds on the trio clock), for tests and the benchmark."""
        return dict(self._turns[-1].marks) if self._turns else None

    def turns(self) -> list[dict[str, Any]]:
        """The last ``max_turns`` turns, oldest first, as ``metadata.turns`` keeps them."""
        current = [_offsets(turn) for turn in self._turns]
        return [*self._earlier, *current][-self.max_turns:]

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()


def _offsets(turn: _Turn) -> dict[str, Any]:
    origin = turn.marks[CALLER_STOPPED]
    out: dict[str, Any] = {stage: round(max(0.0, turn.marks[stage] - origin) * 1000, 1)
                           for stage in STAGES if stage in turn.marks}
    if turn.usage:
        out["usage"] = turn.usage
    return out


__all__ = ["CALLER_STOPPED", "FINAL_TRANSCRIPT", "MAX_TURNS", "STAGES", "TOTAL", "Waterfall"]
