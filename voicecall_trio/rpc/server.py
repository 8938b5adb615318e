"""The JSON-RPC server: one task per connection, one task per request in flight.

Requests on one connection run concurrently (a ``continue`` waiting for the callee must not
block a ``status`` behind it), and every reply or notification goes out through one send lock
so lines never interleave. A line that cannot be parsed is answered with an error and the
connection keeps working. Handlers raise ``RpcError`` or ``VoiceCallError``; anything else is
logged once and answered with -32603, and the daemon keeps running.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from ..errors import VoiceCallError
from .protocol import (
    INTERNAL_ERROR,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    LineSplitter,
    LineTooLong,
    Notification,
    ProtocolError,
    Request,
    Response,
    RpcError,
    encode_error,
    encode_notification,
    encode_request,
    encode_result,
    parse_line,
)
from .unix import open_unix_listener

log = logging.getLogger("voicecall.rpc")


class Connection:
    """What a method handler may do with the connection it was called on."""

    def __init__(self, stream: trio.abc.Stream, nursery: trio.Nursery) -> None:
        self.stream = stream
        self.nursery = nursery
        self._send_lock = trio.Lock()
        self.closed = trio.Event()
        self.broken = False  # a send failed: the peer is gone
        self._ids = itertools.count(1)
        self._waiting: dict[int | str, trio.MemorySendChannel[Response]] = {}
        self._in_flight = 0
        self._idle = trio.Event()
        self._idle.set()

    async def send(self, data: bytes) -> bool:
        """Send one line; False (never an exception) when the peer has gone away."""
        if self.broken:
            return False
        try:
            async with self._send_lock:
                await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.broken = True
            return False
        return True

    async def notify(self, method: str, params: dict[str, Any]) -> None:
        if not await self.send(encode_notification(method, params)):
            raise trio.ClosedResourceError("the subscriber's connection is gone")

    def request_started(self) -> None:
        self._in_flight += 1
        self._idle = trio.Event()

    def request_done(self) -> None:
        self._in_flight -= 1
        if self._in_flight == 0:
            self._idle.set()

    async def wait_requests_done(self) -> None:
        await self._idle.wait()

    async def request(self, method: str, params: dict[str, Any]) -> Any:
        """Ask the peer (e.g. a registered agent) and wait for its reply."""
        msg_id = f"daemon-{next(self._ids)}"
        send, receive = trio.open_memory_channel[Response](1)
        self._waiting[msg_id] = send
        try:
            if not await self.send(encode_request(msg_id, method, params)):
                raise RpcError(INTERNAL_ERROR, "the connection is gone")
            try:
                reply = await receive.receive()
            except trio.EndOfChannel:
                raise RpcError(INTERNAL_ERROR, "the connection closed before replying") from None
        finally:
            self._waiting.pop(msg_id, None)
        if reply.error is not None:
            raise RpcError.from_reply(reply.error)
        return reply.result

    def route_response(self, message: Response) -> None:
        waiter = self._waiting.pop(message.id, None) if message.id is not None else None
        if waiter is not None:
            waiter.send_nowait(message)

    def close_requests(self) -> None:
        for waiter in self._waiting.values():
            waiter.close()
        self._waiting.clear()


Handler = Callable[[dict[str, Any], Connection], Awaitable[Any]]


class RpcServer:
    """``inline`` names methods that never wait (lookups): they run in the reading task,
    saving a task spawn per request on the hottest path; all others get their own task."""

    def __init__(self, methods: dict[str, Handler],
                 inline: frozenset[str] = frozenset({"voicecall.status", "daemon.health"})
                 ) -> None:
        self.methods = methods
        self.inline = inline
        self.connections = 0

    async def serve(
        self,
        path: Path,
        listener: trio.SocketListener | None = None,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve on ``listener`` (bound to ``path``; bound here if None); unlink on exit."""
        if listener is None:
            listener = open_unix_listener(path)
        try:
            async with listener:
                await trio.serve_listeners(self.handle_stream, [listener],
                                           task_status=_Ready(task_status))
        finally:
            _unlink_quietly(path)

    async def handle_stream(self, stream: trio.abc.Stream) -> None:
        """One connection; whatever happens on it, it never takes the server down."""
        self.connections += 1
        try:
            async with trio.open_nursery() as nursery:
                conn = Connection(stream, nursery)
                try:
                    await self._read_loop(conn)
                    # End of input is not a hang-up: a client that half-closes after
                    # writing (`socat`, `nc -N`) still gets the replies to what it sent.
                    if not conn.broken:
                        await conn.wait_requests_done()
                finally:
                    conn.closed.set()
                    conn.close_requests()
                    nursery.cancel_scope.cancel()
        except Exception:
            log.exception("rpc: connection failed")
        finally:
            self.connections -= 1
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(stream)

    async def _read_loop(self, conn: Connection) -> None:
        splitter = LineSplitter()
        while not conn.broken:
            try:
                data = await conn.stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                conn.broken = True
                return
            if not data:
                return
            for item in splitter.feed(data):
                if isinstance(item, LineTooLong):
                    log.info("rpc: dropped a line over the 1 MiB limit")
                    await conn.send(encode_error(None, INVALID_REQUEST,
                                                 "Invalid Request: line exceeds 1 MiB"))
                    continue
                message = parse_line(item)
                if isinstance(message, ProtocolError):
                    log.info("rpc: %s", message.message)
                    await conn.send(message.reply())
                elif isinstance(message, Request | Notification):
                    conn.request_started()
                    if message.method in self.inline:
                        await self._dispatch(conn, message)
                    else:
                        conn.nursery.start_soon(self._dispatch, conn, message)
                elif isinstance(message, Response):
                    await self.on_response(conn, message)

    async def on_response(self, conn: Connection, message: Response) -> None:
        """A reply to a request the daemon sent on this connection (``agent.respond``)."""
        conn.route_response(message)

    async def _dispatch(self, conn: Connection, message: Request | Notification) -> None:
        try:
            await self._answer(conn, message)
        finally:
            conn.request_done()

    async def _answer(self, conn: Connection, message: Request | Notification) -> None:
        msg_id = message.id if isinstance(message, Request) else None
        handler = self.methods.get(message.method)
        try:
            if handler is None:
                raise RpcError(METHOD_NOT_FOUND, f"Method not found: {message.method}")
            result = await handler(message.params, conn)
        except RpcError as exc:
            reply = encode_error(msg_id, exc.code, exc.message, exc.data)
        except VoiceCallError as exc:
            reply = encode_error(msg_id, exc.rpc_code, exc.message)
        except Exception:
            log.exception("rpc: %s failed", message.method)
            reply = encode_error(msg_id, INTERNAL_ERROR, "Internal error")
        else:
            reply = encode_result(msg_id, result)
        if isinstance(message, Request):
            await conn.send(reply)


class _Ready:
    """Adapts serve_listeners' started([listeners]) to a plain started()."""

    def __init__(self, inner: trio.TaskStatus[None]) -> None:
        self.inner = inner

    def started(self, value: object = None) -> None:
        self.inner.started()


def _unlink_quietly(path: Path) -> None:
    """Remove the socket file (a cheap metadata operation, fine on the event loop)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
