"""One accepted media WebSocket (``RouteStream``): the ``MediaStream`` a call's voice session
gets, and the route's reading of what arrives on it.

Sending: any task (the call's player) may send while the route's task reads; one lock orders
the sends (the 101 first), a close frame is the last, and a send on a dead or stalled socket
(``SEND_TIMEOUT_S``) marks the stream closed and ends the reading instead of raising. So
does a send its caller cancels (a tighter timeout of its own): part of the frame may be out.

Receiving (the route's task, ``received``): the bytes are split into whole frames
(``ws_frames``); the common one, a whole masked text frame, is read here, any other goes,
whole, to wsproto (control frames, fragments, binary, protocol errors). Messages go through
the carrier's framing to the handler once attached; before that only ``start`` counts (the
route's ``_start`` decides it). A message over ``MAX_MESSAGE_CHARS`` ends the stream with
1009; a malformed one is skipped with one log line per stream.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio
from wsproto.connection import Connection, ConnectionState
from wsproto.events import BytesMessage, CloseConnection, Event, Ping, Pong, TextMessage
from wsproto.utilities import LocalProtocolError

from . import ws_frames
from .stream import Digits, MarkEcho, Started, Stopped, StreamHandler

if TYPE_CHECKING:
    from .route import MediaRoute

log = logging.getLogger("voicecall.media")

SEND_TIMEOUT_S = 10.0  # a send the peer does not take within this marks the stream dead
MAX_MESSAGE_CHARS = 64 * 1024  # a larger message closes the stream with 1009


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
        self.done = trio.Event()  # the route has finished with it (``stopped`` was called)
        self._route = route
        self._framing = route.authenticator.framing
        self._socket = socket
        self._ws = ws
        self._lock = trio.Lock()
        self._held = bytearray()  # received bytes of a frame not yet whole
        self._in_message = False  # wsproto is inside a fragmented message
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
            # a cancel that came while we took the lock: nothing written, the stream is fine
            await trio.lowlevel.checkpoint_if_cancelled()
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
                except BaseException:  # cancelled by the caller (the player's own bound):
                    self._dead()  # part of the frame may be out, so nothing may follow it
                    raise
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
        close (code, reason) to send (code 0: the peer closed or stopped, reply sent).

        The bytes are split into whole frames (``ws_frames``): the common one, a whole
        masked text frame, is read here; any other goes, whole, to wsproto."""
        replies: list[Event] = []
        if self._held:
            self._held += data
            buf: bytes | bytearray = self._held
        else:
            buf = data
        pos = 0
        ending: tuple[int, str] | None = None
        while ending is None:
            frame = ws_frames.extent(buf, pos)
            if frame is None:
                break
            header, size = frame  # (relative to ``pos``)
            if size - header > MAX_MESSAGE_CHARS:
                return replies, (1009, "message too big")
            if pos + size > len(buf):
                break
            if not self._in_message and ws_frames.is_simple(buf, pos):
                try:
                    text = ws_frames.unmasked(buf, pos, header, size).decode("utf-8")
                except UnicodeDecodeError:
                    return replies, (1007, "text is not UTF-8")
                ending = self._message(text)
            else:
                ending = self._wsproto(bytes(buf[pos:pos + size]), replies)
            pos += size
        if pos == len(buf):
            self._held = bytearray()
        elif buf is self._held:
            del self._held[:pos]
        else:
            self._held = bytearray(buf[pos:])
        return replies, ending

    def _wsproto(self, frame: bytes, replies: list[Event]) -> tuple[int, str] | None:
        """One whole frame through wsproto: control frames, fragments, binary, odd bits."""
        ws = self._ws
        ws.receive_data(frame)
        for event in ws.events():
            if isinstance(event, TextMessage):
                self._in_message = not event.message_finished
                ending = self._piece(event.data, event.message_finished)
                if ending is not None:
                    return ending
            elif isinstance(event, BytesMessage):
                self._in_message = not event.message_finished
                self._binary = True
                ending = self._piece("", event.message_finished, len(event.data))
                if ending is not None:
                    return ending
            elif isinstance(event, Ping):
                # only the latest ping of a read is answered (RFC 6455 5.5.3 allows it): a
                # flood of tiny pings must not cost a write each
                if replies and isinstance(replies[-1], Pong):
                    replies[-1] = event.response()
                else:
                    replies.append(event.response())
            elif isinstance(event, CloseConnection):
                if ws.state is ConnectionState.REMOTE_CLOSING:
                    replies.append(event.response())
                elif ws.state is ConnectionState.OPEN:  # wsproto could not parse a frame
                    return event.code, "protocol error"
                return 0, "peer closed"
        return None

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
