"""A log line that hostile traffic can repeat thousands of times a second, kept to a budget.

Each refusal of outside input (a forged webhook, an oversized body, an unreadable form) is
worth a line, but a flood of them must not flood the log: that costs disk, hides everything
else, and is itself a denial of service. A ``LogBudget`` lets ``burst`` lines through per
``every_s`` window for one kind of line, counts the rest, and says how many were dropped on
the first line of the next window. Stdlib only; the clock is injected for tests.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

EVERY_S = 60.0
BURST = 10


class LogBudget:
    def __init__(self, logger: logging.Logger, level: int = logging.INFO, *,
                 every_s: float = EVERY_S, burst: int = BURST,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.log = logger
        self.level = level
        self.every_s = every_s
        self.burst = burst
        self.clock = clock
        self.sent = 0
        self.dropped = 0
        self._window_end = -1.0

    def __call__(self, message: str, *args: object) -> None:
        now = self.clock()
        if now >= self._window_end:
            self._window_end = now + self.every_s
            self.sent = 0
        if self.sent >= self.burst:
            self.dropped += 1
            return
        self.sent += 1
        if self.dropped:
            message += " (%d like it not logged in the last %.0f s)"
            args = (*args, self.dropped, self.every_s)
            self.dropped = 0
        self.log.log(self.level, message, *args)


__all__ = ["BURST", "EVERY_S", "LogBudget"]
