"""The shipped test kit: carrier simulators and helpers to run the daemon in-process.

Everything here talks only to loopback. ``FakeTwilio`` / ``FakeTelnyx`` are local carrier
simulators; ``running_daemon`` starts a whole daemon inside the caller's trio run;
``serve_asgi`` serves any ASGI app on 127.0.0.1 with an ephemeral port.
"""

from .daemon import RunningDaemon, running_daemon
from .fake_telnyx import FakeTelnyx
from .fake_twilio import FakeTwilio
from .server import serve_asgi

__all__ = ["FakeTelnyx", "FakeTwilio", "RunningDaemon", "running_daemon", "serve_asgi"]
