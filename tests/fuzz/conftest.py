"""Property-based fuzz targets: hostile bytes and params against the daemon's boundaries.

Each target runs a few hundred examples in the default suite and 10,000 under ``just fuzz``
(``VOICECALL_FUZZ=1``), through hypothesis profiles registered here. Targets must not set
``max_examples`` themselves, so that one switch scales them all. Every target asserts the
same three things: no crash, no 5xx (or -32603 for JSON-RPC), no hang (each example is
bounded by a trio deadline, never by a sleep).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_COMMON = {
    "deadline": None,  # loopback sockets and worker threads make per-example time noisy
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large,
                              HealthCheck.function_scoped_fixture],
    "derandomize": False,
}
settings.register_profile("suite", max_examples=200, **_COMMON)
settings.register_profile("fuzz", max_examples=10_000, **_COMMON)
settings.load_profile("fuzz" if os.environ.get("VOICECALL_FUZZ") else "suite")
