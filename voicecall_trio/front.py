"""The daemon's HTTP listener: carrier webhooks answered directly, the rest handed to Hypercorn.

Why a front at all: every carrier callback is a small ``POST`` to one path, and Hypercorn's
per-request machinery (an app task, ~14 awaited protocol events, a re-armed idle timer) cost
about 930 µs of CPU per request on the reference machine, several times our own signature
check and call handling. That capped one core near 1,000 webhooks/s and put p99 at 50
connections near 90 ms. docs/benchmarks.md has the measurements before and after.

So one trio listener owns the port. Each connection starts here:

- a request ``http1.parse_head`` recognises as ``POST <serve.path> HTTP/1.1`` with a plain
  ``Content-Length`` body is answered in place, through the same ``WebhookGate`` the ASGI
  endpoint uses (same checks, same answers, one in-flight count per IP);
- anything else (``/healthz``, 404s, the media WebSocket, chunked bodies, ``Expect``,
  HTTP/1.0, malformed bytes) hands the connection over to Hypercorn, with the bytes already
  read replayed first, and Hypercorn serves it until it closes.

Hypercorn still runs the ASGI lifespan and serves every connection it is given exactly as
``hypercorn.trio.serve`` would; only the accept loop is ours. That uses three Hypercorn
classes that are not its documented API (``TCPServer``, ``WorkerContext``, ``Lifespan``), so
the version is bounded in pyproject.toml and tests/test_front.py exercises the hand-over.
"""

from __future__ import annotations

import errno
import logging
import math
import socket
from collections.abc import Sequence
from typing import Any

import trio

from .http1 import NotSimple, RequestHead, parse_head, render_response
from .providers.base import WebhookRequest, WebhookResponse
from .web import TOO_LARGE, TOO_MANY, WebhookGate

log = logging.getLogger("voicecall.http")

RECEIVE_BYTES = 65536
REQUEST_TIMEOUT_S = 10.0  # a started request must arrive whole within this (slow senders)
DRAIN_TIMEOUT_S = 1.0  # after a refusal that closes, how long unread input is drained
DRAIN_LIMIT_BYTES = 1 << 20
SWEEP_INTERVAL_S = 1.0
# accept() failures that mean "out of resources for now", as trio.serve_listeners treats them
_ACCEPT_PAUSE_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}


class _Closed(Exception):
    """The peer went away or stalled: drop the connection."""


class HttpFront:
    """Accepts connections on the listeners; see the module docstring for the split."""

    def __init__(self, app: Any, hypercorn_config: Any, gate: WebhookGate) -> None:
        from hypercorn.utils import wrap_app

        self.app = wrap_app(app, hypercorn_config.wsgi_max_body_size, "asgi")
        self.hc = hypercorn_config
        self.gate = gate
        self.keep_alive_s = float(hypercorn_config.keep_alive_timeout)
        self.handed_over = 0  # connections given to Hypercorn (tests and diagnostics)
        self.answered = 0  # webhook requests answered on the fast path
        self.closing = False
        self._idle: dict[_Connection, float] = {}  # connection -> when it became idle
        self._state: dict[str, Any] = {}
        self._context: Any = None

    async def serve(self, listeners: Sequence[trio.SocketListener], stop: trio.Event, *,
                    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED
                    ) -> None:
        """Serve until ``stop``, then drain for ``graceful_timeout`` and run lifespan shutdown.

        Reports the ``http://host:port`` addresses once connections are being accepted.
        """
        from hypercorn.trio.lifespan import Lifespan
        from hypercorn.trio.worker_context import WorkerContext

        lifespan = Lifespan(self.app, self.hc, self._state)
        self._context = WorkerContext(None)
        async with trio.open_nursery() as lifespan_nursery:
            await lifespan_nursery.start(lifespan.handle_lifespan)
            await lifespan.wait_for_startup()
            async with trio.open_nursery() as connections:
                async with trio.open_nursery() as accepting:
                    for listener in listeners:
                        accepting.start_soon(self._accept, listener, connections)
                    accepting.start_soon(self._sweep_idle)
                    task_status.started(describe_binds(listeners))
                    await stop.wait()
                    accepting.cancel_scope.cancel()
                await self._begin_close()
                connections.cancel_scope.deadline = (trio.current_time()
                                                     + float(self.hc.graceful_timeout))
            await lifespan.wait_for_shutdown()
            lifespan_nursery.cancel_scope.cancel()

    async def _accept(self, listener: trio.SocketListener, connections: trio.Nursery) -> None:
        while True:
            try:
                stream = await listener.accept()  # skips aborted handshakes; sets TCP_NODELAY
            except OSError as exc:
                if exc.errno not in _ACCEPT_PAUSE_ERRNOS:
                    raise
                log.warning("cannot accept HTTP connections for now: %s", exc.strerror)
                await trio.sleep(0.1)
                continue
            plain = socket.socket(fileno=stream.socket.detach())  # ours to drive directly
            plain.setblocking(False)
            connections.start_soon(self._connection, plain)

    async def _sweep_idle(self) -> None:
        """Close keep-alive connections idle for longer than the keep-alive timeout.

        One sweeper instead of a timer per request: arming and disarming a deadline around
        every read was a measurable share of a webhook's cost.
        """
        while True:
            await trio.sleep(min(SWEEP_INTERVAL_S, self.keep_alive_s / 4))
            cutoff = trio.current_time() - self.keep_alive_s
            for connection, since in list(self._idle.items()):
                if since <= cutoff:
                    connection.interrupt()

    async def _begin_close(self) -> None:
        """Stop keep-alive: idle connections close now, busy ones after their response."""
        self.closing = True
        for connection in list(self._idle):
            connection.interrupt()
        await self._context.terminated.set()  # Hypercorn's connections do the same

    async def _connection(self, sock: socket.socket) -> None:
        hand_over = False
        try:
            connection = _Connection(self, sock)
            try:
                hand_over = await connection.serve()
            except (_Closed, trio.ClosedResourceError, OSError):
                pass
            if hand_over:
                await self._hand_over(sock, bytes(connection.buffer))
        except OSError:
            pass  # the peer was gone before we could ask who it was
        except Exception:
            log.exception("HTTP connection failed")
        finally:
            if not hand_over:
                trio.lowlevel.notify_closing(sock)
                sock.close()

    async def _hand_over(self, sock: socket.socket, replay: bytes) -> None:
        from hypercorn.trio.tcp_server import TCPServer
        from hypercorn.typing import ConnectionState

        self.handed_over += 1
        try:
            stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
        except BaseException:
            sock.close()
            raise
        state = ConnectionState(self._state.copy())
        rewound: Any = _Rewound(stream, replay)  # Hypercorn types its stream as SSLStream
        try:
            await TCPServer(self.app, self.hc, self._context, state, rewound)
        finally:
            with trio.CancelScope(shield=True):
                await stream.aclose()


class _Connection:
    """One client connection while the fast path has it.

    It drives the non-blocking socket with ``trio.lowlevel.wait_readable``/``wait_writable``
    rather than through ``trio.SocketStream``: a request then goes from "readable" to
    "answered" in one run of the task, instead of three trips through the scheduler (the
    stream checkpoints after every receive and every send). There is still a checkpoint per
    request: the wait for the next one, or an explicit one when requests are pipelined.
    """

    def __init__(self, front: HttpFront, sock: socket.socket) -> None:
        self.front = front
        self.gate = front.gate
        self.sock = sock
        self.buffer = bytearray()
        self.remote = str(sock.getpeername()[0])
        self.deadline = math.inf  # for the request being received
        self.waited = False  # did this request reach a checkpoint yet?

    async def serve(self) -> bool:
        """Answer webhook requests until the connection ends (False) or must be handed over."""
        while True:
            self.waited = False
            try:
                head = await self._next_head()
            except NotSimple:
                return True
            if head is None:
                return False
            if head.method != "POST" or head.path != self.gate.path:
                return True
            response, close = await self._exchange(head)
            close = close or head.close or self.front.closing
            await self._send(render_response(response.status, response.body,
                                             response.content_type, dict(response.headers),
                                             close=close))
            if close:
                await self._drain()
                return False
            if not self.waited:
                await trio.lowlevel.checkpoint()  # pipelined requests: let others run too

    def interrupt(self) -> None:
        """End the wait for a next request (if it is still waiting; a busy one carries on)."""
        trio.lowlevel.notify_closing(self.sock)

    def _recv(self) -> bytes | None:
        """What the socket has now (b"" at end of stream), or None if nothing yet."""
        try:
            return self.sock.recv(RECEIVE_BYTES)
        except (BlockingIOError, InterruptedError):
            return None

    async def _receive(self) -> None:
        """More bytes of the current request, or ``_Closed`` if they stop or run late."""
        with trio.move_on_at(self.deadline):
            while (data := self._recv()) is None:
                self.waited = True
                await trio.lowlevel.wait_readable(self.sock)
            if data:
                self.buffer += data
                return
        raise _Closed

    async def _send(self, data: bytes) -> None:
        """Send it all, or ``_Closed`` if the peer stops reading for REQUEST_TIMEOUT_S."""
        view = memoryview(data)
        deadline = trio.current_time() + REQUEST_TIMEOUT_S
        while view:
            try:
                sent = self.sock.send(view)
            except (BlockingIOError, InterruptedError):
                self.waited = True
                with trio.move_on_at(deadline):
                    await trio.lowlevel.wait_writable(self.sock)
                    continue
                raise _Closed from None
            view = view[sent:]

    async def _next_head(self) -> RequestHead | None:
        """The next request head; None when the peer closed or keep-alive ran out."""
        if self.buffer:  # pipelined: the next request has started already
            self.deadline = trio.current_time() + REQUEST_TIMEOUT_S
        elif not await self._wait_idle():
            return None
        while (head := parse_head(self.buffer)) is None:
            await self._receive()
        return head

    async def _wait_idle(self) -> bool:
        """Wait for the first bytes of a request; False on end of stream or shutdown."""
        if self.front.closing:
            return False
        data = self._recv()
        if data is None:
            self.front._idle[self] = trio.current_time()
            try:
                while (data := self._recv()) is None:
                    self.waited = True
                    await trio.lowlevel.wait_readable(self.sock)
            except trio.ClosedResourceError:
                # interrupted (idle too long, or stopping); a request that arrived meanwhile
                # is still answered, with the connection closed after it when stopping
                data = self._recv()
                if data is None:
                    return False
            finally:
                del self.front._idle[self]
        if not data:
            return False
        self.buffer += data
        self.deadline = trio.current_time() + REQUEST_TIMEOUT_S
        return True

    async def _exchange(self, head: RequestHead) -> tuple[WebhookResponse, bool]:
        """The gate's answer to one request, and whether the connection must close after it.

        A body over ``maxBodyBytes`` is never read, whatever the answer: the connection
        closes after it instead. Any other refused body is read and dropped, so the
        connection stays usable.
        """
        gate = self.gate
        too_big = head.content_length > gate.max_body
        if not gate.enter(self.remote):
            if not too_big:
                await self._take_body(head)
            return TOO_MANY, too_big
        try:
            refusal = gate.refuse_head(head.headers, self.remote)
            if too_big:
                return refusal or TOO_LARGE, True
            body = await self._take_body(head)
            if refusal is not None:
                return refusal, False
            self.front.answered += 1
            response = await gate.respond(WebhookRequest(
                method="POST", path=head.path, query_string=head.query, headers=head.headers,
                body=body, remote_addr=self.remote, scheme="http",
                host=head.headers["host"]))
            return response, False
        finally:
            gate.leave(self.remote)

    async def _take_body(self, head: RequestHead) -> bytes:
        """Remove the request (head and body) from the buffer, reading what is still missing."""
        end = head.size + head.content_length
        while len(self.buffer) < end:
            await self._receive()
        body = bytes(self.buffer[head.size:end])
        del self.buffer[:end]
        return body

    async def _drain(self) -> None:
        """Half-close, then read (and drop) what the peer still sends, so it sees our answer.

        Closing a socket with unread input makes the kernel send a reset, which can destroy
        the response before the client reads it.
        """
        self.front._idle[self] = trio.current_time()  # a stop need not wait for this
        try:
            self.sock.shutdown(socket.SHUT_WR)
            taken = 0
            with trio.move_on_after(0 if self.front.closing else DRAIN_TIMEOUT_S):
                while taken < DRAIN_LIMIT_BYTES:
                    while (data := self._recv()) is None:
                        await trio.lowlevel.wait_readable(self.sock)
                    if not data:
                        break
                    taken += len(data)
        except (OSError, trio.ClosedResourceError):
            pass
        finally:
            del self.front._idle[self]


class _Rewound(trio.abc.HalfCloseableStream):
    """A socket stream that first gives back the bytes the fast path had already read.

    Hypercorn looks for ``socket`` (peer and local address) and treats a stream without
    ``do_handshake`` as plain TCP, which is what this is.
    """

    def __init__(self, stream: trio.SocketStream, replay: bytes) -> None:
        self.transport = stream
        self.socket = stream.socket
        self._replay = replay

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._replay:
            await trio.lowlevel.checkpoint()
            size = len(self._replay) if max_bytes is None else max_bytes
            chunk, self._replay = self._replay[:size], self._replay[size:]
            return chunk
        return bytes(await self.transport.receive_some(max_bytes))

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.transport.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.transport.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self.transport.send_eof()

    async def aclose(self) -> None:
        await self.transport.aclose()


def describe_binds(listeners: Sequence[trio.SocketListener]) -> list[str]:
    """``http://host:port`` for each listener, as Hypercorn reports its binds."""
    out = []
    for listener in listeners:
        host, port = listener.socket.getsockname()[:2]
        out.append(f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}")
    return out
