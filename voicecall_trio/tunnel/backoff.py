"""How long to wait before restarting a tunnel that died (pure).

Doubling from ``FIRST_S`` up to ``MAX_S``: a tunnel that dies at once (a revoked token, the
account's session limit) must not be restarted in a tight loop, and one that ran for a while
(``HEALTHY_S``) before dying starts again from the first delay.
"""

from __future__ import annotations

FIRST_S = 1.0
MAX_S = 60.0
HEALTHY_S = 60.0  # a run this long counts as healthy: the next failure waits FIRST_S again


def restart_delay(failures: int) -> float:
    """The wait before the next start after ``failures`` (>= 1) failures in a row."""
    return min(MAX_S, FIRST_S * 2.0 ** max(0, failures - 1))


def failures_after(failures: int, ran_for_s: float) -> int:
    """The count of failures in a row once a run of ``ran_for_s`` seconds has ended."""
    return 1 if ran_for_s >= HEALTHY_S else failures + 1
