"""What ``daemon.health`` and ``GET /healthz`` answer: built here, in one place.

The figures are read when asked (uptime, active calls, the public URL a tunnel may report
late); the daemon adds what only it knows (its HTTP addresses, whether every part started).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from . import __version__

# ``voicecall doctor``'s reachability probe: a webhook request through the public URL that
# carries this daemon's per-run token (``daemon.health`` ``probeToken``, readable only on the
# 0600 socket) gets it echoed back in this header, whatever the answer, which proves the
# request reached *this* daemon. Without the token, or with a wrong one, nothing changes.
PROBE_HEADER = "x-voicecall-probe"

if TYPE_CHECKING:
    from .supervisor import Supervisor


def health_report(supervisor: Supervisor, *, started: float, public_url: str | None,
                  listen: Sequence[str] | None = None, ready: bool | None = None
                  ) -> dict[str, Any]:
    """``started`` is ``time.monotonic()`` at start-up; ``listen`` and ``ready`` are left out
    when None (a bare RPC server in tests has neither)."""
    report: dict[str, Any] = {
        "ok": True,
        "version": __version__,
        "uptimeS": round(time.monotonic() - started, 3),
        "activeCalls": supervisor.active_count,
        "provider": supervisor.provider.name,
        "publicUrl": public_url,
    }
    if listen is not None:
        report["listen"] = list(listen)
    if ready is not None:
        report["ready"] = ready
    return report


__all__ = ["PROBE_HEADER", "health_report"]
