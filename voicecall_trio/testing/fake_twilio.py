"""``FakeTwilio``: a local Twilio, for tests, demos and ``scripts/bench.py``.

This module is its public face: the class and every name a test imports. The parts live in
``testing/twilio/``, one job each (see that package's docstring).

It is two things at once, both on loopback:

* the REST subset the daemon uses, served over real HTTP with Basic auth
  (``AccountSid:AuthToken``) and Twilio-shaped JSON errors ``{code, message, more_info,
  status}``: ``POST .../Calls.json`` (create), ``POST .../Calls/{sid}.json`` (``Status=completed``
  or ``canceled`` hangs up, ``Twiml=`` or ``Url=`` replaces what a live call is doing) and
  ``GET .../Calls/{sid}.json``;
* the carrier side of every call: it sends the status callbacks the create asked for, fetches
  the TwiML from ``Url`` when the callee answers and follows it as Twilio does. Every webhook is
  signed with the auth token exactly as Twilio signs it (``compute_signature`` over the URL it
  posts to and the form parameters).

Following TwiML: ``<Say>`` text is recorded (``FakeCall.said``); a ``<Gather>`` is answered
with the callee's next scripted line as ``SpeechResult`` + ``Confidence`` (or ``Digits``); a
``<Redirect>`` is followed; ``<Pause>`` waits; ``<Hangup/>`` (or the end of a document) ends the
call with a ``completed`` callback; ``<Reject>`` refuses an inbound call (ends ``busy`` or
``no-answer`` by its ``reason``, nothing is answered); ``<Connect><Stream>`` opens a signed
media WebSocket to the daemon and streams the callee's audio (``Callee.stream_audio``,
``play_audio``; ``hello_ulaw()`` is the usual clip) as paced 20 ms frames, plays what the daemon
sends in real time, echoes marks, honours ``clear`` and records it all (``call.media``, one
``FakeStream`` each); the verb lasts until the daemon closes the socket (see
``twilio/stream.py``, with its injections: ``second_stream``, ``stop_stream``, ``drop_stream``,
``open_stream``). A REST update interrupts whatever verb is running, as on Twilio.

Time: every simulated duration (ringing, speaking, ``<Pause>``, a ``<Gather>`` timeout) is
multiplied by ``time_scale`` on the trio clock. With the default ``0`` nothing waits, except
that a wait that could only repeat itself (a ``<Pause>`` right before a ``<Redirect>``, the
daemon's hold loop; a ``<Gather>`` when the callee has nothing more to say) lasts until the
daemon updates the call or someone hangs up, so a test never spins.

Quirks (``Quirks``, or the attributes of ``fake.quirks`` at any time):
``duplicate`` sends a webhook kind twice (the identical request, after the first answer);
``retry`` sends a second identical request while the first is in flight and follows the
second answer (Twilio retrying a request it gave up on); ``out_of_order`` delivers the
pre-answer status callbacks after the answer (or after the final status);
``sign_url`` signs the URL exactly as posted, without its port (``"no-port"``) or with the
scheme's default port (``"default-port"``), the forms Twilio is known to sign.
``fail_rest`` makes the next REST request(s) fail with a status (a 5xx, or a 404 that
changes nothing). ``callee_hangup`` hangs up from the callee's side; the ``HANGUP`` script
entry does it when a ``<Gather>`` comes.

Twilio reaches a daemon on its public URL. ``tunnel(public, local)`` plays the tunnel: requests
for the public origin are signed for it, carry its ``Host`` (plus ``X-Forwarded-*``, as ngrok
adds them) and are sent to the local address.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from .twilio.rest import RestApi
from .twilio.stream import HELLO_ULAW_PATH, StreamRequest, hello_ulaw
from .twilio.values import (
    HANGUP,
    SILENCE,
    ApiRequest,
    Callee,
    Dtmf,
    FakeCall,
    FakeStream,
    PreparedWebhook,
    Quirks,
    WebhookDelivery,
)

__all__ = [
    "HANGUP",
    "HELLO_ULAW_PATH",
    "SILENCE",
    "ApiRequest",
    "Callee",
    "Dtmf",
    "FakeCall",
    "FakeStream",
    "FakeTwilio",
    "PreparedWebhook",
    "Quirks",
    "StreamRequest",
    "WebhookDelivery",
    "hello_ulaw",
]


class FakeTwilio(RestApi):
    """A local Twilio. Start it with ``async with FakeTwilio(...) as fake`` (or
    ``fake = await nursery.start(FakeTwilio(...).run)``), point ``twilio.apiBaseUrl`` at
    ``fake.url``."""

    HANGUP = HANGUP
    SILENCE = SILENCE

    @asynccontextmanager
    async def running(self) -> AsyncIterator[FakeTwilio]:
        """``async with fake.running():`` (the same as ``async with fake:``)."""
        async with self:
            yield self
