"""The fake Twilio's media streams: it follows ``<Connect><Stream>`` as Twilio does.

On ``<Connect><Stream url=...>`` the fake opens a WebSocket (trio-websocket, over
``connect_stream``) to the daemon. It never resolves names: a ``wss://`` URL reaches the
daemon through the tunnel registered for its origin (``tunnel()``, as for webhooks: the
public ``Host`` and ``X-Forwarded-*`` go along), or directly when it names a loopback
address. The upgrade carries ``X-Twilio-Signature``: HMAC-SHA1 of the URL exactly as in the
TwiML (no parameters, as for a GET), under the ``sign_url`` quirk like every webhook. What
goes over an open socket is ``stream_session``'s job; this layer opens, records and ends.

The ``<Connect>`` verb lasts while a stream it opened is open: when the daemon closes the last
one, the player goes on with the next verb (``action`` if given); when the verb ends otherwise
(hang-up, REST update) its streams send ``stop`` and close. A refused or failed upgrade is
Twilio's error 31920 and the TwiML goes on; a URL the fake cannot reach holds the call
connected without media, as before streams were followed. Everything is recorded on a
``FakeStream`` (``call.media``).

Injections for tests of the daemon: ``second_stream`` (takeover), ``stop_stream(late=True)``
(``stop`` only after the call's final callback), ``drop_stream`` (socket gone without a close
frame), ``open_stream(signature=..., parameters=...)`` (unsigned, wrongly signed, bad token,
``start=False`` for a silent pre-start connection), ``stream_autoconnect=False`` to drive
streams by hand, ``play_audio`` / ``send_dtmf`` for the callee.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast
from urllib.parse import urlsplit

import trio
import trio_websocket

from ...providers.twilio.signature import compute_signature, port_variants
from .base import _new_sid, _origin
from .status import CallStatus
from .stream_session import StreamSession
from .values import (
    FRAME_BYTES,
    FRAME_S,
    ULAW_SILENCE,
    FakeCall,
    FakeStream,
)

log = logging.getLogger("voicecall.testing.twilio")

HELLO_ULAW_PATH = Path(__file__).resolve().parent.parent / "audio" / "hello_table_for_two_8k.ulaw"
USER_AGENT = "Twilio.TmeWs/1.0"
MAX_MESSAGE_BYTES = 256 * 1024  # a daemon message larger than this closes the socket (1009)
MAX_QUEUED_AUDIO_S = 600.0  # play_audio refuses more than this much waiting audio
Signature = Literal["valid", "missing", "wrong"]


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
                if start and not call._stream_audio_queued:  # the callee, from frame one
                    call._stream_audio_queued = True
                    if call.callee.stream_audio:
                        self.play_audio(call.sid, call.callee.stream_audio)
                session = StreamSession(ws, sock, call, stream, account_sid=self.account_sid,
                                        record_bytes=self.stream_record_bytes,
                                        changed=self._notify)
                await session.run(start=start)
                ws_nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await sock.aclose()

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
