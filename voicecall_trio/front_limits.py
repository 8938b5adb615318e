"""The front's connection cap: how many to allow, which one to shed, and a throttled warning.

The number of open HTTP connections is capped (``serve.maxConnections``, lowered below the
process's file descriptor limit so the control socket and the journal always have
descriptors). At the cap a new connection sheds the oldest idle one, else the one whose
request has been arriving longest; one being handled is never shed, and when every connection
is, the new one is closed, with a warning that is logged once a minute, not once a connection.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from typing import Protocol, TypeVar

from .handover import BUSY

log = logging.getLogger("voicecall.http")

# descriptors kept free below RLIMIT_NOFILE for everything that is not an HTTP connection:
# the control socket and its clients, the journal, the store lock, listeners, outgoing
# REST connections, the event loop's own
FD_RESERVE = 128
LOG_EVERY_S = 60.0  # repeated warnings (accept failures, a full house): one line this often


def connection_cap(configured: int, fd_limit: int, reserve: int = FD_RESERVE) -> int:
    """The number of HTTP connections to allow: ``configured``, lowered so that ``reserve``
    descriptors stay free below ``fd_limit`` (the soft RLIMIT_NOFILE), and at least 1."""
    return max(1, min(configured, fd_limit - reserve))


class Throttled:
    """A warning that may recur many times a second, logged at most once per ``every_s``
    with the number of times it happened since the last line (and no traceback)."""

    def __init__(self, message: str, every_s: float = LOG_EVERY_S,
                 logger: logging.Logger = log) -> None:
        self.message = message
        self.log = logger
        self.every_s = every_s
        self.count = 0
        self._next_at = -math.inf

    def __call__(self, now: float, detail: str) -> None:
        self.count += 1
        if now >= self._next_at:
            self.log.warning("%s: %s (%d time(s) since the last such line)", self.message,
                             detail, self.count)
            self.count = 0
            self._next_at = now + self.every_s


class Phased(Protocol):
    def phase(self) -> tuple[int, float]: ...


_C = TypeVar("_C", bound=Phased)


def shed_candidate(connections: Iterable[_C]) -> _C | None:
    """The connection to close to make room: the lowest ``phase()`` (idle before receiving,
    the longest-waiting first); None if every one is busy (being handled: never shed)."""
    victim: _C | None = None
    best = (BUSY, 0.0)
    for connection in connections:
        phase = connection.phase()
        if phase < best:
            victim, best = connection, phase
    return victim
