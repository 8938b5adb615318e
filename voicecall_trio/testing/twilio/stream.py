"""The fake Twilio's media streams: it follows ``<Connect><Stream>`` as Twilio does.

On ``<Connect><Stream url=...>`` the fake opens a WebSocket (trio-websocket, over
``connect_stream``) to the daemon. It never resolves names: a ``wss://`` URL reaches the
daemon through the tunnel registered for its origin (``tunnel()``, as for webhooks: the
public ``Host`` and ``X-Forwarded-*`` go along), or directly when it names a loopback
address. The upgrade carries ``X-Twilio-Signature``: HMAC-SHA1 of the URL exactly as in the
TwiML (no parameters, as for a GET), under the ``sign_url`` quirk like every webhook.

Then, as Twilio: ``connected``, ``start`` (``customParameters`` = the ``<Parameter>``s) and
one ``media`` frame of 160 bytes every 20 ms on the trio clock (deadline-paced, so no drift):
the callee's audio (``Callee.stream_audio``, ``play_audio``) or mu-law silence, continuously.
What the daemon sends plays in real time (``playback.Playback``): a ``mark`` is echoed once the
audio before it has played, ``clear`` drops the rest and echoes pending marks at once. When
the daemon closes the socket the ``<Connect>`` verb ends and the player goes on with the next
verb (``action`` if given); when the verb ends otherwise (hang-up, REST update) the fake sends
``stop`` and closes. Everything is recorded on a ``FakeStream`` (``call.media``).

Injections for tests of the daemon: ``second_stream`` (takeover), ``stop_stream(late=True)``
(``stop`` only after the call's final callback), ``drop_stream`` (socket gone without a close
frame), ``open_stream(signature=..., parameters=...)`` (unsigned, wrongly signed, bad token,
``start=False`` for a silent pre-start connection), ``stream_autoconnect=False`` to drive
streams by hand. A send is never cancelled half-way (that would corrupt the framing): the
pacing and echo loops stop on their own before ``stop`` goes out.
"""

from __future__ import annotations

import base64
import binascii
import logging
import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast
from urllib.parse import urlsplit

import msgspec
import trio
import trio_websocket

from ...providers.twilio.signature import compute_signature, port_variants
from .base import _new_sid, _origin
from .playback import Playback
from .status import CallStatus
from .values import (
    FRAME_BYTES,
    FRAME_S,
    ULAW_SILENCE,
    FakeCall,
    FakeStream,
)

log = logging.getLogger("voicecall.testing.twilio")

HELLO_ULAW_PATH = Path(__file__).resolve().parent.parent / "audio" / "hello_table_for_two_8k.ulaw"
SILENCE_FRAME = ULAW_SILENCE * FRAME_BYTES
USER_AGENT = "Twilio.TmeWs/1.0"
MAX_MESSAGE_BYTES = 256 * 1024  # a daemon message larger than this closes the socket (1009)
MAX_PROBLEMS = 20  # bad messages described per stream; beyond, only counted
MAX_PROBLEM_CHARS = 200  # a description quotes at most this much of what was wrong
MAX_QUEUED_AUDIO_S = 600.0  # play_audio refuses more than this much waiting audio
CLOSE_WAIT_S = 2.0  # for the daemon's answer to our close frame
Signature = Literal["valid", "missing", "wrong"]
_ENCODE = msgspec.json.Encoder()
_DECODE = msgspec.json.Decoder()


def hello_ulaw() -> bytes:
    """The vectors' "Hello, I would like to book a table for two": 8 kHz mu-law, 26080 bytes
    (163 frames, 3.26 s), the callee audio a test usually streams."""
    return HELLO_ULAW_PATH.read_bytes()


@dataclass(frozen=True, slots=True)
class StreamRequest:
    """How the fake opens a media WebSocket for a stream URL: the address it connects to
    (the tunnel's local end, or the URL's own loopback host) and the upgrade it sends."""

    url: str  # as in the TwiML
    signed_url: str
    connect_host: str
    connect_port: int
    host_header: str
    resource: str  # path and query
    headers: tuple[tuple[str, str], ...]

    @property
    def signature(self) -> str | None:
        return next((v for k, v in self.headers if k == "X-Twilio-Signature"), None)


class MediaStreams(CallStatus):
    """Opens, feeds and records media streams; ``<Connect>`` (``_connect``) waits on them."""

    # -- for tests -------------------------------------------------------------------------

    def play_audio(self, sid: str, ulaw: bytes) -> None:
        """Queue callee audio (8 kHz mu-law) on the call's stream, after what is queued."""
        call = self.calls[sid]
        if (len(call._audio) + len(ulaw) / FRAME_BYTES) * FRAME_S > MAX_QUEUED_AUDIO_S:
            raise ValueError(f"more than {MAX_QUEUED_AUDIO_S:.0f} s of audio queued")
        for start in range(0, len(ulaw), FRAME_BYTES):
            frame = ulaw[start:start + FRAME_BYTES]
            call._audio.append(frame.ljust(FRAME_BYTES, ULAW_SILENCE))

    def send_dtmf(self, sid: str, digits: str) -> None:
        """The callee presses keys: one ``dtmf`` message per digit on the call's stream."""
        stream = self.calls[sid].stream
        if stream is None:
            raise ValueError("the call has no open media stream")
        stream._dtmf.extend(digits)

    async def open_stream(
        self,
        sid: str,
        *,
        url: str | None = None,
        parameters: dict[str, str] | None = None,
        signature: Signature = "valid",
        start: bool = True,
    ) -> FakeStream:
        """Open a media stream for a call (by default to its last ``<Stream>``, with its
        ``<Parameter>``s); returns once the upgrade was answered (see ``FakeStream.state``).
        ``start=False`` sends ``connected`` and then nothing (a silent pre-start socket)."""
        call = self.calls[sid]
        last = call.streams[-1] if call.streams else None
        if url is None:
            if last is None:
                raise ValueError("the call had no <Stream>: pass url=")
            url = last["url"]
        if parameters is None:
            parameters = {k: v for k, v in (last or {}).items() if k != "url"}
        if self._nursery is None:
            raise RuntimeError("FakeTwilio is not running")
        stream: FakeStream = await self._nursery.start(
            self._run_stream, call, url, dict(parameters), signature, start)
        return stream

    async def second_stream(self, sid: str) -> FakeStream:
        """Another stream for the same call (a takeover): same URL and parameters."""
        return await self.open_stream(sid)

    def stop_stream(self, sid: str, *, late: bool = False) -> None:
        """Send ``stop`` and close the call's open streams now; ``late=True``: only once the
        call has ended and its final status callback was delivered (a late ``stop``; none
        if the daemon has closed the socket by then: see ``FakeStream.stop_sent``)."""
        for stream in self.calls[sid].media:
            if late:
                stream._late_stop = True
            elif stream.state in ("open", "connecting"):
                stream.end("stop")

    def drop_stream(self, sid: str, stream_sid: str | None = None) -> None:
        """Drop the socket of the call's newest open stream (or ``stream_sid``'s) without a
        close frame or ``stop``, as a network failure would."""
        call = self.calls[sid]
        stream = call.stream if stream_sid is None else next(
            (s for s in call.media if s.stream_sid == stream_sid), None)
        if stream is not None:
            stream.end("drop")

    def stream_request(self, url: str, signature: Signature = "valid") -> StreamRequest | None:
        """Where and how a stream for ``url`` is opened; None when the fake cannot reach it."""
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            return None
        web_scheme = "https" if parts.scheme == "wss" else "http"
        headers: list[tuple[str, str]] = [("User-Agent", USER_AGENT)]
        route = self.tunnels.get(_origin(f"{web_scheme}://{parts.netloc}"))
        if route is not None:
            local = urlsplit(route.local)
            host, port = local.hostname or "", local.port or (443 if local.scheme == "https"
                                                               else 80)
            if route.forwarded_headers:
                headers += [("X-Forwarded-Proto", web_scheme),
                            ("X-Forwarded-Host", parts.netloc),
                            ("X-Forwarded-For", "203.0.113.10")]
        elif _is_loopback(parts.hostname):
            host, port = parts.hostname, parts.port or (443 if parts.scheme == "wss" else 80)
        else:
            return None
        signed_url = url
        if self.quirks.sign_url != "exact":  # the port forms, with wss's default port 443
            forms = port_variants(web_scheme + url[len(parts.scheme):])
            signed_url = parts.scheme + (forms[0] if self.quirks.sign_url == "no-port"
                                         else forms[-1])[len(web_scheme):]
        if signature == "valid":
            headers.append(("X-Twilio-Signature",
                            compute_signature(self.auth_token, signed_url, ())))
        elif signature == "wrong":
            headers.append(("X-Twilio-Signature",
                            compute_signature(self.auth_token + "-wrong", signed_url, ())))
        resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return StreamRequest(url, signed_url, host, port, parts.netloc, resource, tuple(headers))

    # -- the <Connect> verb ----------------------------------------------------------------

    async def _connect(self, call: FakeCall, verb: ET.Element) -> bool:
        """Run ``<Connect><Stream>`` until its streams are over (False: no ``<Stream>``)."""
        elements = list(verb.iter("Stream"))
        if not elements:
            call.unsupported.append("Connect")
            return False
        for element in elements:  # recorded as before: url + <Parameter>s
            info = {"url": element.get("url", "")}
            info.update(_parameters(element))
            call.streams.append(info)
        self._notify()
        url, parameters = elements[0].get("url", ""), _parameters(elements[0])
        first = len(call.media)
        try:
            if self.stream_autoconnect:
                stream = await self.open_stream(call.sid, url=url, parameters=parameters)
                if stream.state == "unroutable":  # not the daemon's fault: no error 31920
                    log.info("stream to %s: no tunnel for it and not loopback; the call "
                             "stays connected without media", url)
                    await trio.sleep_forever()  # as before streams: until updated or ended
                if stream.state in ("refused", "failed"):  # Twilio goes on with the TwiML
                    call.errors.append(f"31920: Stream - WebSocket - Handshake Error "
                                       f"({stream.error})")
                    self._notify()
                else:
                    await _until_over(call, first)
            else:  # the test opens streams itself; the verb lasts until they are all closed
                await _until_over(call, first)
        finally:
            for stream in call.media[first:]:
                if stream.state in ("open", "connecting"):
                    stream.end("stop")
        return True

    # -- one stream ------------------------------------------------------------------------

    def _moved(self, call: FakeCall) -> None:
        """A stream of ``call`` changed state: wake its ``<Connect>`` (and every waiter)."""
        call._media_changed.set()
        call._media_changed = trio.Event()
        self._notify()

    async def _run_stream(self, call: FakeCall, url: str, parameters: dict[str, str],
                          signature: Signature, start: bool,
                          *, task_status: trio.TaskStatus[FakeStream]) -> None:
        stream = FakeStream(call.sid, _new_sid("MZ"), url, parameters, None)
        call.media.append(stream)
        self._moved(call)
        request = self.stream_request(url, signature)
        if request is None:
            stream.state = "unroutable"
            stream.error = f"cannot reach {url} (FakeTwilio reaches tunnels and loopback only)"
            self._moved(call)
            task_status.started(stream)
            return
        stream.signature = request.signature
        reported = False

        def report() -> None:
            nonlocal reported
            if not reported:
                reported = True
                task_status.started(stream)

        try:
            await self._open_and_run(call, stream, request, start, report)
        except* trio_websocket.ConnectionRejected as group:
            status = cast(trio_websocket.ConnectionRejected, group.exceptions[0]).status_code
            stream.state, stream.refused, stream.error = "refused", status, f"HTTP {status}"
            log.info("stream %s to %s refused: HTTP %s", stream.stream_sid, url, status)
        except* (trio_websocket.HandshakeError, OSError, trio.BrokenResourceError,
                 trio.ClosedResourceError, trio.TooSlowError) as group:
            exc = group.exceptions[0]
            stream.state, stream.error = "failed", f"{type(exc).__name__}: {exc}"
            log.info("stream %s to %s failed: %s", stream.stream_sid, url, stream.error)
        finally:
            if stream.state in ("open", "connecting"):
                stream.state = "closed" if stream.opened_at is not None else "failed"
            if stream.opened_at is not None:
                stream.closed_at = trio.current_time()
            self._moved(call)
        report()

    async def _open_and_run(self, call: FakeCall, stream: FakeStream, request: StreamRequest,
                            start: bool, report: Any) -> None:
        with trio.fail_after(self.stream_handshake_timeout_s):
            sock = await self.connect_stream(request.connect_host, request.connect_port)
        try:
            async with trio.open_nursery() as ws_nursery:
                with trio.fail_after(self.stream_handshake_timeout_s):
                    ws = await trio_websocket.wrap_client_stream(
                        ws_nursery, cast(Any, sock), request.host_header, request.resource,
                        extra_headers=[(k.encode(), v.encode()) for k, v in request.headers],
                        max_message_size=MAX_MESSAGE_BYTES)
                stream.state, stream.opened_at = "open", trio.current_time()
                self._moved(call)
                report()
                await self._session(call, stream, ws, sock, start)
                ws_nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await sock.aclose()

    async def _session(self, call: FakeCall, stream: FakeStream,
                       ws: trio_websocket.WebSocketConnection, sock: trio.abc.Stream,
                       start: bool) -> None:
        playback = Playback()
        pacing, echoing = trio.Event(), trio.Event()
        await self._send_ws(ws, stream, {"event": "connected", "protocol": "Call",
                                      "version": "1.0.0"}, numbered=False)
        async with trio.open_nursery() as nursery:
            if start and await self._send_start(ws, call, stream):
                nursery.start_soon(self._pace, ws, call, stream, pacing)
            else:
                pacing.set()
            nursery.start_soon(self._echo, ws, stream, playback, echoing)
            nursery.start_soon(self._finish_stream, ws, sock, call, stream, pacing, echoing)
            await self._receive(ws, stream, playback)
            nursery.cancel_scope.cancel()

    async def _send_start(self, ws: trio_websocket.WebSocketConnection, call: FakeCall,
                          stream: FakeStream) -> bool:
        if not call._stream_audio_queued:
            call._stream_audio_queued = True
            if call.callee.stream_audio:
                self.play_audio(call.sid, call.callee.stream_audio)
        return await self._send_ws(ws, stream, {"event": "start", "start": {
            "accountSid": self.account_sid, "streamSid": stream.stream_sid,
            "callSid": call.sid, "tracks": ["inbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            "customParameters": stream.parameters}})

    async def _pace(self, ws: trio_websocket.WebSocketConnection, call: FakeCall,
                    stream: FakeStream, done: trio.Event) -> None:
        """One frame every 20 ms from the first, on deadlines (a late frame is not carried
        over into the next); the callee's audio only on the call's newest stream."""
        try:
            began = trio.current_time()
            count = 0
            while stream._ending is None:
                while stream._dtmf:
                    digit = stream._dtmf.pop(0)
                    if not await self._send_ws(ws, stream, {"event": "dtmf", "dtmf": {
                            "track": "inbound_track", "digit": digit}}):
                        return
                    stream.dtmf_sent.append(digit)
                frame = call._audio.popleft() if call._audio and call.stream is stream \
                    else SILENCE_FRAME
                if not await self._send_ws(ws, stream, {"event": "media", "media": {
                        "track": "inbound", "chunk": str(count + 1),
                        "timestamp": str(count * 20),
                        "payload": base64.b64encode(frame).decode("ascii")}}):
                    return
                count += 1
                stream.frames_sent = count
                if len(stream.sent) < self.stream_record_bytes:
                    stream.sent += frame
                with trio.move_on_at(began + count * FRAME_S):
                    await stream._ended.wait()
        finally:
            done.set()

    async def _echo(self, ws: trio_websocket.WebSocketConnection, stream: FakeStream,
                    playback: Playback, done: trio.Event) -> None:
        """Echo each mark when the audio before it has played."""
        try:
            while stream._ending is None:
                wake = stream._wake = trio.Event()
                due = playback.next_due()
                with trio.move_on_at(math.inf if due is None else due):
                    await wake.wait()
                if stream._ending is not None:
                    return
                for name in playback.pop_due(trio.current_time()):
                    if not await self._echo_mark(ws, stream, name):
                        return
        finally:
            done.set()

    async def _finish_stream(self, ws: trio_websocket.WebSocketConnection,
                             sock: trio.abc.Stream, call: FakeCall, stream: FakeStream,
                             pacing: trio.Event, echoing: trio.Event) -> None:
        """On ``end()``: drop the socket, or (after the loops stopped) send stop and close."""
        await stream._ended.wait()
        if stream._ending == "drop":
            stream.closed_by = "drop"
            await sock.aclose()
            return
        await pacing.wait()
        await echoing.wait()
        if stream._late_stop:
            await call.done.wait()
        if await self._send_ws(ws, stream, {"event": "stop", "stop": {
                "accountSid": self.account_sid, "callSid": call.sid}}):
            stream.stop_sent = True
            self._notify()
        if ws.closed is None:
            stream.closed_by = "fake"
            with trio.move_on_after(CLOSE_WAIT_S):
                await ws.aclose(1000)
            await sock.aclose()

    async def _receive(self, ws: trio_websocket.WebSocketConnection, stream: FakeStream,
                       playback: Playback) -> None:
        """Read what the daemon sends until the socket closes; never raises for bad input."""
        while True:
            try:
                message = await ws.get_message()
            except trio_websocket.ConnectionClosed as closed:
                reason = closed.reason
                if stream.closed_by is None:
                    stream.closed_by = "daemon"
                stream.close_code = reason.code if reason else None
                stream.close_reason = reason.reason if reason else None
                return
            problem = await self._handle(ws, stream, playback, message)
            if problem is not None:
                stream.bad_messages += 1
                if len(stream.problems) < MAX_PROBLEMS:
                    stream.problems.append(problem[:MAX_PROBLEM_CHARS])
                if stream.bad_messages == 1:
                    log.info("stream %s: bad message from the daemon (%s); further ones are "
                             "only counted", stream.stream_sid, problem[:MAX_PROBLEM_CHARS])
            self._notify()

    async def _handle(self, ws: trio_websocket.WebSocketConnection, stream: FakeStream,
                      playback: Playback, message: str | bytes) -> str | None:
        """Apply one message; a description of what is wrong with it, or None."""
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
            playback.audio(now, len(audio))
            if stream.received_bytes < self.stream_record_bytes:
                stream.received += audio
                stream.arrivals.append((now, audio))
            stream.received_bytes += len(audio)
        elif event == "mark":
            name = body.get("name") if isinstance(body, dict) else None
            if not isinstance(name, str):
                return "mark without a name string"
            stream.marks.append(name)
            playback.mark(now, name)
            stream._wake.set()
        elif event == "clear":
            names, dropped = playback.clear(now)
            stream.clears.append(now)
            stream.cleared_bytes += dropped
            stream._wake.set()
            for name in names:
                if not await self._echo_mark(ws, stream, name):
                    break
        else:
            return f"unknown event {event!r}"
        return None

    async def _echo_mark(self, ws: trio_websocket.WebSocketConnection, stream: FakeStream,
                         name: str) -> bool:
        sent = await self._send_ws(ws, stream, {"event": "mark", "mark": {"name": name}})
        if sent:
            stream.echoed.append((trio.current_time(), name))
            self._notify()
        return sent

    async def _send_ws(self, ws: trio_websocket.WebSocketConnection, stream: FakeStream,
                    message: dict[str, Any], *, numbered: bool = True) -> bool:
        """Send one message in Twilio's shape; False once the socket is closed."""
        if numbered:
            stream._seq += 1
            message = {"event": message["event"], "sequenceNumber": str(stream._seq),
                       **message, "streamSid": stream.stream_sid}
        try:
            await ws.send_message(_ENCODE.encode(message).decode("utf-8"))
        except trio_websocket.ConnectionClosed:
            return False
        return True


def _parameters(element: ET.Element) -> dict[str, str]:
    return {p.get("name", ""): p.get("value", "") for p in element.iter("Parameter")}


async def _until_over(call: FakeCall, first: int) -> None:
    # on the call's own event, not the fake's: media arrivals notify the fake 50 times a
    # second per stream, and a bench runs hundreds of calls
    while not _streams_over(call.media[first:]):
        await call._media_changed.wait()


def _streams_over(streams: list[FakeStream]) -> bool:
    """The ``<Connect>`` verb is over: a stream was opened and none is open or opening."""
    return (any(s.opened_at is not None for s in streams)
            and not any(s.state in ("open", "connecting") for s in streams))


def _is_loopback(host: str) -> bool:
    return host == "localhost" or host == "::1" or host.startswith("127.")
