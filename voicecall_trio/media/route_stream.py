"""One accepted media WebSocket (``RouteStream``): the ``MediaStream`` a call's voice session
gets, and the route's reading of what arrives on it.

Sending: any task (the call's player) may send while the route's task reads. A text message
is framed here (``ws_frames.server_text``) and written straight to the non-blocking socket:
with nothing else being written and room in the socket's buffer (the common case) that is one
``write`` with no lock, no timer and no trip through the scheduler. Only a partial write
waits, under a lock that orders later sends behind it, for at most ``SEND_TIMEOUT_S``: a
stalled or dead peer marks the stream closed and ends the reading instead of raising. The 101
goes first, a close frame last; control frames and close go through wsproto, which keeps the
connection's state. (Measured on a socket pair: 12-15 us CPU per ``send_audio`` against
53-57 us through wsproto's serialiser, a ``trio.Lock`` and ``move_on_after``.)

Receiving (the route's task, ``received``): the bytes are split into whole frames
(``ws_frames``); the common one, a whole masked text frame, is read here, any other goes,
whole, to wsproto (control frames, fragments, binary, protocol errors). Messages go through
the carrier's framing to the handler once attached; before that only ``start`` counts (the
route's ``_start`` decides it). A message over ``MAX_MESSAGE_CHARS`` ends the stream with
1009; a malformed one is skipped with one log line per stream.
"""

from __future__ import annotations

import logging
import os
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

    # every send returns within ``SEND_TIMEOUT_S`` and never raises (``_write``): the player
    # need not put a timer of its own around each frame
    send_bounded = True

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
        # written to directly (``_write``); -1: not a socket (tests' memory streams), written
        # through trio's stream API instead
        self._fd: int = getattr(getattr(socket, "socket", None), "fileno", lambda: -1)()
        self._lock = trio.Lock()  # held only while a write waits for the socket
        self._broken = False  # the socket failed, stalled or holds a torn frame: write no more
        self.send_started: float | None = None  # when the write now waiting began
        self._left = 0  # bytes of the waiting write not yet taken by the socket
        self._held = bytearray()  # received bytes of a frame not yet whole
        self._in_message = False  # wsproto is inside a fragmented message
        self._parts: list[str] = []
        self._size = 0
        self._binary = False
        self._noted = False  # a malformed message was logged for this stream
        self._stopped_sent = False

    # -- MediaStream ------------------------------------------------------------------------

    async def send_audio(self, frame: bytes) -> None:
        if not self.closed:
            await self._send_text(self._framing.media(self.stream_id, frame))

    async def send_mark(self, name: str) -> None:
        await trio.lowlevel.checkpoint()  # see ``send_clear``
        await self._send_text(self._framing.mark(self.stream_id, name))

    async def send_clear(self) -> None:
        # A mark or a clear is a checkpoint, as trio's own sends are: the tasks a barge-in
        # has just cancelled (the reply's request) run first. Only ``send_audio``, 50 times
        # a second, skips it: the player's pacing wait is its schedule point.
        await trio.lowlevel.checkpoint()
        await self._send_text(self._framing.clear(self.stream_id))

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

    async def _send_text(self, text: str) -> None:
        """One text message, framed here (``ws_frames.server_text``) while wsproto says the
        connection is open; a dead socket marks the stream closed, never raises."""
        if self.closed:
            return
        if not self.accepted or self._ws.state is not ConnectionState.OPEN:
            self._dead()  # (closed before its 101 went out, or the peer is closing)
            return
        await self._write(ws_frames.server_text(text.encode()))

    async def _send(self, event: Event) -> None:
        """One control event through wsproto (pong, close); never raises for a dead socket."""
        if self.closed:
            return
        if not self.accepted:
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
        await self._write(data, last=isinstance(event, CloseConnection))

    async def send_raw(self, data: bytes) -> bool:
        """Send bytes already framed (the 101), in order with the other sends."""
        if self.closed:
            self._dead()
            return False
        self.accepted = True
        await self._write(data)
        return not self.closed

    async def _write(self, data: bytes, *, last: bool = False) -> None:
        """Write ``data`` after whatever is being written; a dead or stalled socket marks the
        stream dead.

        The common case, nothing else being written and room in the socket's buffer, is one
        non-blocking write and no checkpoint: no lock taken, no timer. Only the rest of a
        partial write waits, under the lock (so later sends queue behind it), for at most
        ``SEND_TIMEOUT_S``; ``send_started`` says since when (for the route and for tests)."""
        if self._broken:
            return
        if not self._lock.locked() and self._fd >= 0:
            try:
                sent = os.write(self._fd, data)
            except BlockingIOError:
                sent = 0
            except OSError:
                self._break()
                return
            if sent == len(data):
                return
            rest = memoryview(data)[sent:]
            self._lock.acquire_nowait()  # (free: nothing was awaited since ``locked()``)
        else:
            await self._lock.acquire()
            rest = memoryview(data)
        try:
            if self._broken or (self.closed and not last and len(rest) == len(data)):
                return  # (a whole frame not started: dropped; a torn one must be finished)
            self._left = len(rest)
            if not await self._flush(rest):
                self._break()
        except BaseException:  # cancelled: if part of the frame is out, the stream is lost
            if self._left != len(data):
                self._break()
            raise
        finally:
            self._lock.release()

    async def _flush(self, rest: memoryview) -> bool:
        """The rest of a write the socket did not take at once; False if it never does."""
        self.send_started = trio.current_time()
        try:
            with trio.move_on_after(SEND_TIMEOUT_S):
                if self._fd < 0:  # not a socket (tests' memory streams): trio's stream API
                    await trio.lowlevel.checkpoint_if_cancelled()  # (nothing written yet)
                    self._left = -1  # (from here, how much of it went out is unknown)
                    await self._socket.send_all(rest)
                    self._left = 0
                    return True
                while rest:
                    await trio.lowlevel.wait_writable(self._fd)
                    try:
                        rest = rest[os.write(self._fd, rest):]
                    except BlockingIOError:
                        pass
                    self._left = len(rest)
                return True
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError,
                trio.BusyResourceError):
            pass
        finally:
            self.send_started = None
        return False

    def _break(self) -> None:
        """The socket takes nothing more (gone, stalled, or a frame torn)."""
        self._broken = True
        self._dead()

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
