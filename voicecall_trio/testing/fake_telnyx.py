"""``FakeTelnyx``: a local Telnyx Call Control v2 carrier, for tests, demos and benchmarks.

This module is its public face: the class and every name a test imports. The parts live in
``testing/telnyx/``, one job each (see that package's docstring).

It serves the REST subset the daemon uses (on loopback, port 0)::

    POST /v2/calls                                   -> data.call_control_id
    POST /v2/calls/{id}/actions/{answer,reject,speak,transcription_start,
                                 transcription_stop,hangup}
    GET  /v2/calls/{id}                              -> data.is_alive

checks ``Authorization: Bearer <api key>``, records every request, and then behaves like
Telnyx: it sends Ed25519-signed webhooks (``timestamp|raw body``, with a key pair the test
owns) to the daemon: ``call.initiated``, ``call.answered``, ``call.speak.started`` /
``call.speak.ended`` after each speak, ``call.transcription`` with the callee's next
scripted line once transcription is on, and ``call.hangup``.

Webhooks of one call are delivered one at a time, in order, each after the previous one was
answered (so a test sees a deterministic sequence); different calls are independent. The
quirks a real carrier has are injected on demand: a delivery sent twice byte for byte
(``duplicate_next``), a Telnyx retry of the same event later with a new signature
(``retry_next``), an event held back until after the call's next one (``hold_next``), 5xx
answers to the next REST requests (``fail_next``), and a callee who hangs up
(``callee_hangup``).

Use::

    async with FakeTelnyx() as fake:     # or: fake = await nursery.start(FakeTelnyx().run)
        config = {"provider": "telnyx", "telnyx": {"apiKey": fake.api_key,
                  "connectionId": fake.connection_id, "publicKey": fake.public_key,
                  "apiBaseUrl": fake.url}, ...}
        ...
        fake.webhook_url = daemon_webhook_url        # the connection's webhook URL (inbound)
        ccid = fake.start_inbound("+14155551234", "+15550001234")
        await fake.wait_request("answer", ccid)

Nothing here reaches beyond loopback; everything waits on events, never on sleeps (the
only timers are the optional ``answer_delay`` / ``speak_duration`` of the simulated callee).
"""

from __future__ import annotations

from .telnyx.rest import RestApi
from .telnyx.values import Callee, Delivery, FakeCall, RecordedRequest

__all__ = ["Callee", "Delivery", "FakeCall", "FakeTelnyx", "RecordedRequest"]


class FakeTelnyx(RestApi):
    """A Telnyx Call Control v2 simulator on loopback (see the module docstring)."""
