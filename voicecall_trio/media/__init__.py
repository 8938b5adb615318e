"""Media: carrier audio streams, and what the daemon does with them.

- ``stream``: the carrier-neutral seams (``MediaStream``, ``StreamHandler``, ``StreamSessions``,
  ``StreamAuthenticator``, ``StreamFraming``) and the events a framing decodes to.
- ``twilio_stream``: Twilio Media Streams framing (sans-IO): text in, events out; outbound
  ``media`` / ``mark`` / ``clear`` built as text.
- ``route``: the media WebSocket route the HTTP front hands ``GET <streaming.streamPath>``
  upgrades to: admission, upgrade verification, the ``start`` token, then frames to the call.
- ``route_stream``: one accepted stream (``RouteStream``, the ``MediaStream`` a call gets):
  ordered bounded sends, and the reading of frames into messages for the handler.
- ``route_limits``: the route's admission arithmetic (pending per IP, totals), pure.
- ``ws_frames``: client WebSocket frames split whole, the common one unmasked without wsproto.
"""
