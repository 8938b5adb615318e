"""The lean realtime-STT WebSocket client (``stt/ws_client.py``) against a wsproto server.

The server is wsproto (server role) on an in-memory stream, or on a loopback socket for
``connect``; hostile answers (refusals, bad upgrades, huge or fragmented messages, close
codes, a peer that vanishes) are written by hand. wss is not tested live (no network).
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed, ConnectionRejected, HandshakeError
from wsproto import ConnectionType, WSConnection
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

from voicecall_trio.stt import ws_client
from voicecall_trio.stt.ws_client import LeanWebSocket, handshake


class Server:
    """The server end: wsproto over a stream, recording what it received."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.SERVER)
        self.request: Request | None = None
        self.messages: list[str | bytes] = []
        self.pings: list[bytes] = []
        self.closes: list[int] = []
        self._parts: list[str | bytes] = []

    async def read_request(self) -> Request:
        while self.request is None:
            self.ws.receive_data(await self.stream.receive_some(65536))
            for event in self.ws.events():
                if isinstance(event, Request):
                    self.request = event
        return self.request

    async def accept(self) -> None:
        await self.read_request()
        await self.stream.send_all(self.ws.send(AcceptConnection()))

    async def send(self, event: Event) -> None:
        await self.stream.send_all(self.ws.send(event))

    async def receive(self, auto_pong: bool = True) -> list[Event]:
        """One read's worth of events (answers pings itself unless told not to)."""
        data = await self.stream.receive_some(65536)
        self.ws.receive_data(data or None)
        events = list(self.ws.events())
        for event in events:
            if isinstance(event, (TextMessage, BytesMessage)):
                self._parts.append(event.data)
                if event.message_finished:
                    first = self._parts[0]
                    self.messages.append("".join(self._parts) if isinstance(first, str)
                                         else b"".join(self._parts))  # type: ignore[arg-type]
                    self._parts = []
            elif isinstance(event, Ping):
                self.pings.append(bytes(event.payload))
                if auto_pong:
                    await self.send(event.response())
            elif isinstance(event, CloseConnection):
                self.closes.append(event.code)
                if self.ws.state.name == "REMOTE_CLOSING":
                    with contextlib.suppress(trio.BrokenResourceError):
                        await self.send(event.response())  # the client may be gone already
        return events

    async def serve(self, auto_pong: bool = True) -> None:
        """Read until the client closes or the stream ends."""
        while True:
            try:
                events = await self.receive(auto_pong)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            if any(isinstance(e, CloseConnection) for e in events):
                return


@asynccontextmanager
async def pair(max_message_size: int = ws_client.MAX_MESSAGE_BYTES,
               headers: dict[str, str] | None = None
               ) -> AsyncIterator[tuple[LeanWebSocket, Server, trio.Nursery]]:
    """A handshaken client and its server over memory streams."""
    client_stream, server_stream = trio.testing.memory_stream_pair()
    server = Server(server_stream)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.accept)
        ws = await handshake(client_stream, "stt.test", "/v1/realtime?intent=transcription",
                             headers or {}, max_message_size=max_message_size)
        yield ws, server, nursery
        nursery.cancel_scope.cancel()


def accept_key(request: bytes) -> bytes:
    key = next(line.split(b":", 1)[1].strip() for line in request.split(b"\r\n")
               if line.lower().startswith(b"sec-websocket-key:"))
    digest = hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()
    return base64.b64encode(digest)


async def answer_with(response: bytes | None, *, key_from_request: bool = False,
                      close: bool = True) -> trio.abc.Stream:
    """A client stream whose server reads the request and writes ``response`` (raw)."""
    client_stream, server_stream = trio.testing.memory_stream_pair()

    async def respond() -> None:
        request = b""
        while b"\r\n\r\n" not in request:
            request += await server_stream.receive_some(65536)
        if response is not None:
            data = response
            if key_from_request:
                data = data.replace(b"KEY", accept_key(request))
            await server_stream.send_all(data)
        if close:
            await server_stream.aclose()

    trio.lowlevel.spawn_system_task(respond)
    return client_stream


async def test_the_upgrade_carries_the_target_host_and_headers() -> None:
    async with pair(headers={"Authorization": "Bearer sk-test"}) as (ws, server, nursery):
        nursery.start_soon(server.serve)
        assert server.request is not None
        assert server.request.target == "/v1/realtime?intent=transcription"
        assert server.request.host == "stt.test"
        assert (b"authorization", b"Bearer sk-test") in server.request.extra_headers
        await ws.aclose()


async def test_messages_are_masked_frames_the_server_reads_in_order() -> None:
    async with pair() as (ws, server, nursery):
        nursery.start_soon(server.serve)
        texts = [f'{{"n": {i}, "pad": "{"x" * (i * 97)}"}}' for i in range(40)]
        for text in texts:
            await ws.send_message(text)
        await ws.send_message(b"\x00\x01binary")
        await ws.aclose()
        # aclose returned on the server's answer, sent after it recorded everything
    assert server.messages == [*texts, b"\x00\x01binary"]
    assert server.closes == [1000]
    assert ws.closed is not None and ws.closed.code == 1000


async def test_each_frame_gets_a_fresh_mask() -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    ws = LeanWebSocket(client_stream, WSConnection(ConnectionType.CLIENT))
    await ws.send_message("same")
    await ws.send_message("same")
    raw = await server_stream.receive_some(1000)
    first, second = raw[:10], raw[10:20]
    assert first[:2] == second[:2] == bytes((0x81, 0x84))
    assert first[2:6] != second[2:6] and first[6:] != second[6:]


@pytest.mark.parametrize(("status", "body"), [(401, b'{"error":"bad key"}'), (503, b"")])
async def test_a_refused_upgrade_raises_with_its_status_and_body(status: int,
                                                                  body: bytes) -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    server = Server(server_stream)

    async def refuse() -> None:
        await server.read_request()
        await server.send(RejectConnection(status_code=status, has_body=bool(body),
                                           headers=[(b"content-length", str(len(body)).encode())]
                                           if body else []))
        if body:
            await server.send(RejectData(data=body))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(refuse)
        with pytest.raises(ConnectionRejected) as refused:
            await handshake(client_stream, "h", "/", {"Authorization": "Bearer sk-secret"})
    assert refused.value.status_code == status
    assert (refused.value.body or b"") == body
    assert "sk-secret" not in repr(refused.value) and "sk-secret" not in str(refused.value)


@pytest.mark.parametrize("response", [
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: d3Jvbmc=\r\n\r\n",  # the wrong accept key
    b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: KEY\r\n\r\n",  # no Upgrade header
    b"not http at all\r\n\r\n",
])
async def test_a_bad_upgrade_answer_is_a_handshake_error(response: bytes) -> None:
    stream = await answer_with(response, key_from_request=True)
    with pytest.raises(HandshakeError) as failed:
        await handshake(stream, "h", "/", {"Authorization": "Bearer sk-secret"})
    assert not isinstance(failed.value, ConnectionRejected)
    assert "sk-secret" not in str(failed.value)


async def test_a_right_accept_key_written_by_hand_is_accepted() -> None:
    stream = await answer_with(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: KEY\r\n\r\n\x81\x05hello", key_from_request=True, close=False)
    ws = await handshake(stream, "h", "/", {})
    assert await ws.get_message() == "hello"  # a message in the same read as the 101


@pytest.mark.parametrize("response", [
    None,  # the server closes without a word
    b"HTTP/1.1 101 Switching Protocols\r\n",  # ... or halfway through its head
    b"HTTP/1.1 200 OK\r\nX: " + b"y" * (ws_client.MAX_HANDSHAKE_BYTES + 10),  # endless head
])
async def test_a_handshake_cut_short_or_endless_is_an_error(response: bytes | None) -> None:
    stream = await answer_with(response)
    with pytest.raises(HandshakeError):
        await handshake(stream, "h", "/", {})


async def test_fragmented_server_messages_are_joined() -> None:
    async with pair() as (ws, server, _):
        await server.send(TextMessage(data="Hello, ", message_finished=False))
        await server.send(TextMessage(data="wörld", message_finished=False))
        await server.send(Ping(b"p1"))  # a control frame between fragments
        await server.send(TextMessage(data="!", message_finished=True))
        await server.send(BytesMessage(data=b"\x01\x02", message_finished=False))
        await server.send(BytesMessage(data=b"\x03", message_finished=True))
        assert await ws.get_message() == "Hello, wörld!"
        assert await ws.get_message() == b"\x01\x02\x03"
        events = await server.receive()
        assert [type(e) for e in events] == [Pong]  # the client answered the ping
        assert bytes(events[0].payload) == b"p1"  # type: ignore[attr-defined]


@pytest.mark.parametrize("fragments", [1, 4])
async def test_an_oversized_server_message_closes_with_1009(fragments: int) -> None:
    async with pair(max_message_size=1000) as (ws, server, _):
        piece = "x" * (1200 // fragments)
        for i in range(fragments):
            await server.send(TextMessage(data=piece, message_finished=i == fragments - 1))
        with pytest.raises(ConnectionClosed) as closed:
            await ws.get_message()
        assert closed.value.reason is not None and closed.value.reason.code == 1009
        await server.receive()
        assert server.closes == [1009]
        with pytest.raises(ConnectionClosed):
            await ws.send_message("after the close")


async def test_a_message_of_exactly_the_limit_passes() -> None:
    async with pair(max_message_size=1000) as (ws, server, _):
        await server.send(TextMessage(data="y" * 1000))
        assert await ws.get_message() == "y" * 1000


@pytest.mark.parametrize(("code", "reason"), [(1000, ""), (1011, "internal error"),
                                              (4000, "custom")])
async def test_a_server_close_raises_with_its_code_and_is_answered(code: int,
                                                                    reason: str) -> None:
    async with pair() as (ws, server, _):
        await server.send(TextMessage(data="last words"))
        await server.send(CloseConnection(code=code, reason=reason))
        assert await ws.get_message() == "last words"
        with pytest.raises(ConnectionClosed) as closed:
            await ws.get_message()
        assert closed.value.reason is not None and closed.value.reason.code == code
        assert (closed.value.reason.reason or "") == reason
        events = await server.receive()
        assert [type(e) for e in events] == [CloseConnection]  # the close was answered
        assert server.ws.state.name == "CLOSED"
        with pytest.raises(ConnectionClosed):
            await ws.get_message()
        await ws.aclose()  # idempotent


async def test_a_vanished_server_is_1006_for_the_reader_and_the_sender() -> None:
    async with pair() as (ws, server, _):
        await server.stream.aclose()
        with pytest.raises(ConnectionClosed) as closed:
            await ws.get_message()
        assert closed.value.reason is not None and closed.value.reason.code == 1006
        with pytest.raises(ConnectionClosed):
            await ws.send_message("x")


async def test_a_send_to_a_broken_stream_is_connection_closed_1006() -> None:
    async with pair() as (ws, server, _):
        await server.stream.aclose()
        with pytest.raises(ConnectionClosed) as closed:
            for _ in range(100):  # memory streams break on the first write after the close
                await ws.send_message("x" * 1000)
        assert closed.value.reason is not None and closed.value.reason.code == 1006


async def test_a_protocol_violation_by_the_server_closes_with_its_code() -> None:
    async with pair() as (ws, server, _):
        await server.stream.send_all(b"\x81\x82abcdxy")  # a masked frame from a server
        with pytest.raises(ConnectionClosed) as closed:
            await ws.get_message()
        assert closed.value.reason is not None and closed.value.reason.code == 1002
        await server.receive()
        assert server.closes == [1002]


async def test_invalid_utf8_closes_with_1007() -> None:
    async with pair() as (ws, server, _):
        await server.stream.send_all(b"\x81\x02\xc3\x28")
        with pytest.raises(ConnectionClosed) as closed:
            await ws.get_message()
        assert closed.value.reason is not None and closed.value.reason.code == 1007


async def test_ping_waits_for_its_pong_read_by_the_reader(
        autojump_clock: trio.testing.MockClock) -> None:
    async with pair() as (ws, server, nursery):
        nursery.start_soon(server.serve)
        got: list[str | bytes] = []

        async def reader() -> None:
            while True:
                got.append(await ws.get_message())

        nursery.start_soon(reader)
        with trio.fail_after(1):
            await ws.ping(b"abc")
            await ws.ping()
        assert server.pings[0] == b"abc" and len(server.pings) == 2


async def test_a_ping_without_pong_waits_until_the_close_then_raises(
        autojump_clock: trio.testing.MockClock) -> None:
    async with pair() as (ws, server, nursery):
        nursery.start_soon(server.serve, False)  # answers no ping
        outcome: list[BaseException] = []

        async def pinger() -> None:
            try:
                await ws.ping(b"lonely")
            except ConnectionClosed as exc:
                outcome.append(exc)

        async with trio.open_nursery() as inner:
            inner.start_soon(pinger)
            await trio.sleep(30)
            assert not outcome  # still waiting: the caller bounds it (the pump's keepalive)
            with pytest.raises(ValueError):
                await ws.ping(b"lonely")  # the same payload twice in flight
            await server.send(CloseConnection(code=1001))
            with pytest.raises(ConnectionClosed):
                await ws.get_message()
        assert len(outcome) == 1


async def test_a_late_pong_answers_earlier_pings_too(
        autojump_clock: trio.testing.MockClock) -> None:
    async with pair() as (ws, server, nursery):
        done: list[bytes] = []

        async def pinger(payload: bytes) -> None:
            await ws.ping(payload)
            done.append(payload)

        nursery.start_soon(pinger, b"one")
        await trio.sleep(1)
        nursery.start_soon(pinger, b"two")
        await trio.sleep(1)
        await server.receive(auto_pong=False)
        await server.send(Pong(b"two"))
        await server.send(TextMessage(data="then"))
        assert await ws.get_message() == "then"
        await trio.sleep(1)
        assert sorted(done) == [b"one", b"two"]


async def test_sends_from_two_tasks_interleave_whole_frames() -> None:
    async with pair() as (ws, server, nursery):
        nursery.start_soon(server.serve)

        async def reader() -> None:
            while True:
                await ws.get_message()

        nursery.start_soon(reader)

        async def sender(tag: str) -> None:
            for i in range(50):
                await ws.send_message(f"{tag}{i}" * 300)

        async with trio.open_nursery() as inner:
            inner.start_soon(sender, "a")
            inner.start_soon(sender, "b")
            for _ in range(20):
                await ws.ping()
        await ws.aclose()
        # aclose returned on the server's answer, sent after it recorded everything
    assert sorted(server.messages) == sorted(  # type: ignore[type-var]
        [f"a{i}" * 300 for i in range(50)] + [f"b{i}" * 300 for i in range(50)])
    assert len(server.pings) == 20


async def test_aclose_is_bounded_when_the_server_never_answers(
        autojump_clock: trio.testing.MockClock) -> None:
    async with pair() as (ws, server, _):
        start = trio.current_time()
        await ws.aclose(1001, "going away")
        assert trio.current_time() - start == pytest.approx(ws_client.CLOSE_TIMEOUT_S)
        assert ws.closed is not None and ws.closed.code == 1001
        events = await server.receive()
        assert isinstance(events[0], CloseConnection) and events[0].code == 1001


async def test_connect_on_a_loopback_socket_refused_then_accepted() -> None:
    statuses = [401, 101]

    async def handler(stream: trio.SocketStream) -> None:
        server = Server(stream)
        await server.read_request()
        status = statuses.pop(0)
        if status == 101:
            await server.send(AcceptConnection())
            await server.send(TextMessage(data="welcome"))
            await server.serve()
        else:
            await server.send(RejectConnection(status_code=status))
        await stream.aclose()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(functools.partial(
                trio.serve_tcp, handler, 0, host="127.0.0.1"))
            port = listeners[0].socket.getsockname()[1]
            url = f"ws://127.0.0.1:{port}/v1/realtime?intent=transcription"
            with pytest.raises(ConnectionRejected) as refused:
                await ws_client.connect(url, {"Authorization": "Bearer sk-x"})
            assert refused.value.status_code == 401
            async with ws_client.open_websocket(url, {}) as ws:
                assert await ws.get_message() == "welcome"
                await ws.send_message("hi")
            assert ws.closed is not None and ws.closed.code == 1000
            nursery.cancel_scope.cancel()


async def test_connect_is_bounded_when_the_server_says_nothing(
        autojump_clock: trio.testing.MockClock) -> None:
    async def silent(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(functools.partial(
            trio.serve_tcp, silent, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        start = trio.current_time()
        with pytest.raises(HandshakeError):
            await ws_client.connect(f"ws://127.0.0.1:{port}/", {}, connect_timeout=3.0)
        assert trio.current_time() - start == pytest.approx(3.0)
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("url", ["http://example.test/", "ws:///no-host", "realtime"])
async def test_connect_wants_a_ws_url(url: str) -> None:
    with pytest.raises(ValueError):
        await ws_client.connect(url, {})


async def test_an_endless_refusal_body_still_says_its_status() -> None:
    head = b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 10000000\r\n\r\n"
    stream = await answer_with(head + b"z" * (3 * ws_client.MAX_HANDSHAKE_BYTES), close=False)
    with pytest.raises(ConnectionRejected) as refused:
        await handshake(stream, "h", "/", {})
    assert refused.value.status_code == 401
    assert len(refused.value.body or b"") <= ws_client.MAX_HANDSHAKE_BYTES


async def test_many_frames_right_after_the_101_are_not_an_oversized_handshake() -> None:
    frames = b"".join(b"\x81\x7e\x03\xe8" + b"f" * 1000 for _ in range(100))  # 100 KB
    stream = await answer_with(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: KEY\r\n\r\n" + frames, key_from_request=True, close=False)
    ws = await handshake(stream, "h", "/", {})
    for _ in range(100):
        assert await ws.get_message() == "f" * 1000


async def test_a_ping_from_the_server_while_we_close_is_not_answered(
        autojump_clock: trio.testing.MockClock) -> None:
    async with pair() as (ws, server, nursery):
        async def close_late() -> None:
            await server.stream.receive_some(100)  # our close frame
            await server.stream.send_all(b"\x89\x04late" + b"\x88\x02\x03\xe8")  # ping, close

        nursery.start_soon(close_late)
        await ws.aclose()
        assert ws.closed is not None and ws.closed.code == 1000
        with pytest.raises(ConnectionClosed):
            await ws.ping()
