"""The parts of ``FakeTelnyx`` (``testing/fake_telnyx.py``), one job per module.

Each layer is a class that adds one job to the one below it and calls only downwards:

=============== ===================================================================
``values``      callees and their scripts, records of requests and deliveries, calls, quirk rules
``base``        state, keys and addresses, arming quirks, change notifications, ``wait_*``
``webhooks``    the Ed25519-signed webhook sender: envelopes, per-call ordered delivery, quirks
``callee``      the call simulation: placing, offering, answering, speaking, transcripts, hangup
``rest``        the Call Control REST API (create, actions, get) as an ASGI app
=============== ===================================================================

``FakeTelnyx`` itself is ``rest.RestApi``. Import from ``voicecall_trio.testing.fake_telnyx``;
these modules are not a public API.
"""
