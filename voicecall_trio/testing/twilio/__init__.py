"""The parts of ``FakeTwilio`` (``testing/fake_twilio.py``), one job per module.

Each layer is a class that adds one job to the one below it and calls only downwards, so a
reader can take them in order:

================== ================================================================
``values``         callees and their scripts, quirks, records of requests and webhooks, calls
``base``           state, configuration, change notifications, the simulated clock
``webhooks``       the signed-webhook sender and its quirks (duplicate, retry, URL forms)
``status``         a call's status moves, the status callbacks they owe, ending a call once
``playback``       what the caller hears of a stream: queued audio, when marks are due
``stream_session`` one open media WebSocket: paced frames out, media/mark/clear in
``stream``         media streams: ``<Connect><Stream>`` opens, records and ends them
``player``         the TwiML player (``<Say>``, ``<Gather>``, ``<Redirect>``, ...)
``callee``         the callee simulation: ringing, answering, inbound offers, hanging up
``rest``           the REST API (``Calls`` create / update / fetch) as an ASGI app
================== ================================================================

``FakeTwilio``     itself is ``rest.RestApi`` plus its ``running()`` helper. Import from
``voicecall_trio.testing.fake_twilio``; these modules are not a public API.
"""
