"""The daemon's HTTP listener: carrier webhooks answered directly, the rest handed to Hypercorn.

Why a front at all: every carrier callback is a small ``POST`` to one path, and Hypercorn's
per-request machinery (an app task, ~14 awaited protocol events, a re-armed idle timer) cost
about 930 µs of CPU per request on the reference machine, several times our own signature
check and call handling. That capped one core near 1,000 webhooks/s and put p99 at 50
connections near 90 ms. docs/benchmarks.md has the measurements before and after.

So one trio listener owns the port. Each connection starts here:

- a request ``http1.parse_head`` recognises as ``POST <serve.path> HTTP/1.1`` (or 1.0) with
  a plain ``Content-Length`` body is answered in place, through the same ``WebhookGate`` the
  ASGI endpoint uses (same checks, same answers, one in-flight count per IP);
- anything else (``/healthz``, 404s, the media WebSocket, chunked bodies, upgrades, malformed
  bytes) hands the connection over to Hypercorn, with the bytes already read replayed first,
  and Hypercorn serves it until it closes.

Every connection is bounded in time, whoever serves it: a started request must arrive whole
within ``request_timeout_s`` (10 s; a byte every few seconds does not extend it), and an idle
one closes after the keep-alive timeout (30 s). The fast path enforces both itself; for
handed-over connections (HTTP/1.x and h2) a ``handover.Handed`` watches the bytes arriving and
the ASGI messages of each request, and the sweeper closes the connection past its deadline. A
request being handled (body complete, answer not yet sent) has no deadline, nor has a
connection once it was upgraded (a WebSocket accepted: the media stream lives as long as its
call, and its own timeouts are the stream route's job).

The number of open connections is capped (``serve.maxConnections``, lowered below the process's
file descriptor limit so the control socket and the journal always have descriptors): at the
cap, a new connection sheds the oldest idle one, else the one whose request has been arriving
longest; one being handled is never shed, and when every connection is, the new one is closed.

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

from .handover import BUSY, IDLE, RECEIVING, Handed, Rewound
from .http1 import CONTINUE, NotSimple, RequestHead, parse_head, render_response
from .providers import WebhookRequest, WebhookResponse
from .web import TOO_LARGE, TOO_MANY, WebhookGate

log = logging.getLogger("voicecall.http")

RECEIVE_BYTES = 65536
REQUEST_TIMEOUT_S = 10.0  # a started request must arrive whole within this (slow senders)
KEEP_ALIVE_S = 30.0  # an idle connection closes after this (carriers keep theirs open)
DRAIN_TIMEOUT_S = 1.0  # after a refusal that closes, how long unread input is drained
DRAIN_LIMIT_BYTES = 1 << 20
SWEEP_INTERVAL_S = 1.0
MAX_CONNECTIONS = 768  # serve.maxConnections' default: well under the usual 1024 fd limit
# descriptors kept free below RLIMIT_NOFILE for everything that is not an HTTP connection:
# the control socket and its clients, the journal, the store lock, listeners, outgoing
# REST connections, the event loop's own
FD_RESERVE = 128
LOG_EVERY_S = 60.0  # repeated warnings (accept failures, a full house): one line this often
# accept() failures that mean "out of resources for now", as trio.serve_listeners treats them
_ACCEPT_PAUSE_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}


def connection_cap(configured: int, fd_limit: int, reserve: int = FD_RESERVE) -> int:
    """The number of HTTP connections to allow: ``configured``, lowered so that ``reserve``
    descriptors stay free below ``fd_limit`` (the soft RLIMIT_NOFILE), and at least 1."""
    return max(1, min(configured, fd_limit - reserve))


class _Throttled:
    """A warning that may recur many times a second, logged at most once per ``every_s``
    with the number of times it happened since the last line (and no traceback)."""

    def __init__(self, message: str, every_s: float = LOG_EVERY_S) -> None:
        self.message = message
        self.every_s = every_s
        self.count = 0
        self._next_at = -math.inf

    def __call__(self, now: float, detail: str) -> None:
        self.count += 1
        if now >= self._next_at:
            log.warning("%s: %s (%d time(s) since the last such line)", self.message, detail,
                        self.count)
            self.count = 0
            self._next_at = now + self.every_s


class _Closed(Exception):
    """The peer went away or stalled: drop the connection."""


class HttpFront:
    """Accepts connections on the listeners; see the module docstring for the split."""

    def __init__(self, app: Any, hypercorn_config: Any, gate: WebhookGate, *,
                 max_connections: int | None = None,
                 request_timeout_s: float | None = None) -> None:
        from hypercorn.utils import wrap_app

        self.app = wrap_app(app, hypercorn_config.wsgi_max_body_size, "asgi")
        self.hc = hypercorn_config
        self.gate = gate
        self.keep_alive_s = float(hypercorn_config.keep_alive_timeout)
        # (the module's defaults are read here, so a test can set them small)
        self.request_timeout_s = request_timeout_s or REQUEST_TIMEOUT_S
        self.max_connections = max_connections or MAX_CONNECTIONS
        self.handed_over = 0  # connections given to Hypercorn (tests and diagnostics)
        self.answered = 0  # webhook requests answered on the fast path
        self.shed = 0  # connections closed to make room for a new one
        self.refused = 0  # new connections closed because every open one was busy
        self.expired = 0  # handed-over connections closed past their deadline
        self.closing = False
        self._idle: dict[_Connection, float] = {}  # connection -> when it became idle
        # every open connection, fast path or handed over, oldest first
        self._open: dict[_Connection | Handed, None] = {}
        self._starting = 0  # accepted, its task not yet running
        self._accept_failed = _Throttled("cannot accept HTTP connections for now")
        self._full = _Throttled("HTTP connection cap reached and every connection is busy; "
                                "closing new ones")
        self._state: dict[str, Any] = {}
        self._context: Any = None

    @property
    def open_connections(self) -> int:
        return len(self._open) + self._starting

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
                self._accept_failed(trio.current_time(), exc.strerror or str(exc))
                await trio.sleep(0.1)
                continue
            plain = socket.socket(fileno=stream.socket.detach())  # ours to drive directly
            if not self._make_room():
                self.refused += 1
                self._full(trio.current_time(), f"{self.open_connections} open")
                plain.close()
                continue
            plain.setblocking(False)
            self._starting += 1
            connections.start_soon(self._connection, plain)

    def _make_room(self) -> bool:
        """Below the cap, or shed one connection to get there; False if none may be shed."""
        if self.open_connections < self.max_connections:
            return True
        victim: _Connection | Handed | None = None
        best = (BUSY, 0.0)
        for connection in self._open:
            phase = connection.phase()
            if phase < best:
                victim, best = connection, phase
        if victim is None:
            return False
        del self._open[victim]
        self.shed += 1
        victim.drop()
        return True

    async def _sweep_idle(self) -> None:
        """Close connections past their deadline: fast-path ones idle for longer than the
        keep-alive timeout, handed-over ones past whichever deadline applies to them.

        One sweeper instead of a timer per request: arming and disarming a deadline around
        every read was a measurable share of a webhook's cost.
        """
        while True:
            await trio.sleep(min(SWEEP_INTERVAL_S, self.keep_alive_s / 4,
                                 self.request_timeout_s / 4))
            now = trio.current_time()
            cutoff = now - self.keep_alive_s
            for connection, since in list(self._idle.items()):
                if since <= cutoff:
                    connection.interrupt()
            for other in list(self._open):
                if isinstance(other, Handed) and other.deadline() <= now:
                    self.expired += 1
                    other.drop()

    async def _begin_close(self) -> None:
        """Stop keep-alive: idle connections close now, busy ones after their response."""
        self.closing = True
        for connection in list(self._idle):
            connection.interrupt()
        for other in list(self._open):
            if isinstance(other, Handed) and other.phase()[0] == IDLE:
                other.drop()
        await self._context.terminated.set()  # Hypercorn's connections do the same

    async def _connection(self, sock: socket.socket) -> None:
        self._starting -= 1
        hand_over = False
        connection: _Connection | None = None
        try:
            connection = _Connection(self, sock)
            self._open[connection] = None
            try:
                hand_over = await connection.serve()
            except (_Closed, trio.ClosedResourceError, OSError):
                pass
            if hand_over and sock.fileno() >= 0:  # (not if it was shed meanwhile)
                del self._open[connection]
                await self._hand_over(sock, bytes(connection.buffer), connection.started)
        except OSError:
            pass  # the peer was gone before we could ask who it was
        except Exception:
            log.exception("HTTP connection failed")
        finally:
            if connection is not None:
                self._open.pop(connection, None)
            if not hand_over and sock.fileno() >= 0:
                trio.lowlevel.notify_closing(sock)
                sock.close()

    async def _hand_over(self, sock: socket.socket, replay: bytes, started: float) -> None:
        from hypercorn.trio.tcp_server import TCPServer
        from hypercorn.typing import ConnectionState

        self.handed_over += 1
        try:
            stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
        except BaseException:
            sock.close()
            raise
        state = ConnectionState(self._state.copy())
        handed = Handed(self, stream, started)
        rewound: Any = Rewound(stream, replay, handed)  # Hypercorn types it as SSLStream
        self._open[handed] = None
        try:
            with handed.cancel_scope:
                await TCPServer(handed, self.hc, self._context, state, rewound)
        finally:
            self._open.pop(handed, None)
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
        self.started = trio.current_time()  # when the request being received began
        self.deadline = math.inf  # for the request being received
        self.busy = False  # a complete request is being answered
        self.waited = False  # did this request reach a checkpoint yet?

    def phase(self) -> tuple[int, float]:
        """(IDLE, since) waiting for a request, (RECEIVING, since) reading one, or BUSY."""
        since = self.front._idle.get(self)
        if since is not None:
            return IDLE, since
        if self.busy:
            return BUSY, 0.0
        return RECEIVING, self.started

    def drop(self) -> None:
        """Close now (shed at the cap): wakes the task, which finds the socket closed."""
        if self.sock.fileno() >= 0:
            trio.lowlevel.notify_closing(self.sock)
            self.sock.close()

    async def serve(self) -> bool:
        """Answer webhook requests until the connection ends (False) or must be handed over."""
        while True:
            self.waited = False
            try:
                head = await self._next_head()
            except NotSimple as exc:  # hand over, unless refused before a 100 Continue
                return exc.declined is None or not await self._refuse_before_continue(
                    *exc.declined)
            if head is None:
                return False
            if head.method != "POST" or head.path != self.gate.path:
                return True
            response, close = await self._exchange(head)
            close = close or head.close or self.front.closing
            await self._send(render_response(response.status, response.body,
                                             response.content_type, dict(response.headers),
                                             close=close, keep_alive=head.http10))
            self.busy = False
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
        """Send it all, or ``_Closed`` if the peer stops reading for the request timeout."""
        view = memoryview(data)
        deadline = trio.current_time() + self.front.request_timeout_s
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
            self.started = trio.current_time()
            self.deadline = self.started + self.front.request_timeout_s
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
        self.started = trio.current_time()
        self.deadline = self.started + self.front.request_timeout_s
        return True

    async def _exchange(self, head: RequestHead) -> tuple[WebhookResponse, bool]:
        """The gate's answer to one request, and whether the connection must close after it.

        A body over ``maxBodyBytes`` is never read, whatever the answer: the connection
        closes after it instead. Any other refused body is read and dropped, so the
        connection stays usable. A client that sent ``Expect: 100-continue`` and waits is
        refused (and the connection closed) before it is told to send its body. The in-flight
        slot is taken only once the body is complete (see ``WebhookGate.enter``).
        """
        gate = self.gate
        refusal = gate.refuse_head(head.headers, self.remote)
        if head.content_length > gate.max_body:
            return refusal or TOO_LARGE, True
        if head.expect_continue and len(self.buffer) < head.size + head.content_length:
            if refusal is None and gate.full(self.remote):
                refusal = TOO_MANY
            if refusal is not None:
                return refusal, True
            if len(self.buffer) == head.size:  # not one byte of the body sent yet
                await self._send(CONTINUE)
        body = await self._take_body(head)
        if refusal is not None:
            return refusal, False
        if not gate.enter(self.remote):
            return TOO_MANY, False
        self.busy = True
        try:
            self.front.answered += 1
            response = await gate.respond(WebhookRequest(
                method="POST", path=head.path, query_string=head.query, headers=head.headers,
                body=body, remote_addr=self.remote, scheme="http",
                host=head.headers["host"]))
            return response, False
        finally:
            gate.leave(self.remote)
            self.busy = False  # sending the answer is not "being handled": it may be shed

    async def _refuse_before_continue(self, method: str, path: str,
                                      headers: dict[str, str]) -> bool:
        """A webhook Hypercorn would serve (chunked, say) that waits for ``100 Continue``:
        answer a refusal here, and close, since h11 sends the 100 before any app runs."""
        gate = self.gate
        if (method != "POST" or path != gate.path
                or headers.get("expect", "").lower() != "100-continue"):
            return False
        refusal = gate.refuse_head(headers, self.remote)
        if refusal is None and gate.full(self.remote):
            refusal = TOO_MANY
        if refusal is None:
            return False
        await self._send(render_response(refusal.status, refusal.body, refusal.content_type,
                                         dict(refusal.headers), close=True))
        await self._drain()
        return True

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


def describe_binds(listeners: Sequence[trio.SocketListener]) -> list[str]:
    """``http://host:port`` for each listener, as Hypercorn reports its binds."""
    out = []
    for listener in listeners:
        host, port = listener.socket.getsockname()[:2]
        out.append(f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}")
    return out
