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
come from another task (the call's player) while the route reads; ``route_stream`` writes
them in order, and a send on a dead or stalled socket marks the stream closed instead of
raising. Reading takes bytes straight from the socket's file descriptor (``_receive``).

How it is served, and why (measured on this 2-core machine, shared and noisy: server pinned
to one core, a client process on the other with K connections each sending 50 frames/s, a
~380-byte frame holding a ~300-byte Twilio ``media`` text with a 160-byte payload; server CPU
time per frame, msgspec + base64 included; figures are ranges over runs):

- trio-websocket's ``wrap_server_stream`` over a replaying stream: 42-50 us (a reader task
  and a channel hop per message, on top of wsproto);
- wsproto driven from the connection's own task on the ``trio.SocketStream``: 22-34 us, of
  which wsproto's frame parsing is 8-14 us (the rest is trio's wake-up and the syscalls;
  driving the raw non-blocking socket as the webhook fast path does was within the noise);
- this route (wsproto for the handshake, control frames and anything unusual; the common
  whole masked text frame read directly, ``ws_frames``): 23-27 us at K=50 and K=200 through
  the real front, ``RouteStream.received`` alone 5 us a frame against 15 us through wsproto.

So the route drives wsproto itself on the ``trio.SocketStream`` the front gives it.

The route owns no call logic: what a stream's audio means is the handler's business.
"""

from __future__ import annotations

import logging
import math
import os
from typing import TYPE_CHECKING

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from ..front_limits import Throttled
from ..http1 import render_response
from ..providers import WebhookRequest
from .route_limits import Admission
from .route_stream import SEND_TIMEOUT_S, RouteStream
from .stream import Started, StreamAuthenticator, StreamSessions

if TYPE_CHECKING:
    from ..config import VoiceCallConfig

log = logging.getLogger("voicecall.media")

IDLE_TIMEOUT_S = 30.0  # attached, nothing received for this long: the carrier is gone
IDLE_GRANULARITY_S = 1.0  # the idle deadline is pushed forward at most this often
CLOSE_DRAIN_S = 1.0  # after our close frame, how long the peer's remaining bytes are read
CLOSE_ALL_TIMEOUT_S = 2.0  # close_all's bound on sending every close frame
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
        self._draining: dict[trio.SocketStream, float] = {}  # refused or ended: since when
        self._full = Throttled("media stream refused (503)", logger=log)
        self._refused_403 = Throttled("media stream upgrade refused (403)", logger=log)
        self._skipped = Throttled("media stream message skipped", logger=log)
        self._failed = Throttled("media stream handler failed", logger=log)

    @property
    def pending(self) -> int:
        return self.admission.pending

    @property
    def open(self) -> int:
        return self.admission.open

    def wants(self, method: str, path: str, headers: dict[str, str]) -> bool:
        """Is this request head (as ``http1`` declined it) a WebSocket upgrade for us?"""
        return (method == "GET" and path == self.path
                and headers.get("upgrade", "").strip().lower() == "websocket"
                # an upgrade has no body: anything framed otherwise is Hypercorn's to refuse
                and "transfer-encoding" not in headers
                and headers.get("content-length", "0") == "0")

    async def close_all(self, code: int = 1001) -> None:
        """Refuse new streams (503), close every open one with ``code`` and wait until each
        has told its handler ``stopped`` (all bounded by ``CLOSE_ALL_TIMEOUT_S``)."""
        self.closing = True
        streams = list(self.streams)
        with trio.move_on_after(CLOSE_ALL_TIMEOUT_S):
            async with trio.open_nursery() as nursery:
                for stream in streams:
                    nursery.start_soon(stream.close, code, "going away")
            for stream in streams:
                await stream.done.wait()
        for stream in streams:
            stream._dead()

    async def serve(self, stream: trio.SocketStream, replay: bytes, remote_addr: str) -> None:
        """Serve one upgrade request (its head is in ``replay``) until the stream ends; the
        caller closes ``stream`` afterwards."""
        refusal = SHUTTING_DOWN if self.closing else self.admission.admit(remote_addr)
        try:
            if refusal is not None:
                self.refused += 1
                self._full(trio.current_time(), refusal)
                self._draining[stream] = trio.current_time()
                await _answer(stream, TOO_MANY)
            else:
                attached = False
                try:
                    attached = await self._serve_admitted(stream, replay, remote_addr)
                finally:
                    self.admission.release(remote_addr, pending=not attached)
            self._draining.setdefault(stream, trio.current_time())
            await _drain(stream)  # (the slot is free while this lasts; a stop cuts it short)
        finally:
            self._draining.pop(stream, None)

    def draining_since(self, stream: trio.SocketStream) -> float | None:
        """When ``stream`` became one that is only refused or drained (it holds no stream
        slot), or None. The front may shed such a connection: else a flood of refused
        upgrades, each held open by its sender, would fill the front's cap for webhooks."""
        return self._draining.get(stream)

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
            stream.done.set()
        return stream.handler is not None

    async def _read(self, stream: RouteStream, socket: trio.SocketStream, rest: bytes) -> None:
        ending: tuple[int, str] | None = None
        armed = -math.inf  # when the idle deadline was last pushed forward (once attached)
        rearm_s = min(IDLE_GRANULARITY_S, self.idle_timeout_s / 4)
        fd: int = getattr(getattr(socket, "socket", None), "fileno", lambda: -1)()
        with stream.reader:
            with trio.CancelScope(deadline=trio.current_time() + self.pre_start_s) as timer:
                data = rest
                while ending is None:
                    if not data:
                        data = await _receive(fd) if fd >= 0 else await _receive_from(socket)
                        if not data:
                            return
                    try:
                        replies, ending = stream.received(data)
                    except (RemoteProtocolError, LocalProtocolError):
                        replies, ending = [], (1002, "protocol error")
                    except Exception:
                        self._failed(trio.current_time(), "see the traceback at debug level")
                        log.debug("media stream handler failed", exc_info=True)
                        replies, ending = [], (1011, "internal error")
                    for reply in replies:  # pongs, the reply to a close
                        await stream._send(reply)
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


async def _receive(fd: int) -> bytes:
    """The next bytes from the socket (b"" at its end), straight from the non-blocking file
    descriptor: one wake-up and one read per arrival, where ``SocketStream.receive_some``
    adds a failed read and a second trip through the scheduler (measured, see
    docs/benchmarks.md). Always one checkpoint first, so a peer that floods cannot keep the
    task from being cancelled or starve the others."""
    while True:
        await trio.lowlevel.wait_readable(fd)
        try:
            return os.read(fd, RECEIVE_BYTES)
        except BlockingIOError:
            continue  # (a spurious wake-up)
        except OSError:  # reset by the peer: the same as its end
            return b""


async def _receive_from(stream: trio.abc.ReceiveStream) -> bytes:
    """``_receive`` for a stream that is not a socket (tests' memory streams)."""
    try:
        return bytes(await stream.receive_some(RECEIVE_BYTES))
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return b""


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
