"""One open media WebSocket, Twilio's side of it: what the fake sends and how it answers.

It sends ``connected``, ``start`` and a ``media`` frame every 20 ms of the trio clock (on
deadlines from the first, so lateness never accumulates): the callee's queued audio if this is
the call's newest stream, else mu-law silence, as Twilio streams continuously; ``dtmf`` goes out
before the next frame. It plays the daemon's ``media`` in real time (``playback.Playback``),
echoes each ``mark`` once the audio before it has played, and on ``clear`` drops the rest and
echoes the pending marks at once. On ``FakeStream.end``: ``drop`` closes the socket under the
WebSocket (no close frame, no ``stop``); ``stop`` waits for the pacing and echo loops to finish
their sends (a send cancelled half-way would corrupt the framing), then sends ``stop`` and
closes with 1000. Whatever the daemon sends, it is recorded or counted as bad; nothing it sends
raises here.
"""

from __future__ import annotations

import base64
import binascii
import logging
import math
from collections.abc import Callable
from typing import Any

import msgspec
import trio
import trio_websocket

from .playback import Playback
from .values import FRAME_BYTES, FRAME_S, ULAW_SILENCE, FakeCall, FakeStream

log = logging.getLogger("voicecall.testing.twilio")

SILENCE_FRAME = ULAW_SILENCE * FRAME_BYTES
MAX_PROBLEMS = 20  # bad messages described per stream; beyond, only counted
MAX_PROBLEM_CHARS = 200  # a description quotes at most this much of what was wrong
CLOSE_WAIT_S = 2.0  # for the daemon's answer to our close frame
_ENCODE = msgspec.json.Encoder()
_DECODE = msgspec.json.Decoder()


class StreamSession:
    """Runs one accepted stream until its socket closes (``run``); records on ``stream``."""

    def __init__(self, ws: trio_websocket.WebSocketConnection, sock: trio.abc.Stream,
                 call: FakeCall, stream: FakeStream, *, account_sid: str, record_bytes: int,
                 changed: Callable[[], None]) -> None:
        self.ws, self.sock, self.call, self.stream = ws, sock, call, stream
        self.account_sid = account_sid
        self.record_bytes = record_bytes
        self.changed = changed  # the fake's change notification
        self.playback = Playback()
        self._pacing, self._echoing = trio.Event(), trio.Event()

    async def run(self, *, start: bool) -> None:
        """``start=False``: ``connected`` and then nothing (a silent pre-start socket)."""
        await self._send({"event": "connected", "protocol": "Call", "version": "1.0.0"},
                         numbered=False)
        async with trio.open_nursery() as nursery:
            if start and await self._send_start():
                nursery.start_soon(self._pace)
            else:
                self._pacing.set()
            nursery.start_soon(self._echo)
            nursery.start_soon(self._finish)
            await self._receive()
            nursery.cancel_scope.cancel()

    async def _send_start(self) -> bool:
        stream = self.stream
        return await self._send({"event": "start", "start": {
            "accountSid": self.account_sid, "streamSid": stream.stream_sid,
            "callSid": self.call.sid, "tracks": ["inbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            "customParameters": stream.parameters}})

    async def _pace(self) -> None:
        call, stream = self.call, self.stream
        try:
            began = trio.current_time()
            count = 0
            while stream._ending is None:
                while stream._dtmf:
                    digit = stream._dtmf.pop(0)
                    if not await self._send({"event": "dtmf", "dtmf": {
                            "track": "inbound_track", "digit": digit}}):
                        return
                    stream.dtmf_sent.append(digit)
                own = call._audio and call.stream is stream
                frame = call._audio.popleft() if own else SILENCE_FRAME
                if not await self._send({"event": "media", "media": {
                        "track": "inbound", "chunk": str(count + 1),
                        "timestamp": str(count * 20),
                        "payload": base64.b64encode(frame).decode("ascii")}}):
                    return
                count += 1
                stream.frames_sent = count
                if len(stream.sent) < self.record_bytes:
                    stream.sent += frame
                with trio.move_on_at(began + count * FRAME_S):
                    await stream._ended.wait()
        finally:
            self._pacing.set()

    async def _echo(self) -> None:
        """Echo each mark when the audio before it has played."""
        stream = self.stream
        try:
            while stream._ending is None:
                wake = stream._wake = trio.Event()
                due = self.playback.next_due()
                with trio.move_on_at(math.inf if due is None else due):
                    await wake.wait()
                if stream._ending is not None:
                    return
                for name in self.playback.pop_due(trio.current_time()):
                    if not await self._echo_mark(name):
                        return
        finally:
            self._echoing.set()

    async def _finish(self) -> None:
        """On ``end()``: drop the socket, or (after the loops stopped) send stop and close."""
        stream = self.stream
        await stream._ended.wait()
        if stream._ending == "drop":
            stream.closed_by = "drop"
            await self.sock.aclose()
            return
        await self._pacing.wait()
        await self._echoing.wait()
        if stream._late_stop:
            await self.call.done.wait()
        if await self._send({"event": "stop", "stop": {
                "accountSid": self.account_sid, "callSid": self.call.sid}}):
            stream.stop_sent = True
            self.changed()
        if self.ws.closed is None:
            stream.closed_by = "fake"
            with trio.move_on_after(CLOSE_WAIT_S):
                await self.ws.aclose(1000)
            await self.sock.aclose()

    async def _receive(self) -> None:
        """Read what the daemon sends until the socket closes."""
        stream = self.stream
        while True:
            try:
                message = await self.ws.get_message()
            except trio_websocket.ConnectionClosed as closed:
                reason = closed.reason
                if stream.closed_by is None:
                    stream.closed_by = "daemon"
                stream.close_code = reason.code if reason else None
                stream.close_reason = reason.reason if reason else None
                return
            problem = await self._handle(message)
            if problem is not None:
                problem = problem[:MAX_PROBLEM_CHARS]
                stream.bad_messages += 1
                if len(stream.problems) < MAX_PROBLEMS:
                    stream.problems.append(problem)
                if stream.bad_messages == 1:
                    log.info("stream %s: bad message from the daemon (%s); further ones are "
                             "only counted", stream.stream_sid, problem)
            self.changed()

    async def _handle(self, message: str | bytes) -> str | None:
        """Apply one message; a description of what is wrong with it, or None."""
        stream = self.stream
        if isinstance(message, bytes):
            return "binary message (Twilio takes text)"
        try:
            doc = _DECODE.decode(message)
        except msgspec.DecodeError:
            return "not JSON"
        if not isinstance(doc, dict):
            return "not a JSON object"
        event = doc.get("event")
        if doc.get("streamSid") != stream.stream_sid:
            return f"{event!r} with streamSid {doc.get('streamSid')!r}, not this stream's"
        now = trio.current_time()
        body = doc.get(event) if isinstance(event, str) else None
        if event == "media":
            payload = body.get("payload") if isinstance(body, dict) else None
            if not isinstance(payload, str):
                return "media without a payload string"
            try:
                audio = base64.b64decode(payload, validate=True)
            except binascii.Error:
                return "media payload is not base64"
            self.playback.audio(now, len(audio))
            if stream.received_bytes < self.record_bytes:
                stream.received += audio
                stream.arrivals.append((now, audio))
            stream.received_bytes += len(audio)
        elif event == "mark":
            name = body.get("name") if isinstance(body, dict) else None
            if not isinstance(name, str):
                return "mark without a name string"
            stream.marks.append(name)
            self.playback.mark(now, name)
            stream._wake.set()
        elif event == "clear":
            names, dropped = self.playback.clear(now)
            stream.clears.append(now)
            stream.cleared_bytes += dropped
            stream._wake.set()
            for name in names:
                if not await self._echo_mark(name):
                    break
        else:
            return f"unknown event {event!r}"
        return None

    async def _echo_mark(self, name: str) -> bool:
        sent = await self._send({"event": "mark", "mark": {"name": name}})
        if sent:
            self.stream.echoed.append((trio.current_time(), name))
            self.changed()
        return sent

    async def _send(self, message: dict[str, Any], *, numbered: bool = True) -> bool:
        """Send one message in Twilio's shape; False once the socket is closed."""
        if numbered:
            self.stream._seq += 1
            message = {"event": message["event"], "sequenceNumber": str(self.stream._seq),
                       **message, "streamSid": self.stream.stream_sid}
        try:
            await self.ws.send_message(_ENCODE.encode(message).decode("utf-8"))
        except trio_websocket.ConnectionClosed:
            return False
        return True
