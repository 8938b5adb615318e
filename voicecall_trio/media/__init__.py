"""The media layer: a call's audio over a carrier's media WebSocket, carrier-neutral.

=================  ======================================================================
``mulaw``          G.711 mu-law <-> int16 by table (*pure*)
``resample``       ``ToUlaw8k``: streaming 24 kHz s16le -> 8 kHz mu-law, band-limited (*pure*)
``framer``         ``Framer``: mu-law of any chunking -> 160-byte (20 ms) frames (*pure*)
``pacing``         ``Pacer``: when each frame may leave; ``heard_ms`` for barge-in (*pure*)
``player``         ``Player``: a call's utterances as paced frames + marks, ``clear`` (trio)
``stream``         the seams: ``MediaStream``, ``StreamHandler``, ``StreamSessions``,
                   ``StreamAuthenticator``, ``StreamFraming`` and the decoded events
``twilio_stream``  Twilio Media Streams framing: text in, events out (*pure*)
``route``          the WebSocket route the front hands ``GET <streamPath>`` upgrades to:
                   admission, upgrade verification, the ``start`` token, frames (trio)
``route_stream``   ``RouteStream``: the ``MediaStream`` a call gets (sends under a lock)
``route_limits``   the route's admission arithmetic (*pure*)
``ws_frames``      whole client frames out of received bytes; the common masked text frame
                   read without wsproto (*pure*)
=================  ======================================================================

This file imports nothing, so ``import voicecall_trio.media.<x>`` costs only what ``x`` needs
(numpy and soxr are loaded by ``mulaw`` and ``resample`` alone).
"""
