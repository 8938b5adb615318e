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
- a WebSocket upgrade for ``streaming.streamPath`` goes to the media route
  (``media/route.py``), when the daemon built one (a carrier with media streams, streaming
  active), with the bytes already read;
- anything else (``/healthz``, 404s, chunked bodies, other upgrades, malformed bytes) hands
  the connection over to Hypercorn, with the bytes already read replayed first, and Hypercorn
  serves it until it closes.

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

This module is the listener: the accept loop, the sweeper, the hand-over and the drain at
stop. A fast-path connection is ``front_connection.py``; the cap's arithmetic, the choice of
whom to shed and the once-a-minute warnings are ``front_limits.py``; a handed-over connection
as the front sees it is ``handover.py``.

Hypercorn still runs the ASGI lifespan and serves every connection it is given exactly as
``hypercorn.trio.serve`` would; only the accept loop is ours. That uses three Hypercorn
classes that are not its documented API (``TCPServer``, ``WorkerContext``, ``Lifespan``), so
the version is bounded in pyproject.toml and tests/e2e/test_front.py exercises the hand-over.
"""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import trio

from .errors import PeerClosed
from .front_connection import CLOSED, MEDIA, Next, _Connection
from .front_limits import Throttled, shed_candidate
from .handover import BUSY, IDLE, Handed, Rewound
from .web import WebhookGate

if TYPE_CHECKING:
    from .media.route import MediaRoute

log = logging.getLogger("voicecall.http")

REQUEST_TIMEOUT_S = 10.0  # a started request must arrive whole within this (slow senders)
KEEP_ALIVE_S = 30.0  # an idle connection closes after this (carriers keep theirs open)
SWEEP_INTERVAL_S = 1.0
MAX_CONNECTIONS = 768  # serve.maxConnections' default: well under the usual 1024 fd limit
# accept() failures that mean "out of resources for now", as trio.serve_listeners treats them
_ACCEPT_PAUSE_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}


class HttpFront:
    """Accepts connections on the listeners; see the module docstring for the split."""

    def __init__(self, app: Any, hypercorn_config: Any, gate: WebhookGate, *,
                 max_connections: int | None = None,
                 request_timeout_s: float | None = None,
                 media_route: MediaRoute | None = None) -> None:
        from hypercorn.utils import wrap_app

        self.app = wrap_app(app, hypercorn_config.wsgi_max_body_size, "asgi")
        self.hc = hypercorn_config
        self.gate = gate
        self.media_route = media_route  # WebSocket upgrades of streaming.streamPath go there
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
        self._open: dict[_Connection | Handed | _MediaSlot, None] = {}
        self._starting = 0  # accepted, its task not yet running
        self._accept_failed = Throttled("cannot accept HTTP connections for now")
        self._full = Throttled("HTTP connection cap reached and every connection is busy; "
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
        victim = shed_candidate(self._open)
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
            after: Next = CLOSED
            try:
                after = await connection.serve()
            except (PeerClosed, trio.ClosedResourceError, OSError):
                pass
            hand_over = after != CLOSED
            if hand_over and sock.fileno() >= 0:  # (not if it was shed meanwhile)
                del self._open[connection]
                if after == MEDIA:
                    await self._to_media(sock, bytes(connection.buffer), connection.remote)
                else:
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


    async def _to_media(self, sock: socket.socket, replay: bytes, remote: str) -> None:
        """Give the connection to the media route, which bounds its own streams; here it is
        counted against the cap and never shed (the route's admission decides)."""
        assert self.media_route is not None
        try:
            stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
        except BaseException:
            sock.close()
            raise
        slot = _MediaSlot(stream, self.media_route)
        self._open[slot] = None
        try:
            await self.media_route.serve(stream, replay, remote)
        finally:
            self._open.pop(slot, None)
            with trio.CancelScope(shield=True):
                await stream.aclose()


class _MediaSlot:
    """A connection the media route serves, as the front's cap sees it: busy (never shed),
    except once the route only refuses or drains it (then idle since that moment)."""

    def __init__(self, stream: trio.SocketStream, route: MediaRoute) -> None:
        self.stream = stream
        self.route = route

    def phase(self) -> tuple[int, float]:
        since = self.route.draining_since(self.stream)
        return (BUSY, 0.0) if since is None else (IDLE, since)

    def drop(self) -> None:  # the route's read or send sees the socket closed
        self.stream.socket.close()


def describe_binds(listeners: Sequence[trio.SocketListener]) -> list[str]:
    """``http://host:port`` for each listener, as Hypercorn reports its binds."""
    out = []
    for listener in listeners:
        host, port = listener.socket.getsockname()[:2]
        out.append(f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}")
    return out
