"""The fast path: one client connection answered in place, request after request.

A webhook (``POST <serve.path>`` with a plain ``Content-Length`` body, as ``http1.parse_head``
accepts it) is read, handed to the ``WebhookGate`` and answered on this connection's own task,
driving the non-blocking socket directly; a WebSocket upgrade the media route wants makes
``serve`` return MEDIA, anything else HYPERCORN, and ``front.HttpFront`` hands the connection,
with the bytes read so far, to the media route or to Hypercorn. This is the
per-request hot path: keep it free of extra layers (docs/benchmarks.md has the costs).

It enforces the request deadline itself (a started request must arrive whole within the
front's ``request_timeout_s``) and tells the front when it is idle, so the front's sweeper can
close it after the keep-alive timeout and its cap can shed it.
"""

from __future__ import annotations

import math
import socket
from typing import TYPE_CHECKING, Literal

import trio

from .errors import NotSimple, PeerClosed
from .handover import BUSY, IDLE, RECEIVING
from .http1 import CONTINUE, RequestHead, parse_head, render_response
from .providers import WebhookRequest, WebhookResponse
from .web import AMBIGUOUS_FRAMING, TOO_LARGE, TOO_MANY

if TYPE_CHECKING:
    from .front import HttpFront

# where a connection goes when the fast path lets go of it
Next = Literal["closed", "hypercorn", "media"]
CLOSED: Next = "closed"
HYPERCORN: Next = "hypercorn"
MEDIA: Next = "media"  # a WebSocket upgrade for ``streaming.streamPath``: the media route

RECEIVE_BYTES = 65536
DRAIN_TIMEOUT_S = 1.0  # after a refusal that closes, how long unread input is drained
DRAIN_LIMIT_BYTES = 1 << 20



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

    async def serve(self) -> Next:
        """Answer webhook requests until the connection ends (CLOSED) or must be handed over
        (HYPERCORN, or MEDIA for a WebSocket upgrade of the media route's path)."""
        while True:
            self.waited = False
            try:
                head = await self._next_head()
            except NotSimple as exc:  # hand over, unless refused before a 100 Continue
                if exc.declined is None:
                    return HYPERCORN
                route = self.front.media_route
                if route is not None and route.wants(*exc.declined):
                    return MEDIA
                return CLOSED if await self._refuse_before_continue(*exc.declined) else HYPERCORN
            if head is None:
                return CLOSED
            if head.method != "POST" or head.path != self.gate.path:
                return HYPERCORN
            response, close = await self._exchange(head)
            response = self.gate.stamp(head.headers, response)
            close = close or head.close or self.front.closing
            await self._send(render_response(response.status, response.body,
                                             response.content_type, dict(response.headers),
                                             close=close, keep_alive=head.http10))
            self.busy = False
            if close:
                await self._drain()
                return CLOSED
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
        """More bytes of the current request, or ``PeerClosed`` if they stop or run late."""
        with trio.move_on_at(self.deadline):
            while (data := self._recv()) is None:
                self.waited = True
                await trio.lowlevel.wait_readable(self.sock)
            if data:
                self.buffer += data
                return
        raise PeerClosed

    async def _send(self, data: bytes) -> None:
        """Send it all, or ``PeerClosed`` if the peer stops reading for the request timeout."""
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
                raise PeerClosed from None
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
        """Refuse here, and close, what Hypercorn should not be handed: a request framed
        both by ``Transfer-Encoding`` and ``Content-Length`` (h11 would serve it and keep the
        connection), or a webhook (chunked, say) that waits for ``100 Continue`` and will be
        refused anyway (h11 sends the 100 before any app runs)."""
        gate = self.gate
        if "transfer-encoding" in headers and "content-length" in headers:
            await self._refuse(AMBIGUOUS_FRAMING)
            return True
        if (method != "POST" or path != gate.path
                or headers.get("expect", "").lower() != "100-continue"):
            return False
        refusal = gate.refuse_head(headers, self.remote)
        if refusal is None and gate.full(self.remote):
            refusal = TOO_MANY
        if refusal is None:
            return False
        await self._refuse(refusal)
        return True

    async def _refuse(self, refusal: WebhookResponse) -> None:
        await self._send(render_response(refusal.status, refusal.body, refusal.content_type,
                                         dict(refusal.headers), close=True))
        await self._drain()

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
