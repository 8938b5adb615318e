"""Realtime transcription of a call's audio: OpenAI Realtime in its transcription intent.

``realtime.py`` is the sans-IO codec: the client messages (``session_update``, ``append``) as
text, the server's events decoded with msgspec into the ``SttEvent`` values a call consumes,
deltas joined into interim text and finals released in committed order (``order.py`` keeps
that order, bounded). ``pump.py`` is the trio shell: ``RealtimeTranscriber`` holds a call's
audio while it connects, sends it batched and byte-identical, reconnects after a drop, and
gives up (``on_lost``) after a few failures in a row. ``ws_client.py`` is its lean WebSocket
client: wsproto for the handshake and what the server sends, appends framed and masked by
hand on the per-frame path.

This package never imports the daemon's call or supervisor modules: the pump takes plain
values and two callbacks, and the call's voice session decides what a transcript means. The
codec modules import no trio, so they are tested as pure functions.
"""
