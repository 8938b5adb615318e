"""A lean WebSocket client for the realtime STT: cheap sends on the per-frame path.

trio-websocket costs about a third of the daemon's time per streamed call (its send lock,
wsproto's general framing, a reader task and channel per connection). The realtime STT needs
little of that: one task sends text messages, one reads. So here wsproto (client role) does
the handshake and the receive side (parsing, UTF-8, fragments, close and ping), while an
outbound message is framed by ``mask_frame``: a header, a fresh 4-byte mask from
``os.urandom`` and the payload XORed through ``int.from_bytes`` in one big-int operation.

``LeanWebSocket`` offers what ``stt/pump.py`` uses of ``trio_websocket.WebSocketConnection``
(``send_message``, ``get_message``, ``ping``, ``aclose``, ``closed``) and raises the same
``ConnectionClosed`` (with a ``CloseReason``) and ``ConnectionRejected`` (with the HTTP
status), so the pump runs unchanged on either; tests still pass trio-websocket connections
of the in-memory fakes.

Sends are serialised by a lock taken with ``acquire_nowait`` (no checkpoint, no allocation)
on the fast path; only a send that finds another one in progress (a ping or pong beside an
append) waits for it. Bounded: connecting (TCP, TLS, the upgrade) by ``CONNECT_TIMEOUT_S``,
the handshake response by ``MAX_HANDSHAKE_BYTES``, one server message by
``max_message_size`` (bytes, or characters of a text message; a longer one closes with
1009), the closing handshake by ``CLOSE_TIMEOUT_S``. Nothing here logs; errors never
carry the request headers (the key).
"""

from __future__ import annotations

import os
import ssl
import struct
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import cast
from urllib.parse import urlsplit

import trio
from trio_websocket import CloseReason, ConnectionClosed, ConnectionRejected, HandshakeError
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.utilities import ProtocolError

CONNECT_TIMEOUT_S = 10.0  # TCP, TLS and the upgrade
CLOSE_TIMEOUT_S = 2.0  # waiting for the server's close frame after ours
MAX_HANDSHAKE_BYTES = 64 * 1024  # the upgrade response, or a refusal with its body
MAX_MESSAGE_BYTES = 1 << 20  # one server message unless the caller says otherwise
READ_CHUNK = 64 * 1024

_TEXT, _BINARY = 0x81, 0x82  # FIN + opcode: every message we send is one frame


def mask_frame(first: int, payload: bytes, mask: bytes) -> bytes:
    """One client frame (RFC 6455 §5.2): ``first`` (FIN, opcode), masked ``payload``."""
    n = len(payload)
    if n < 126:
        head = bytes((first, 0x80 | n))
    elif n < 1 << 16:
        head = struct.pack("!BBH", first, 0xFE, n)
    else:
        head = struct.pack("!BBQ", first, 0xFF, n)
    if not n:
        return head + mask
    key = mask * ((n + 3) >> 2)
    if len(key) != n:
        key = key[:n]
    masked = (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")
              ).to_bytes(n, "little")
    return head + mask + masked


class LeanWebSocket:
    """An open client connection. One task may send while another reads.

    ``get_message`` must not be called from two tasks at once (the pump has one reader).
    """

    def __init__(self, stream: trio.abc.Stream, ws: WSConnection, *,
                 max_message_size: int = MAX_MESSAGE_BYTES) -> None:
        self._stream = stream
        self._ws = ws
        self._max = max_message_size
        self._lock = trio.Lock()
        self._messages: deque[str | bytes] = deque()
        self._parts: list[str | bytes] = []
        self._size = 0
        self._pings: dict[bytes, trio.Event] = {}
        self._closed: CloseReason | None = None
        self._reading = False
        self._buffered = True

    @property
    def closed(self) -> CloseReason | None:
        """Why the connection closed, or None while it is open."""
        return self._closed

    async def send_message(self, message: str | bytes) -> None:
        """Send one text (``str``) or binary message as a single masked frame."""
        if self._closed is not None:
            raise ConnectionClosed(self._closed)
        if isinstance(message, str):
            frame = mask_frame(_TEXT, message.encode(), os.urandom(4))
        else:
            frame = mask_frame(_BINARY, message, os.urandom(4))
        await self._write(frame)

    async def get_message(self) -> str | bytes:
        """The next whole server message; ``ConnectionClosed`` once the connection ends."""
        messages = self._messages
        if self._buffered:  # frames that came with the 101, still unparsed in wsproto
            self._buffered = False
            for event in self._ws.events():
                await self._handle(event)
        while not messages:
            if self._closed is not None:
                raise ConnectionClosed(self._closed)
            self._reading = True
            try:
                data = await self._stream.receive_some(READ_CHUNK)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            finally:
                self._reading = False
            self._ws.receive_data(cast(bytes, data) or None)  # None: EOF, wsproto reports 1006
            for event in self._ws.events():
                await self._handle(event)
        return messages.popleft()

    async def ping(self, payload: bytes | None = None) -> None:
        """Send a ping and wait for its pong (read by whoever calls ``get_message``)."""
        if self._closed is not None or self._ws.state is not ConnectionState.OPEN:
            raise ConnectionClosed(self._closed or CloseReason(1000, "closing"))
        payload = os.urandom(4) if payload is None else payload
        if payload in self._pings:
            raise ValueError("a ping with this payload is already in flight")
        pong = self._pings[payload] = trio.Event()
        try:
            await self._write(self._ws.send(Ping(payload)))
            await pong.wait()
        finally:
            self._pings.pop(payload, None)
        if self._closed is not None:
            raise ConnectionClosed(self._closed)

    async def aclose(self, code: int = 1000, reason: str | None = None) -> None:
        """Close (our close frame, the server's answer within ``CLOSE_TIMEOUT_S``); idempotent."""
        if self._closed is not None:
            await trio.aclose_forcefully(self._stream)  # a no-op if already closed
            return
        try:
            with trio.move_on_after(CLOSE_TIMEOUT_S):
                if self._ws.state is ConnectionState.OPEN:
                    await self._write(self._ws.send(CloseConnection(code, reason or "")))
                while not self._reading and self._closed is None:
                    await self.get_message()  # until the server's close frame (or EOF)
        except ConnectionClosed:
            pass
        finally:
            self._finish(CloseReason(code, reason))
            await trio.aclose_forcefully(self._stream)

    async def _handle(self, event: Event) -> None:
        if isinstance(event, (TextMessage, BytesMessage)):
            self._collect(event)
            if self._size > self._max:
                await self._fail(1009, f"message longer than {self._max} bytes")
        elif isinstance(event, Ping):
            if self._ws.state is ConnectionState.OPEN:  # (not once our close is out)
                await self._write_quietly(self._ws.send(event.response()))
        elif isinstance(event, Pong):
            self._ponged(bytes(event.payload))
        elif isinstance(event, CloseConnection):
            if self._ws.state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
                # the server's close (answered) or a frame wsproto could not parse (ours)
                await self._write_quietly(self._ws.send(CloseConnection(event.code, "")))
            self._finish(CloseReason(event.code, event.reason or None))
            await trio.aclose_forcefully(self._stream)

    def _collect(self, event: TextMessage | BytesMessage) -> None:
        data: str | bytes = event.data if not isinstance(event.data, bytearray) else bytes(
            event.data)
        if not event.message_finished:
            self._parts.append(data)
            self._size += len(data)
            return
        whole: str | bytes = data
        if self._parts:
            self._parts.append(data)
            if isinstance(data, str):
                whole = "".join(cast("list[str]", self._parts))
            else:
                whole = b"".join(cast("list[bytes]", self._parts))
            self._parts = []
        self._size = 0
        if len(whole) <= self._max:
            self._messages.append(whole)
        else:
            self._size = len(whole)

    def _ponged(self, payload: bytes) -> None:
        """A pong answers its ping and every ping sent before it (RFC 6455 §5.5.3)."""
        if payload not in self._pings:
            return
        for key, event in list(self._pings.items()):
            event.set()
            del self._pings[key]
            if key == payload:
                break

    async def _fail(self, code: int, reason: str) -> None:
        if self._ws.state is ConnectionState.OPEN:
            await self._write_quietly(self._ws.send(CloseConnection(code, reason)))
        self._finish(CloseReason(code, reason))
        await trio.aclose_forcefully(self._stream)
        raise ConnectionClosed(self._closed)

    def _finish(self, reason: CloseReason) -> None:
        if self._closed is None:
            self._closed = reason
        for event in self._pings.values():
            event.set()  # their ping() raises ConnectionClosed

    async def _write(self, data: bytes) -> None:
        lock = self._lock
        try:
            lock.acquire_nowait()
        except trio.WouldBlock:
            await lock.acquire()
        try:
            await self._stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self._finish(CloseReason(1006, "the connection was lost"))
            raise ConnectionClosed(self._closed) from exc
        finally:
            lock.release()

    async def _write_quietly(self, data: bytes) -> None:
        """A control frame the reader owes the server; a dead socket shows on the next read."""
        try:
            await self._write(data)
        except ConnectionClosed:
            pass


async def handshake(stream: trio.abc.Stream, host: str, target: str,
                    headers: dict[str, str], *, max_message_size: int = MAX_MESSAGE_BYTES
                    ) -> LeanWebSocket:
    """Upgrade ``stream`` (the caller bounds the time); ``ConnectionRejected`` if not 101."""
    ws = WSConnection(ConnectionType.CLIENT)
    request = Request(host=host, target=target,
                      extra_headers=[(k.encode(), v.encode()) for k, v in headers.items()])
    await stream.send_all(ws.send(request))
    received = 0
    refusal: RejectConnection | None = None
    body = bytearray()
    try:
        while True:
            data = await stream.receive_some(READ_CHUNK)
            received += len(data)
            ws.receive_data(cast(bytes, data) or None)
            for event in ws.events():
                if isinstance(event, AcceptConnection):
                    return LeanWebSocket(stream, ws, max_message_size=max_message_size)
                if isinstance(event, RejectConnection):
                    refusal = event
                    if not event.has_body:
                        raise _rejected(refusal, None)
                elif isinstance(event, RejectData) and refusal is not None:
                    body += event.data
                    if event.body_finished:
                        raise _rejected(refusal, bytes(body))
            if not data:
                if refusal is not None:
                    raise _rejected(refusal, bytes(body))
                raise HandshakeError("the server closed the connection during the handshake")
            if received > MAX_HANDSHAKE_BYTES:  # (frames after a 101 in the same read are fine)
                if refusal is not None:  # an endless refusal: its status, the body cut short
                    raise _rejected(refusal, bytes(body[:MAX_HANDSHAKE_BYTES]))
                raise HandshakeError(f"handshake response over {MAX_HANDSHAKE_BYTES} bytes")
    except ProtocolError as exc:  # not a WebSocket answer (bad accept key, no upgrade, ...)
        raise HandshakeError(f"bad handshake response: {exc}") from None


def _rejected(event: RejectConnection, body: bytes | None) -> ConnectionRejected:
    return ConnectionRejected(event.status_code, tuple(event.headers), body)


async def connect(url: str, headers: dict[str, str], *,
                  connect_timeout: float = CONNECT_TIMEOUT_S,
                  max_message_size: int = MAX_MESSAGE_BYTES,
                  ssl_context: ssl.SSLContext | None = None) -> LeanWebSocket:
    """Open ``ws://`` or ``wss://`` ``url`` (TLS with SNI and certificate checks)."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError("a ws:// or wss:// URL with a host is needed")
    secure = parts.scheme == "wss"
    port = parts.port or (443 if secure else 80)
    host_header = parts.netloc.rpartition("@")[2]
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    with trio.move_on_after(connect_timeout) as scope:
        stream: trio.abc.Stream = await trio.open_tcp_stream(parts.hostname, port)
        try:
            if secure:
                stream = trio.SSLStream(stream, ssl_context or ssl.create_default_context(),
                                        server_hostname=parts.hostname, https_compatible=True)
                await stream.do_handshake()
            return await handshake(stream, host_header, target, headers,
                                   max_message_size=max_message_size)
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
    assert scope.cancelled_caught
    raise HandshakeError(f"no WebSocket within {connect_timeout:.0f} s")


@asynccontextmanager
async def open_websocket(url: str, headers: dict[str, str], *,
                         connect_timeout: float = CONNECT_TIMEOUT_S,
                         max_message_size: int = MAX_MESSAGE_BYTES,
                         ssl_context: ssl.SSLContext | None = None
                         ) -> AsyncIterator[LeanWebSocket]:
    """``connect``, and close (bounded) when the block ends."""
    ws = await connect(url, headers, connect_timeout=connect_timeout,
                       max_message_size=max_message_size, ssl_context=ssl_context)
    try:
        yield ws
    finally:
        await ws.aclose()
