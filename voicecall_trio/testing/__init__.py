"""The shipped test kit: carrier simulators and helpers to run the daemon in-process.

Everything here talks only to loopback. ``FakeTwilio`` / ``FakeTelnyx`` are local carrier
simulators; ``running_daemon`` starts a whole daemon inside the caller's trio run;
``serve_asgi`` serves any ASGI app on 127.0.0.1 with an ephemeral port. ``FakeDirectory``
(a ``CallDirectory`` in memory) and ``FakeProvider`` (a ``Provider`` that records and obeys)
are the small pieces carrier, gate and front tests compose instead of writing their own.
``FakeTTS`` serves OpenAI's and ElevenLabs' speech APIs (streamed, in memory through
``StreamingASGITransport`` when a test needs the autojump clock).
``FakeChatCompletions`` is a local OpenAI-compatible Chat Completions server (``testing/chat.py``).
"""

from .chat import FakeChatCompletions
from .daemon import RunningDaemon, running_daemon
from .directory import FakeDirectory
from .fake_telnyx import FakeTelnyx
from .fake_twilio import FakeTwilio
from .provider import FakeProvider
from .server import serve_asgi
from .tts import FakeTTS

__all__ = [
    "FakeChatCompletions",
    "FakeDirectory",
    "FakeProvider",
    "FakeTTS",
    "FakeTelnyx",
    "FakeTwilio",
    "RunningDaemon",
    "running_daemon",
    "serve_asgi",
]
