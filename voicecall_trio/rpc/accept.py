"""The control socket's accept loop, which survives running out of file descriptors.

``trio.serve_listeners`` logs an error with a traceback for every failed ``accept()``: ten a
second for as long as the process is out of descriptors, burying everything else in the log.
Here a capacity error (EMFILE, ENFILE, ENOBUFS, ENOMEM) is normal weather: the loop pauses
briefly and tries again, counting the failures, and ``FailureLog`` lets one line out per
minute saying how many there were. Any other error ends the loop (its nursery reports it).
"""

from __future__ import annotations

import errno
import logging
import math
import os
from collections.abc import Awaitable, Callable

import trio

log = logging.getLogger("voicecall.rpc")

# the errors that mean "no room for another descriptor or buffer right now", not "broken"
CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
# short enough that a freed descriptor is used at once, long enough not to spin on the CPU
ACCEPT_RETRY_S = 0.1
# at most one log line per this many seconds while accepts keep failing
LOG_INTERVAL_S = 60.0


class FailureLog:
    """Counts failures and says when one may be logged: the first at once, then at most one
    per ``interval`` seconds, each covering the failures since the last (pure; ``now`` in)."""

    def __init__(self, interval: float = LOG_INTERVAL_S) -> None:
        self.interval = interval
        self.unreported = 0
        self.total = 0
        self._next_at = -math.inf

    def record(self, now: float) -> int | None:
        """Note one failure; the number to report now, or None to stay quiet."""
        self.unreported += 1
        self.total += 1
        if now < self._next_at:
            return None
        count, self.unreported = self.unreported, 0
        self._next_at = now + self.interval
        return count


async def accept_loop(
    listener: trio.abc.Listener[trio.abc.Stream],
    handler: Callable[[trio.abc.Stream], Awaitable[object]],
    nursery: trio.Nursery,
    failures: FailureLog | None = None,
    *,
    max_connections: int | None = None,
    open_connections: Callable[[], int] = lambda: 0,
) -> None:
    """Accept connections forever, each served by ``handler`` in ``nursery``.

    With ``max_connections``, a connection beyond it is closed at once (one log line a
    minute): clients of the socket are local, but a leaky gateway or a crowd of ``watch``
    processes must not eat the descriptors the HTTP front keeps in reserve for it."""
    failures = failures if failures is not None else FailureLog()
    refusals = FailureLog()
    while True:
        try:
            stream = await listener.accept()
        except OSError as exc:
            if exc.errno not in CAPACITY_ERRNOS:
                raise
            count = failures.record(trio.current_time())
            if count is not None:
                log.warning("rpc: accept failed %d time(s) (%s: %s); retrying every %.1f s",
                            count, errno.errorcode.get(exc.errno or 0, "?"),
                            os.strerror(exc.errno or 0), ACCEPT_RETRY_S)
            await trio.sleep(ACCEPT_RETRY_S)
            continue
        if max_connections is not None and open_connections() >= max_connections:
            count = refusals.record(trio.current_time())
            if count is not None:
                log.warning("rpc: %d connection(s) refused: already %d open (the limit)",
                            count, max_connections)
            await trio.aclose_forcefully(stream)
            continue
        nursery.start_soon(handler, stream)
