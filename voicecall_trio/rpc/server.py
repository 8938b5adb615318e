"""The JSON-RPC server: one task per connection, one task per request in flight.

Requests on one connection run concurrently (a ``continue`` waiting for the callee must not
block a ``status`` behind it), and every reply or notification goes out through one send lock
so lines never interleave. A line that cannot be parsed is answered with an error and the
connection keeps working. Handlers raise ``RpcError`` or ``VoiceCallError``; anything else is
logged once and answered with -32603, and the daemon keeps running; so is a result that
cannot be encoded (the connection is never dropped for it).

Nothing a client does can grow memory without bound:

- a connection has at most ``MAX_PENDING_PER_CONNECTION`` requests in flight (running, or
  waiting to send their reply); at the limit its reading task stops reading until one is
  done, so a client that writes without reading fills its own socket buffer, not ours;
- requests that get a task of their own take one of ``MAX_IN_FLIGHT`` server-wide slots
  first (a connection waits for a slot, it never spawns past the cap). Lookups answered in
  the reading task (``inline``) need no slot: each connection runs at most one at a time, so
  ``status`` and ``health`` answer even while other connections hold every slot;
- a send that makes no progress for ``SEND_STALL_TIMEOUT_S`` drops the connection: a peer
  that never reads cannot hold requests, slots or events forever. A registered agent or a
  subscriber reads, so it is never dropped for being long-lived.

A deadlock this must not create: a reply to a request the daemon sent (``agent.respond``)
needs no slot, but the reading task stops reading while the connection is at its limit, so an
agent must not keep more than the limit of its own requests waiting on its replies.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from ..errors import RpcError, VoiceCallError
from .accept import accept_loop
from .peer import Peer, Refuse, Reply
from .protocol import (
    INTERNAL_ERROR,
    METHOD_NOT_FOUND,
    Notification,
    Request,
    Response,
)
from .unix import open_unix_listener

log = logging.getLogger("voicecall.rpc")

# Requests one connection may have in flight before its reading stops (backpressure): well
# above what a gateway runs at once (a few continues and lookups), far below what hurts.
MAX_PENDING_PER_CONNECTION = 32
# Requests with a task of their own, across all connections: bounds tasks and queued replies.
MAX_IN_FLIGHT = 256
# Connections to the control socket at once; more are closed as they arrive. A gateway, a few
# CLI commands and `watch` processes need a handful; this stays well inside the descriptors
# the HTTP front keeps in reserve (front.FD_RESERVE).
MAX_CONNECTIONS = 64
# A send with no progress for this long means the peer has stopped reading: drop it.
SEND_STALL_TIMEOUT_S = 20.0
# Sends go out in pieces of this size, each with its own stall deadline, so a big reply to a
# slow but live reader is not mistaken for a stall.
SEND_CHUNK_BYTES = 65536


class Connection:
    """What a method handler may do with the connection it was called on."""

    def __init__(self, stream: trio.abc.Stream, nursery: trio.Nursery, *,
                 max_pending: int = MAX_PENDING_PER_CONNECTION,
                 send_timeout: float = SEND_STALL_TIMEOUT_S) -> None:
        self.stream = stream
        self.nursery = nursery
        self.slots = trio.Semaphore(max_pending)
        self.send_timeout = send_timeout
        self._send_lock = trio.Lock()
        self.closed = trio.Event()
        self.broken = False  # a send failed: the peer is gone
        # the connection's books: ids of the daemon's own requests (``agent.respond``), the
        # replies they wait for, and what each line read asks for
        self.peer = Peer[trio.MemorySendChannel[Response]](id_prefix="daemon-")
        self._in_flight = 0
        # at most one subscription per connection, however often a client asks: each would
        # otherwise be a task and a channel that outlive the request
        self.subscribed = False
        self._idle = trio.Event()
        self._idle.set()

    async def send(self, data: bytes) -> bool:
        """Send one line; False (never an exception) when the peer has gone away, or has
        stopped reading (no progress for ``send_timeout``: the connection is then aborted)."""
        if self.broken:
            return False
        try:
            async with self._send_lock:
                for start in range(0, len(data), SEND_CHUNK_BYTES):
                    if self.broken:  # aborted while this send waited for the lock
                        return False
                    with trio.move_on_after(self.send_timeout) as stall:
                        await self.stream.send_all(data[start:start + SEND_CHUNK_BYTES])
                    if stall.cancelled_caught:
                        log.warning("rpc: dropped a client that read nothing for %.0f s",
                                    self.send_timeout)
                        self.abort()
                        return False
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.broken = True
            return False
        return True

    def abort(self) -> None:
        """Give up on the connection: its reading task, requests and subscriptions end."""
        self.broken = True
        self.nursery.cancel_scope.cancel()

    async def notify(self, method: str, params: dict[str, Any]) -> None:
        try:
            line = self.peer.send_notification(method, params)
        except (TypeError, ValueError) as exc:  # e.g. text that is not valid Unicode
            log.warning("rpc: a %s notification could not be encoded (%s); not sent",
                        method, exc.__class__.__name__)
            return
        if not await self.send(line):
            raise trio.ClosedResourceError("the subscriber's connection is gone")

    @property
    def in_flight(self) -> int:
        return self._in_flight

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
        send, receive = trio.open_memory_channel[Response](1)
        msg_id, line = self.peer.send_request(method, params, send)
        try:
            if not await self.send(line):
                raise RpcError(INTERNAL_ERROR, "the connection is gone")
            try:
                reply = await receive.receive()
            except trio.EndOfChannel:
                raise RpcError(INTERNAL_ERROR, "the connection closed before replying") from None
        finally:
            self.peer.forget(msg_id)
        if reply.error is not None:
            raise RpcError.from_reply(reply.error)
        return reply.result

    def close_requests(self) -> None:
        for waiter in self.peer.close():
            waiter.close()


Handler = Callable[[dict[str, Any], Connection], Awaitable[Any]]


class RpcServer:
    """``inline`` names methods that never wait (lookups): they run in the reading task,
    saving a task spawn per request on the hottest path; all others get their own task."""

    def __init__(self, methods: dict[str, Handler],
                 inline: frozenset[str] = frozenset({"voicecall.status", "daemon.health"}),
                 *,
                 max_pending_per_connection: int = MAX_PENDING_PER_CONNECTION,
                 max_in_flight: int = MAX_IN_FLIGHT,
                 send_timeout: float = SEND_STALL_TIMEOUT_S) -> None:
        self.methods = methods
        self.inline = inline
        self.connections = 0
        self.max_pending_per_connection = max_pending_per_connection
        self.max_in_flight = max_in_flight
        self.send_timeout = send_timeout
        self._slots = trio.Semaphore(max_in_flight)
        self.in_flight = 0  # requests in flight, all connections (inline ones included)
        self.peak_in_flight = 0
        self.peak_spawned = 0  # the most requests that held a server-wide slot at once

    async def serve(
        self,
        path: Path,
        listener: trio.abc.Listener[trio.abc.Stream] | None = None,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve on ``listener`` (bound to ``path``; bound here if None); unlink on exit."""
        if listener is None:
            listener = open_unix_listener(path)
        try:
            async with listener, trio.open_nursery() as nursery:
                task_status.started()
                await accept_loop(listener, self.handle_stream, nursery,
                                  max_connections=MAX_CONNECTIONS,
                                  open_connections=lambda: self.connections)
        finally:
            _unlink_quietly(path)

    async def handle_stream(self, stream: trio.abc.Stream) -> None:
        """One connection; whatever happens on it, it never takes the server down."""
        self.connections += 1
        try:
            async with trio.open_nursery() as nursery:
                conn = Connection(stream, nursery,
                                  max_pending=self.max_pending_per_connection,
                                  send_timeout=self.send_timeout)
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
        peer = conn.peer
        while not conn.broken:
            try:
                data = await conn.stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                conn.broken = True
                return
            if not data:
                return
            peer.feed(data)
            while (action := peer.next_action()) is not None:
                if conn.broken:
                    # the peer is gone or stopped reading: answering the rest of what it
                    # sent would only burn the CPU (a send to a broken peer never waits)
                    return
                if isinstance(action, Request | Notification):
                    inline = action.method in self.inline
                    await self._admit(conn, spawned=not inline)  # may stop reading a while
                    if inline:
                        await self._dispatch(conn, action, spawned=False)
                    else:
                        conn.nursery.start_soon(self._dispatch, conn, action, True)
                elif isinstance(action, Reply):
                    # a reply to a request the daemon sent on this connection
                    action.waiter.send_nowait(action.response)
                elif isinstance(action, Refuse):
                    if action.too_long:
                        log.info("rpc: dropped a line over the 1 MiB limit")
                    else:
                        log.info("rpc: %s", action.error.message)
                    await conn.send(action.error.reply())
                # Unmatched: a late reply, for a request the daemon has given up on

    async def _admit(self, conn: Connection, *, spawned: bool) -> None:
        """Wait for room for one more request: on this connection, and (for a request with a
        task of its own) server-wide. The reading task waits here, so reading stops."""
        try:
            conn.slots.acquire_nowait()
        except trio.WouldBlock:
            await conn.slots.acquire()
        if spawned:
            try:
                self._slots.acquire_nowait()
            except trio.WouldBlock:
                try:
                    await self._slots.acquire()
                except BaseException:
                    conn.slots.release()
                    raise
            self.peak_spawned = max(self.peak_spawned,
                                    self.max_in_flight - self._slots.value)
        conn.request_started()
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)

    async def _dispatch(self, conn: Connection, message: Request | Notification,
                        spawned: bool) -> None:
        try:
            await self._answer(conn, message)
        finally:
            self.in_flight -= 1
            conn.request_done()
            conn.slots.release()
            if spawned:
                self._slots.release()

    async def _answer(self, conn: Connection, message: Request | Notification) -> None:
        handler = self.methods.get(message.method)
        error: tuple[int, str, Any]
        try:
            if handler is None:
                raise RpcError(METHOD_NOT_FOUND, f"Method not found: {message.method}")
            result = await handler(message.params, conn)
        except RpcError as exc:
            error = (exc.code, exc.message, exc.data)
        except VoiceCallError as exc:
            error = (exc.rpc_code, exc.message, None)
        except Exception:
            log.exception("rpc: %s failed", message.method)
            error = (INTERNAL_ERROR, "Internal error", None)
        else:
            if not isinstance(message, Request):
                return  # a notification gets no reply
            try:
                reply = conn.peer.send_result(message.id, result)
            except (TypeError, ValueError) as exc:  # e.g. text that is not valid Unicode
                log.error("rpc: the result of %s could not be encoded (%s); "
                          "answered -32603", message.method, exc.__class__.__name__)
                error = (INTERNAL_ERROR, "Internal error: the result could not be encoded",
                         None)
            else:
                await conn.send(reply)
                return
        # encoded only when it is sent: the peer counts lines over the limit it encodes
        if isinstance(message, Request):
            await conn.send(conn.peer.send_error(message.id, *error))


def _unlink_quietly(path: Path) -> None:
    """Remove the socket file (a cheap metadata operation, fine on the event loop)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
