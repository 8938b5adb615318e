"""The media WebSocket route: ``GET <streaming.streamPath>`` upgrades, from the front to a call.

The HTTP front (``front.py``) hands this route every WebSocket upgrade for the stream path,
with the bytes it has read (the request head). For each one, in this order:

1. admission (``route_limits``): over ``maxConnections``, or over the pending limits in total
   or for the address, answers HTTP 503 at once and closes: no handshake, no verification;
2. the carrier's check of the upgrade request (``StreamAuthenticator.verify_upgrade``: for
   Twilio, ``X-Twilio-Signature`` over the ``wss://`` stream URL): refused with HTTP 403
   before the WebSocket is accepted, and the call sessions are never consulted;
3. the 101, then within ``preStartTimeoutMs`` a ``start`` whose token names a call the
   sessions ``attach``; a missing or foreign token, or a call that is not live, closes with
   1008, and no ``start`` in time closes with (1008, "no start");
4. from then on every message goes to the call's ``StreamHandler``, until ``stop``, the
   socket's end, 30 s with nothing received (Twilio sends media continuously), or ``close``.
   ``stopped`` is called exactly once.

A message over 64 KiB closes the stream with 1009; a malformed one is skipped with one
(rate-limited) log line per stream. Sends (``send_audio``, ``send_mark``, ``send_clear``) may
come from another task (the call's player) while the route reads: one lock orders them, and a
send on a dead or stalled socket marks the stream closed instead of raising.

Why wsproto on the socket rather than trio-websocket: measured on this machine (one core,
K paced connections at 50 frames/s, a ~380-byte frame holding a 300-byte Twilio ``media``
text with a 160-byte payload, server CPU time per frame including msgspec and base64):
trio-websocket's ``wrap_server_stream`` 42-45 us at K=50 and K=200 (a reader task and a
channel hop per message); wsproto driven from this task with ``SocketStream.receive_some``
22-30 us (wsproto's own parsing is ~8 us of it, msgspec + base64 0.6 us); the raw
non-blocking socket the webhook fast path uses was within the noise of that (21-31 us),
so the route keeps the ``trio.SocketStream`` the front gives it.

The route owns no call logic: what a stream's audio means is the handler's business.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.connection import Connection, ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from ..front_limits import Throttled
from ..http1 import render_response
from ..providers import WebhookRequest
from .route_limits import Admission
from .stream import (
    Digits,
    MarkEcho,
    Started,
    Stopped,
    StreamAuthenticator,
    StreamHandler,
    StreamSessions,
)

if TYPE_CHECKING:
    from ..config import VoiceCallConfig

log = logging.getLogger("voicecall.media")

IDLE_TIMEOUT_S = 30.0  # attached, nothing received for this long: the carrier is gone
IDLE_GRANULARITY_S = 1.0  # the idle deadline is pushed forward at most this often
SEND_TIMEOUT_S = 10.0  # a send the peer does not take within this marks the stream dead
CLOSE_DRAIN_S = 1.0  # after our close frame, how long the peer's remaining bytes are read
CLOSE_ALL_TIMEOUT_S = 2.0  # close_all's bound on sending every close frame
MAX_MESSAGE_CHARS = 64 * 1024  # a larger message closes the stream with 1009
RECEIVE_BYTES = 65536
DRAIN_LIMIT_BYTES = 1 << 20

TOO_MANY = render_response(503, b"too many media streams\n", close=True)
FORBIDDEN = render_response(403, b"forbidden\n", close=True)
BAD_UPGRADE = render_response(400, b"bad websocket upgrade\n", close=True)
SHUTTING_DOWN = "the daemon is shutting down"


def authenticator_of(provider: object) -> StreamAuthenticator | None:
    """The provider as a ``StreamAuthenticator``, if it offers media streams."""
    if all(hasattr(provider, name) for name in ("verify_upgrade", "call_id_for_token",
                                                  "framing")):
        return provider  # type: ignore[return-value]
    return None


class RouteStream:
    """One accepted media WebSocket: the ``MediaStream`` a call's voice session gets."""

    def __init__(self, route: MediaRoute, socket: trio.SocketStream, ws: Connection,
                 remote: str) -> None:
        self.stream_id = ""
        self.carrier_call_id = ""
        self.remote = remote
        self.handler: StreamHandler | None = None
        self.accepted = False  # the 101 has been sent
        self.closed = False  # no more sends: closing, closed, or found dead
        self.close_code: int | None = None  # what we closed with (tests and logs)
        self.reader = trio.CancelScope()  # the route's reading task for this stream
        self._route = route
        self._framing = route.authenticator.framing
        self._socket = socket
        self._ws = ws
        self._lock = trio.Lock()
        self._parts: list[str] = []
        self._size = 0
        self._binary = False
        self._noted = False  # a malformed message was logged for this stream
        self._stopped_sent = False

    # -- MediaStream ------------------------------------------------------------------------

    async def send_audio(self, frame: bytes) -> None:
        await self._send(TextMessage(self._framing.media(self.stream_id, frame)))

    async def send_mark(self, name: str) -> None:
        await self._send(TextMessage(self._framing.mark(self.stream_id, name)))

    async def send_clear(self) -> None:
        await self._send(TextMessage(self._framing.clear(self.stream_id)))

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Send a close frame (bounded), then end the route's reading; idempotent."""
        if self.closed:
            return
        try:
            await self._send(CloseConnection(code, reason[:100]))
        except BaseException:
            self._dead()
            raise
        if self.close_code is None:
            self.close_code = code
        self._dead()

    # -- sending ----------------------------------------------------------------------------

    async def _send(self, event: Event) -> None:
        """Send one event under the lock; a dead socket marks the stream closed, never raises."""
        if self.closed:
            return
        async with self._lock:
            if self.closed or not self.accepted:  # (closed before its 101 went out)
                self._dead()
                return
            try:
                data = self._ws.send(event)
            except LocalProtocolError:
                self._dead()
                return
            if isinstance(event, CloseConnection):
                self.closed = True  # nothing may follow a close frame
                self.close_code = event.code
            with trio.move_on_after(SEND_TIMEOUT_S):
                try:
                    await self._socket.send_all(data)
                    return
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
            self._dead()

    async def send_raw(self, data: bytes) -> bool:
        """Send bytes already framed (the 101), in order with the other sends."""
        async with self._lock:
            if not self.closed:
                with trio.move_on_after(SEND_TIMEOUT_S):
                    try:
                        await self._socket.send_all(data)
                        self.accepted = True
                        return True
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        pass
            self._dead()
            return False

    def _dead(self) -> None:
        self.closed = True
        self.reader.cancel()

    # -- receiving (the route's task) -------------------------------------------------------

    def received(self, data: bytes) -> tuple[list[Event], tuple[int, str] | None]:
        """Feed bytes; returns control replies to send and, when the stream must end, the
        close (code, reason) to send (code 0: the peer closed or stopped, reply sent)."""
        replies: list[Event] = []
        ws = self._ws
        ws.receive_data(data)
        for event in ws.events():
            if type(event) is TextMessage:
                if event.message_finished and not self._parts:
                    if len(event.data) > MAX_MESSAGE_CHARS:
                        return replies, (1009, "message too big")
                    ending = self._message(event.data)
                else:
                    ending = self._piece(event.data, event.message_finished)
                if ending is not None:
                    return replies, ending
            elif isinstance(event, BytesMessage):
                self._binary = True
                ending = self._piece("", event.message_finished, len(event.data))
                if ending is not None:
                    return replies, ending
            elif isinstance(event, Ping):
                replies.append(event.response())
            elif isinstance(event, CloseConnection):
                if ws.state is ConnectionState.REMOTE_CLOSING:
                    replies.append(event.response())
                elif ws.state is ConnectionState.OPEN:  # wsproto could not parse a frame
                    return replies, (event.code, "protocol error")
                return replies, (0, "peer closed")
        return replies, None

    def _piece(self, text: str, finished: bool, size: int | None = None
               ) -> tuple[int, str] | None:
        self._size += len(text) if size is None else size
        if self._size > MAX_MESSAGE_CHARS:
            return 1009, "message too big"
        if text:
            self._parts.append(text)
        if not finished:
            return None
        whole = "".join(self._parts)
        binary = self._binary
        self._parts.clear()
        self._size = 0
        self._binary = False
        if binary:
            self.note("binary message")
            return None
        return self._message(whole)

    def _message(self, text: str) -> tuple[int, str] | None:
        event = self._framing.decode(text)
        handler = self.handler
        if type(event) is bytes:
            if handler is not None:
                handler.media(self, event)
            else:
                self.note("media before start")
            return None
        if isinstance(event, Started):
            if handler is not None:
                self.note("second start")
                return None
            return self._route._start(self, event)
        if handler is None:
            if isinstance(event, (MarkEcho, Digits, Stopped)):
                self.note(f"{type(event).__name__} before start")
            elif hasattr(event, "reason"):
                self.note(event.reason)
            return None
        if isinstance(event, MarkEcho):
            handler.mark(self, event.name)
        elif isinstance(event, Digits):
            handler.dtmf(self, event.digits)
        elif isinstance(event, Stopped):
            self.stopped()
            return 1000, "stopped"
        elif hasattr(event, "reason"):
            self.note(event.reason)
        return None

    def note(self, reason: str) -> None:
        """A skipped message: one log line per stream, rate-limited across streams."""
        if not self._noted:
            self._noted = True
            self._route._skipped(trio.current_time(), f"{reason} (stream from {self.remote})")

    def stopped(self) -> None:
        """Tell the handler once that the stream is over."""
        handler = self.handler
        if handler is None or self._stopped_sent:
            return
        self._stopped_sent = True
        try:
            handler.stopped(self)
        except Exception:
            log.exception("media stream handler failed on stop")


class MediaRoute:
    """The route the front hands stream-path upgrades to; see the module docstring."""

    def __init__(self, config: VoiceCallConfig, authenticator: StreamAuthenticator,
                 sessions: StreamSessions, *, idle_timeout_s: float = IDLE_TIMEOUT_S) -> None:
        streaming = config.streaming
        self.path = streaming.stream_path
        self.authenticator = authenticator
        self.sessions = sessions
        self.pre_start_s = streaming.pre_start_timeout_ms / 1000
        self.idle_timeout_s = idle_timeout_s
        self.admission = Admission(streaming.max_connections, streaming.max_pending_connections,
                                   streaming.max_pending_connections_per_ip)
        self.refused = 0  # upgrades answered 503 (over a limit, or shutting down)
        self.forbidden = 0  # upgrades answered 403 (the carrier's check failed)
        self.closing = False
        self.streams: dict[RouteStream, None] = {}  # accepted, oldest first
        self._full = Throttled("media stream refused (503)")
        self._refused_403 = Throttled("media stream upgrade refused (403)")
        self._skipped = Throttled("media stream message skipped")
        self._failed = Throttled("media stream handler failed")

    @property
    def pending(self) -> int:
        return self.admission.pending

    @property
    def open(self) -> int:
        return self.admission.open

    def wants(self, method: str, path: str, headers: dict[str, str]) -> bool:
        """Is this request head (as ``http1`` declined it) a WebSocket upgrade for us?"""
        return (method == "GET" and path == self.path
                and headers.get("upgrade", "").strip().lower() == "websocket")

    async def close_all(self, code: int = 1001) -> None:
        """Refuse new streams (503) and close every open one with ``code`` (bounded)."""
        self.closing = True
        with trio.move_on_after(CLOSE_ALL_TIMEOUT_S):
            async with trio.open_nursery() as nursery:
                for stream in list(self.streams):
                    nursery.start_soon(stream.close, code, "going away")
        for stream in list(self.streams):
            stream._dead()

    async def serve(self, stream: trio.SocketStream, replay: bytes, remote_addr: str) -> None:
        """Serve one upgrade request (its head is in ``replay``) until the stream ends; the
        caller closes ``stream`` afterwards."""
        refusal = SHUTTING_DOWN if self.closing else self.admission.admit(remote_addr)
        if refusal is not None:
            self.refused += 1
            self._full(trio.current_time(), refusal)
            await _answer(stream, TOO_MANY)
        else:
            attached = False
            try:
                attached = await self._serve_admitted(stream, replay, remote_addr)
            finally:
                self.admission.release(remote_addr, pending=not attached)
        await _drain(stream)  # (the slot is free while this lasts; a stop cuts it short)

    async def _serve_admitted(self, socket: trio.SocketStream, replay: bytes,
                              remote: str) -> bool:
        end = replay.find(b"\r\n\r\n")
        head, rest = (replay, b"") if end < 0 else (replay[:end + 4], replay[end + 4:])
        ws = WSConnection(ConnectionType.SERVER)
        try:
            ws.receive_data(head)
            request = next((e for e in ws.events() if isinstance(e, Request)), None)
        except RemoteProtocolError:
            request = None
        if request is None:
            await _answer(socket, BAD_UPGRADE)
            return False
        reason = self.authenticator.verify_upgrade(_webhook_request(request, remote))
        if reason is not None:
            self.forbidden += 1
            self._refused_403(trio.current_time(), f"{reason} (from {remote})")
            await _answer(socket, FORBIDDEN)
            return False
        accept = ws.send(AcceptConnection())
        connection = ws.connection
        assert connection is not None
        stream = RouteStream(self, socket, connection, remote)
        self.streams[stream] = None  # from now on close_all sees it
        try:
            if not await stream.send_raw(accept):
                return False
            await self._read(stream, socket, rest)
        finally:
            del self.streams[stream]
            stream.closed = True  # no send may start now
            stream.stopped()
        return stream.handler is not None

    async def _read(self, stream: RouteStream, socket: trio.SocketStream, rest: bytes) -> None:
        ending: tuple[int, str] | None = None
        armed = -math.inf  # when the idle deadline was last pushed forward (once attached)
        rearm_s = min(IDLE_GRANULARITY_S, self.idle_timeout_s / 4)
        with stream.reader:
            with trio.CancelScope(deadline=trio.current_time() + self.pre_start_s) as timer:
                data = rest
                while ending is None:
                    if not data:
                        data = await socket.receive_some(RECEIVE_BYTES)
                        if not data:
                            return
                    ending = await self._feed(stream, data)
                    data = b""
                    if stream.handler is not None:
                        # one deadline for the stream, moved at most every ``rearm_s``:
                        # a fresh timeout around each read costs more than the read
                        now = trio.current_time()
                        if now - armed >= rearm_s:
                            timer.deadline = now + self.idle_timeout_s
                            armed = now
            if timer.cancelled_caught:
                ending = (1008, "no start") if stream.handler is None else (1000, "idle")
        if ending is not None and ending[0] and not stream.closed:
            await stream.close(*ending)

    async def _feed(self, stream: RouteStream, data: bytes) -> tuple[int, str] | None:
        try:
            replies, ending = stream.received(data)
        except (RemoteProtocolError, LocalProtocolError):
            return 1002, "protocol error"
        except Exception:
            self._failed(trio.current_time(), "see the traceback at debug level")
            log.debug("media stream handler failed", exc_info=True)
            return 1011, "internal error"
        for reply in replies:
            await stream._send(reply)
        return ending

    def _start(self, stream: RouteStream, started: Started) -> tuple[int, str] | None:
        """A ``start`` on a pending stream: its token must name a call the sessions attach."""
        if not started.token:
            stream.note("start without a token")
            return 1008, "missing token"
        call_id = self.authenticator.call_id_for_token(started.token)
        if call_id is None:
            stream.note("start with a token we did not issue")
            return 1008, "bad token"
        stream.stream_id = started.stream_id
        stream.carrier_call_id = started.carrier_call_id
        handler = self.sessions.attach(call_id, stream)
        if handler is None:
            stream.note(f"start for call {call_id}, which is not live")
            return 1008, "call not live"
        stream.handler = handler
        self.admission.attached(stream.remote)
        log.info("media stream %s attached to call %s", started.stream_id, call_id)
        return None


def _webhook_request(request: Request, remote: str) -> WebhookRequest:
    headers = {name.decode("latin-1").lower(): value.decode("latin-1")
               for name, value in request.extra_headers}
    headers["host"] = request.host
    path, _, query = request.target.partition("?")
    return WebhookRequest(method="GET", path=path, query_string=query, headers=headers,
                          body=b"", remote_addr=remote, scheme="http", host=request.host)


async def _answer(socket: trio.SocketStream, response: bytes) -> None:
    """An HTTP refusal before any handshake, sent (bounded); the caller drains and closes."""
    with trio.move_on_after(SEND_TIMEOUT_S):
        try:
            await socket.send_all(response)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass


async def _drain(socket: trio.SocketStream) -> None:
    """Half-close, then read what the peer still sends for a moment, so that our last
    bytes (an answer, a close frame) are not destroyed by a reset."""
    try:
        await socket.send_eof()
        taken = 0
        with trio.move_on_after(CLOSE_DRAIN_S):
            while taken < DRAIN_LIMIT_BYTES:
                data = await socket.receive_some(RECEIVE_BYTES)
                if not data:
                    break
                taken += len(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError,
            OSError):
        pass


__all__ = ["IDLE_TIMEOUT_S", "MediaRoute", "RouteStream", "authenticator_of"]
