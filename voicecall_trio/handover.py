"""A connection the HTTP front handed to Hypercorn, as the front's deadlines and cap see it.

Hypercorn serves such a connection whole (HTTP/1.x or h2, every request on it), so the front
cannot see requests begin and end as it does on its fast path. ``Handed`` is the ASGI app
Hypercorn gets for the connection, so each request's ASGI messages pass through it, and
``Rewound`` is the stream Hypercorn reads, which replays the bytes the fast path had read and
reports new ones. From those a ``Handed`` knows its deadline and its phase (idle, receiving a
request, busy), which the front's sweeper and its connection cap act on (``front.py``,
``front_limits.py``).

This module never closes anything on its own and arms no timer: ``Handed.drop`` is called by
the front. Nor does it decide what a request gets; Hypercorn and the app do.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import trio

# connection phases, in the order the front sheds them at its cap (a busy one never is)
IDLE, RECEIVING, BUSY = 0, 1, 2


class Front(Protocol):
    """What a ``Handed`` needs of the front: the app and the two timeouts."""

    app: Any
    request_timeout_s: float
    keep_alive_s: float


class _Exchange:
    """One request of a handed-over connection (HTTP/1.x or one h2 stream)."""

    __slots__ = ("answering_since", "receiving", "since", "upgraded")

    def __init__(self, since: float) -> None:
        self.since = since  # when its first byte arrived
        self.receiving = True  # until its body (or WebSocket handshake) is complete
        self.upgraded = False  # a WebSocket was accepted (101 sent)
        self.answering_since: float | None = None  # the response has started going out


class Handed:
    """A connection Hypercorn serves, as the front's sweeper and shedding see it.

    Hypercorn gets this object as its ASGI app for the connection, so each request's ASGI
    messages pass through it (``__call__``); ``Rewound`` tells it when bytes arrive. From
    those it knows the connection's deadline:

    - a WebSocket accepted: none (the stream route owns the timeouts of an upgraded stream);
    - a request whose body is still arriving: ``request_timeout_s`` after its first byte;
    - a request being handled (body complete, no response started yet): none;
    - a response started but not finished: the request timeout from its start (a peer that
      never reads it, such as an h2 stream whose window stays shut, must not hold the
      connection, its app task and a webhook slot for ever);
    - a request answered before its body was complete: the request timeout from its first
      byte, until the next request begins (only then has Hypercorn read that body);
    - bytes of a next request (or h2 frames) with no request for them yet: the request
      timeout from their arrival (from the end of the last response, for a pipelined one);
    - nothing in progress: the keep-alive timeout after the last response.

    Deadlines count from when a request began, never from its latest byte, so a slow sender
    cannot extend them.
    """

    def __init__(self, front: Front, stream: trio.SocketStream, started: float) -> None:
        self.front = front
        self.stream = stream
        self.cancel_scope = trio.CancelScope()
        self.exchanges: dict[_Exchange, None] = {}
        self.head_since: float | None = started  # bytes arrived that no request holds yet
        # answered before its body was complete: Hypercorn still reads it (h11 cannot take
        # the next request before), so it still counts as arriving until the next one starts
        self.unread_since: float | None = None
        self.idle_since = started

    def deadline(self) -> float:
        front = self.front
        if self.exchanges:
            started = self._timed_since()
            return math.inf if started is None else started + front.request_timeout_s
        arriving = self._arriving()
        if arriving is not None:
            return arriving + front.request_timeout_s
        return self.idle_since + front.keep_alive_s

    def _timed_since(self) -> float | None:
        """When the oldest exchange that runs against the request timeout began: one still
        arriving, or one whose answer is going out; None if none does (an app at work on a
        complete request, or an accepted WebSocket, which has no deadline)."""
        if any(e.upgraded for e in self.exchanges):
            return None
        started = [e.since for e in self.exchanges if e.receiving]
        started += [e.answering_since for e in self.exchanges if e.answering_since is not None]
        return min(started, default=None)

    def _arriving(self) -> float | None:
        """When the oldest request still arriving that no app holds began, if any."""
        if self.head_since is None:
            return self.unread_since
        if self.unread_since is None:
            return self.head_since
        return min(self.head_since, self.unread_since)

    def phase(self) -> tuple[int, float]:
        if self.exchanges:
            # a request still arriving, or an answer still going out, may be shed; only
            # an app at work on a complete request (or an accepted WebSocket) may not
            started = self._timed_since()
            return (BUSY, 0.0) if started is None else (RECEIVING, started)
        arriving = self._arriving()
        if arriving is not None:
            return RECEIVING, arriving
        return IDLE, self.idle_since

    def drop(self) -> None:
        """Close now (past its deadline, or shed): cancels Hypercorn's work on it."""
        self.cancel_scope.cancel()
        self.stream.socket.close()  # wakes shielded sends too; the fd is free at once

    def got_bytes(self) -> None:
        if self.head_since is None and not any(e.receiving for e in self.exchanges):
            self.head_since = trio.current_time()

    async def __call__(self, scope: Any, receive: Any, send: Any, sync_spawn: Any,
                       call_soon: Any) -> None:
        app = self.front.app
        if scope["type"] not in ("http", "websocket"):
            await app(scope, receive, send, sync_spawn, call_soon)
            return
        exchange = _Exchange(trio.current_time() if self.head_since is None
                             else self.head_since)
        self.head_since = self.unread_since = None
        self.exchanges[exchange] = None

        async def tracked_receive() -> Any:
            message = await receive()
            kind = message["type"]
            if kind == "websocket.connect" or (kind == "http.request"
                                               and not message.get("more_body", False)):
                exchange.receiving = False
            return message

        async def tracked_send(message: Any) -> None:
            kind = message["type"]
            if kind == "websocket.accept":
                exchange.upgraded = True
            elif kind == "http.response.start" and exchange.answering_since is None:
                exchange.answering_since = trio.current_time()
            await send(message)
            if kind == "http.response.body" and not message.get("more_body", False):
                self._finish(exchange)

        try:
            await app(scope, tracked_receive, tracked_send, sync_spawn, call_soon)
        finally:
            self._finish(exchange)

    def _finish(self, exchange: _Exchange) -> None:
        if self.exchanges.pop(exchange, 0) is not None:
            return  # finished already
        if exchange.receiving and not exchange.upgraded:
            self.unread_since = exchange.since
        if not self.exchanges:
            now = trio.current_time()
            self.idle_since = now
            if self.head_since is not None:  # a pipelined request: its time starts now
                self.head_since = now


class Rewound(trio.abc.HalfCloseableStream):
    """A socket stream that first gives back the bytes the fast path had already read.

    Hypercorn looks for ``socket`` (peer and local address) and treats a stream without
    ``do_handshake`` as plain TCP, which is what this is. It also tells the connection's
    ``Handed`` when bytes arrive, bounds each send by the request timeout (Hypercorn's
    sends are shielded, so a peer that stops reading would otherwise hold them forever),
    and turns h11's one 5xx for bad input into a 400 (below).
    """

    def __init__(self, stream: trio.SocketStream, replay: bytes, handed: Handed) -> None:
        self.transport = stream
        self.socket = stream.socket
        self._replay = replay
        self._handed = handed

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._replay:
            await trio.lowlevel.checkpoint()
            size = len(self._replay) if max_bytes is None else max_bytes
            chunk, self._replay = self._replay[:size], self._replay[size:]
            return chunk
        data = bytes(await self.transport.receive_some(max_bytes))
        if data:
            self._handed.got_bytes()
        return data

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if data[:13] == b"HTTP/1.1 501 ":
            # h11 answers a Transfer-Encoding it does not implement with 501; no other part
            # of the daemon sends 501, and bad input gets a 4xx (docs/architecture.md)
            data = b"HTTP/1.1 400 " + bytes(data[13:])
        with trio.move_on_after(self._handed.front.request_timeout_s):
            try:
                await self.transport.send_all(data)
            except trio.BusyResourceError:
                # Hypercorn serialises its sends but not the ``send_eof`` of its close against
                # them; the overlap means the connection is closing, and as BusyResourceError
                # (which Hypercorn does not expect) it reached the app as an "Error in ASGI
                # Framework" traceback, e.g. after an early 413 on a chunked body
                raise trio.BrokenResourceError("the connection is closing") from None
            return
        raise trio.BrokenResourceError("the peer stopped reading")

    async def wait_send_all_might_not_block(self) -> None:
        await self.transport.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self.transport.send_eof()

    async def aclose(self) -> None:
        await self.transport.aclose()
