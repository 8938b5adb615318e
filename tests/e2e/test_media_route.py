"""The media WebSocket route through the real HTTP front on a loopback socket.

Real sockets, a real ``HttpFront`` and ``MediaRoute``; a stub ``StreamSessions`` (the call
side) and, except where the Twilio signature itself is tested, a stub authenticator. The
timeouts under test are set small (a fraction of a second, real time) rather than waited for.
"""

from __future__ import annotations

import base64
import json
import logging
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from hypercorn.config import Config as HypercornConfig
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

from voicecall_trio.config import build_config
from voicecall_trio.daemon import make_media_route
from voicecall_trio.front import HttpFront
from voicecall_trio.media import twilio_stream
from voicecall_trio.media.route import MediaRoute
from voicecall_trio.media.route_stream import RouteStream
from voicecall_trio.media.stream import MediaStream, StreamHandler
from voicecall_trio.providers import WebhookRequest, WebhookResponse
from voicecall_trio.providers.twilio.shell import TwilioProvider
from voicecall_trio.providers.twilio.signature import compute_signature
from voicecall_trio.testing.directory import FakeDirectory
from voicecall_trio.testing.provider import FakeProvider
from voicecall_trio.web import WebhookGate, create_app_for

VECTORS = Path(__file__).resolve().parents[3] / "shared" / "vectors"
WAIT_S = 10
SID = "MZ33333333333333333333333333333333"


class StubAuth:
    """Signature "good" passes; token ``tok-<call id>`` names that call."""

    framing = twilio_stream.FRAMING

    def __init__(self) -> None:
        self.verified: list[WebhookRequest] = []

    def verify_upgrade(self, request: WebhookRequest) -> str | None:
        self.verified.append(request)
        return None if request.headers.get("x-twilio-signature") == "good" else "bad signature"

    def call_id_for_token(self, token: str) -> str | None:
        return token.removeprefix("tok-") if token.startswith("tok-") else None


class Handler:
    def __init__(self) -> None:
        self.audio = bytearray()
        self.marks: list[str] = []
        self.digits: list[str] = []
        self.stops = 0
        self.got_media = trio.Event()
        self.got_stop = trio.Event()

    def media(self, stream: MediaStream, audio: bytes) -> None:
        self.audio += audio
        self.got_media.set()

    def mark(self, stream: MediaStream, name: str) -> None:
        self.marks.append(name)

    def dtmf(self, stream: MediaStream, digits: str) -> None:
        self.digits.append(digits)

    def stopped(self, stream: MediaStream) -> None:
        self.stops += 1
        self.got_stop.set()


class StubSessions:
    def __init__(self, *live: str) -> None:
        self.live = set(live)
        self.asked: list[str] = []
        self.handlers: dict[str, Handler] = {}
        self.streams: dict[str, MediaStream] = {}
        self.attached = trio.Event()  # the first attach
        self._changed = trio.Event()

    async def wait_attached(self, count: int) -> None:
        """Until ``count`` attaches (of live calls) have happened."""
        with trio.fail_after(WAIT_S):
            while sum(call_id in self.live for call_id in self.asked) < count:
                await self._changed.wait()

    def attach(self, call_id: str, stream: MediaStream) -> StreamHandler | None:
        self.asked.append(call_id)
        if call_id not in self.live:
            return None
        handler = self.handlers[call_id] = Handler()
        self.streams[call_id] = stream
        self.attached.set()
        self._changed.set()
        self._changed = trio.Event()
        return handler


def echo(request: WebhookRequest) -> WebhookResponse:
    return WebhookResponse(200, b"<Response>" + request.body + b"</Response>", "text/xml")


@asynccontextmanager
async def serving(sessions: StubSessions | None, *, auth: Any = None, idle_s: float = 30.0,
                  front_cap: int | None = None, **streaming: Any
                  ) -> AsyncIterator[tuple[HttpFront, MediaRoute | None, int]]:
    config = build_config({"streaming": {"enabled": True, "openaiApiKey": "sk-test",
                                         **streaming}}, {})
    gate = WebhookGate(config, FakeProvider(echo), directory=FakeDirectory())
    hc = HypercornConfig()
    hc.accesslog = None
    hc.graceful_timeout = 0.1  # (connections a test left open need not delay its end)
    route = None
    if sessions is not None:
        route = MediaRoute(config, auth or StubAuth(), sessions, idle_timeout_s=idle_s)
    front = HttpFront(create_app_for(gate, health=lambda: {"ok": True}), hc, gate,
                      media_route=route, max_connections=front_cap)
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(front.serve, listeners, stop))
        yield front, route, port
        stop.set()


class Ws:
    """A WebSocket client on wsproto, able to send what a well-behaved one would not."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.pending: list[Event] = []
        self.status = 0  # 101, or the refusal's status
        self.texts: list[str] = []

    @classmethod
    async def open(cls, port: int, *, signature: str | None = "good",
                   target: str = "/voice/stream?x=1") -> Ws:
        client = cls(await trio.open_tcp_stream("127.0.0.1", port))
        headers = [] if signature is None else [(b"x-twilio-signature", signature.encode())]
        await client.stream.send_all(client.ws.send(Request(
            host="voice.example.com", target=target, extra_headers=headers)))
        event = await client.event()
        if isinstance(event, AcceptConnection):
            client.status = 101
        elif isinstance(event, RejectConnection):
            client.status = event.status_code
        return client

    async def event(self) -> Event | None:
        """The next event (None once the server closed the TCP connection)."""
        with trio.fail_after(WAIT_S):
            while not self.pending:
                try:
                    data = await self.stream.receive_some(65536)
                except trio.BrokenResourceError:
                    data = b""
                if not data:
                    return None
                self.ws.receive_data(data)
                self.pending.extend(self.ws.events())
            return self.pending.pop(0)

    async def until_closed(self) -> None:
        """Read (and drop) until the server has closed the connection."""
        while await self.event() is not None:
            pass

    async def send(self, message: str | dict[str, Any]) -> None:
        text = message if isinstance(message, str) else json.dumps(message)
        await self.stream.send_all(self.ws.send(TextMessage(text)))

    async def start(self, token: str | None = "tok-c1") -> None:
        params = {} if token is None else {"token": token}
        await self.send({"event": "start", "streamSid": SID, "start": {
            "streamSid": SID, "callSid": "CA1", "customParameters": params}})

    async def closed_with(self) -> tuple[int, str]:
        """Read until the server's close frame; its (code, reason). Text messages are kept."""
        while True:
            event = await self.event()
            if event is None:
                return 1006, ""
            if isinstance(event, TextMessage):
                self.texts.append(event.data)
            if isinstance(event, CloseConnection):
                return event.code, event.reason


async def http_status(port: int, head: bytes) -> int:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(head)
    data = b""
    with trio.fail_after(WAIT_S):
        while b"\r\n" not in data:
            chunk = await stream.receive_some(65536)
            if not chunk:
                break
            data += chunk
    await stream.aclose()
    return int(data.split(b" ")[1])


def vector_messages() -> list[str]:
    return (VECTORS / "twilio_media_stream.jsonl").read_text().splitlines()


async def test_a_started_stream_carries_the_call_audio_marks_dtmf_and_stop() -> None:
    sessions = StubSessions("c1")
    async with serving(sessions) as (_, route, port):
        assert route is not None
        ws = await Ws.open(port)
        assert ws.status == 101 and route.pending == 1
        lines = vector_messages()
        await ws.send(lines[0])  # connected: fine before start
        await ws.start("tok-c1")
        with trio.fail_after(WAIT_S):
            await sessions.attached.wait()
        assert (route.pending, route.open) == (0, 1)
        stream = sessions.streams["c1"]
        assert (stream.stream_id, stream.carrier_call_id) == (SID, "CA1")
        await stream.send_audio(b"\xff" * 160)
        await stream.send_mark("bot:1")
        await stream.send_clear()
        for line in lines[2:-1]:  # media, the mark echo, dtmf
            await ws.send(line)
        await ws.send(lines[-1])  # stop
        assert await ws.closed_with() == (1000, "stopped")
        handler = sessions.handlers["c1"]
        assert bytes(handler.audio) == (VECTORS / "hello_table_for_two_8k.ulaw").read_bytes()
        assert (handler.marks, handler.digits, handler.stops) == (["greeting-played"], ["1"], 1)
        sent = [json.loads(t) for t in ws.texts]
        assert sent == [
            {"event": "media", "streamSid": SID,
             "media": {"payload": base64.b64encode(b"\xff" * 160).decode()}},
            {"event": "mark", "streamSid": SID, "mark": {"name": "bot:1"}},
            {"event": "clear", "streamSid": SID}]
        assert await ws.event() is None  # the server closed its side
        assert (route.open, route.pending) == (0, 0)


async def test_an_unsigned_upgrade_gets_403_and_the_sessions_are_never_asked() -> None:
    sessions = StubSessions("c1")
    auth = StubAuth()
    async with serving(sessions, auth=auth) as (_, route, port):
        assert route is not None
        for signature in (None, "forged"):
            ws = await Ws.open(port, signature=signature)
            assert ws.status == 403
            await ws.until_closed()
        assert sessions.asked == [] and route.forbidden == 2
        assert auth.verified[0].path == "/voice/stream"
        assert auth.verified[0].query_string == "x=1"
        assert auth.verified[0].host == "voice.example.com"
        assert (route.open, route.pending) == (0, 0)


@pytest.mark.parametrize(("token", "reason", "asked"), [
    (None, "missing token", []),
    ("not-ours", "bad token", []),
    ("tok-ended", "call not live", ["ended"]),
])
async def test_a_start_without_a_live_calls_token_closes_1008(
        token: str | None, reason: str, asked: list[str]) -> None:
    sessions = StubSessions("c1")
    async with serving(sessions) as (_, route, port):
        assert route is not None
        ws = await Ws.open(port)
        await ws.start(token)
        assert await ws.closed_with() == (1008, reason)
        assert sessions.asked == asked


async def test_no_start_in_time_closes_1008_no_start() -> None:
    sessions = StubSessions("c1")
    async with serving(sessions, preStartTimeoutMs=200) as (_, route, port):
        assert route is not None
        ws = await Ws.open(port)
        await ws.send(vector_messages()[0])  # connected alone is not a start
        assert await ws.closed_with() == (1008, "no start")
        assert sessions.asked == []


async def test_an_attached_stream_idle_too_long_is_closed_and_stopped_once() -> None:
    sessions = StubSessions("c1")
    async with serving(sessions, idle_s=0.3) as (_, _route, port):
        ws = await Ws.open(port)
        await ws.start()
        assert await ws.closed_with() == (1000, "idle")
        with trio.fail_after(WAIT_S):
            await sessions.handlers["c1"].got_stop.wait()
        assert sessions.handlers["c1"].stops == 1


async def test_a_message_over_64_kib_closes_1009_whole_or_in_fragments() -> None:
    sessions = StubSessions("c1")
    async with serving(sessions) as (_, _route, port):
        ws = await Ws.open(port)
        await ws.send("x" * (64 * 1024 + 1))
        assert await ws.closed_with() == (1009, "message too big")
        ws = await Ws.open(port)
        for _ in range(5):
            await ws.stream.send_all(ws.ws.send(TextMessage("y" * 16384,
                                                            message_finished=False)))
        assert await ws.closed_with() == (1009, "message too big")
        ws = await Ws.open(port)
        await ws.stream.send_all(ws.ws.send(BytesMessage(b"z" * 70000)))
        assert await ws.closed_with() == (1009, "message too big")


async def test_pings_are_answered_and_malformed_messages_skipped_with_one_log_line(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "voicecall.media")
    sessions = StubSessions("c1")
    async with serving(sessions) as (_, _route, port):
        ws = await Ws.open(port)
        await ws.stream.send_all(ws.ws.send(Ping(b"hi")))
        event = await ws.event()
        assert isinstance(event, Pong) and event.payload == b"hi"
        await ws.start()
        for junk in ("{", '{"event":"nope"}', '{"event":"media","media":{"payload":"!"}}',
                     '{"event":"start"}'):
            await ws.send(junk)
        await ws.stream.send_all(ws.ws.send(BytesMessage(b"\x00\x01")))
        await ws.send(vector_messages()[2])
        handler = sessions.handlers["c1"]
        with trio.fail_after(WAIT_S):
            await handler.got_media.wait()
        assert len(handler.audio) == 160
        skipped = [r for r in caplog.records if "skipped" in r.getMessage()]
        assert len(skipped) == 1 and "!" not in skipped[0].getMessage()


async def test_a_flood_of_pending_streams_gets_503_while_webhooks_and_live_streams_go_on(
        ) -> None:
    sessions = StubSessions("c1")
    async with serving(sessions, maxPendingConnections=3, maxPendingConnectionsPerIp=3,
                       maxConnections=5) as (_, route, port):
        assert route is not None
        live = await Ws.open(port)
        await live.start()
        with trio.fail_after(WAIT_S):
            await sessions.attached.wait()
        flood = [await Ws.open(port) for _ in range(3)]
        assert [w.status for w in flood] == [101] * 3 and route.pending == 3
        refused = [await Ws.open(port) for _ in range(4)]
        assert [w.status for w in refused] == [503] * 4
        for w in refused:
            while not isinstance(event := await w.event(), type(None)):
                assert isinstance(event, RejectData)  # the 503's body, then the close
        assert route.refused == 4 and len(sessions.asked) == 1
        # a webhook is answered in place meanwhile
        body = b"a=1"
        status = await http_status(port, b"POST /voice/webhook HTTP/1.1\r\nHost: h\r\n"
                                   b"X-Sig: s\r\nContent-Length: 3\r\n\r\n" + body)
        assert status == 200
        # and the live stream still carries media
        await live.send(vector_messages()[2])
        with trio.fail_after(WAIT_S):
            await sessions.handlers["c1"].got_media.wait()
        # maxConnections counts attached streams too: 1 live + 3 pending + 1 = 5, then 503
        flood[0].pending.clear()
        await flood[0].start("tok-c1")  # (the same call again: the session decides)
        await sessions.wait_attached(2)
        assert route.pending == 2
        fifth = await Ws.open(port)
        assert fifth.status == 101 and route.open == 5
        assert (await Ws.open(port)).status == 503


async def test_refused_upgrades_held_open_do_not_crowd_webhooks_out_of_the_front() -> None:
    """(review R2) An upgrade refused with 503 is drained for a moment before it is closed;
    a flood of them, each held open by its sender, must not fill the front's connection cap
    with connections it may not shed: a webhook is still answered."""
    sessions = StubSessions("c1")
    async with serving(sessions, front_cap=8, maxPendingConnections=2,
                       maxPendingConnectionsPerIp=2) as (front, route, port):
        assert route is not None
        pending = [await Ws.open(port) for _ in range(2)]
        refused = [await Ws.open(port) for _ in range(6)]  # (held open, never read again)
        assert [w.status for w in pending + refused] == [101] * 2 + [503] * 6
        assert front.open_connections == 8
        status = await http_status(port, b"POST /voice/webhook HTTP/1.1\r\nHost: h\r\n"
                                   b"X-Sig: s\r\nContent-Length: 3\r\n\r\na=1")
        assert status == 200
        assert route.pending == 2  # the pending streams are not the ones shed


async def test_per_ip_pending_limit() -> None:
    sessions = StubSessions("c1")
    async with serving(sessions, maxPendingConnectionsPerIp=2) as (_, route, port):
        assert route is not None
        clients = [await Ws.open(port) for _ in range(3)]  # (kept open)
        assert [c.status for c in clients] == [101, 101, 503]


async def test_close_all_closes_every_stream_1001_and_refuses_new_ones() -> None:
    sessions = StubSessions("c1")
    async with serving(sessions) as (_, route, port):
        assert route is not None
        attached = await Ws.open(port)
        await attached.start()
        with trio.fail_after(WAIT_S):
            await sessions.attached.wait()
        pending = await Ws.open(port)
        await route.close_all(1001)
        assert await attached.closed_with() == (1001, "going away")
        assert await pending.closed_with() == (1001, "going away")
        handler = sessions.handlers["c1"]
        with trio.fail_after(WAIT_S):
            await handler.got_stop.wait()
        assert handler.stops == 1
        assert (await Ws.open(port)).status == 503


async def test_sends_on_a_dead_socket_raise_nothing_and_stop_once() -> None:
    sessions = StubSessions("c1")
    async with serving(sessions) as (_, _route, port):
        ws = await Ws.open(port)
        await ws.start()
        with trio.fail_after(WAIT_S):
            await sessions.attached.wait()
        stream = sessions.streams["c1"]
        await ws.stream.aclose()  # the carrier vanishes
        handler = sessions.handlers["c1"]
        with trio.fail_after(WAIT_S):
            await handler.got_stop.wait()
        for _ in range(3):
            await stream.send_audio(b"\xff" * 160)
            await stream.send_mark("m")
            await stream.send_clear()
        await stream.close()
        await stream.close(1001)
        assert isinstance(stream, RouteStream) and stream.closed
        assert handler.stops == 1


async def test_sends_from_another_task_while_the_route_reads() -> None:
    sessions = StubSessions("c1")
    async with serving(sessions) as (_, _route, port):
        ws = await Ws.open(port)
        await ws.start()
        with trio.fail_after(WAIT_S):
            await sessions.attached.wait()
        stream = sessions.streams["c1"]
        lines = vector_messages()[2:-3]

        async def player() -> None:
            for _ in range(50):
                await stream.send_audio(b"\x7f" * 160)
            await stream.send_mark("end")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(player)
            for line in lines:
                await ws.send(line)
        await ws.send(vector_messages()[-1])
        assert await ws.closed_with() == (1000, "stopped")
        kinds = [json.loads(t)["event"] for t in ws.texts]
        assert kinds == ["media"] * 50 + ["mark"]
        frames = sum('"event":"media"' in line for line in lines)
        assert len(sessions.handlers["c1"].audio) == 160 * frames


@pytest.mark.parametrize("target", ["/voice/stream/", "/voice/streams", "/voice/webhook"])
async def test_only_the_exact_stream_path_goes_to_the_route(target: str) -> None:
    sessions = StubSessions("c1")
    async with serving(sessions) as (front, route, port):
        assert route is not None
        ws = await Ws.open(port, target=target)
        assert ws.status in (404, 405) and route.open == 0 and front.handed_over == 1


async def test_without_a_route_the_stream_path_is_hypercorns_404() -> None:
    async with serving(None) as (front, _, port):
        ws = await Ws.open(port)
        assert ws.status == 404 and front.handed_over == 1


async def test_a_malformed_upgrade_gets_400() -> None:
    sessions = StubSessions("c1")
    async with serving(sessions) as (_, route, port):
        assert route is not None
        head = (b"GET /voice/stream HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nX-Twilio-Signature: good\r\n\r\n")  # no key/version
        assert await http_status(port, head) == 400
        assert route.open == 0


async def test_the_twilio_provider_checks_the_upgrade_signature_over_the_wss_url() -> None:
    config = build_config({
        "provider": "twilio", "fromNumber": "+15550001111",
        "twilio": {"accountSid": "AC1", "authToken": "secret-token"},
        "publicUrl": "https://voice.example.com/voice/webhook",
        "streaming": {"enabled": True, "openaiApiKey": "sk-test"}}, {})
    async with httpx.AsyncClient() as http:
        provider = TwilioProvider(config, http)
        sessions = StubSessions("c7")
        async with serving(sessions, auth=provider) as (_, route, port):
            assert route is not None
            assert provider.stream_url() == "wss://voice.example.com/voice/stream"
            good = compute_signature("secret-token", "wss://voice.example.com/voice/stream", {})
            assert (await Ws.open(port, signature="nope")).status == 403
            ws = await Ws.open(port, signature=good)
            assert ws.status == 101
            await ws.start("tok-c7")  # not a token the provider issued
            assert await ws.closed_with() == (1008, "bad token")
            ws = await Ws.open(port, signature=good)
            await ws.start(provider.stream_token("c7"))
            with trio.fail_after(WAIT_S):
                await sessions.attached.wait()
            assert sessions.asked == ["c7"]


def test_the_daemon_builds_the_route_only_with_streaming_a_carrier_and_sessions() -> None:
    on = build_config({"streaming": {"enabled": True, "openaiApiKey": "sk-x"}}, {})
    off = build_config({"streaming": {"enabled": True}}, {})  # no key: the Gather path
    auth = StubAuth()

    class Sup:
        stream_sessions = StubSessions()

    assert isinstance(make_media_route(on, auth, Sup()), MediaRoute)  # type: ignore[arg-type]
    assert make_media_route(off, auth, Sup()) is None  # type: ignore[arg-type]
    assert make_media_route(on, FakeProvider(echo), Sup()) is None  # type: ignore[arg-type]
    assert make_media_route(on, auth, object()) is None  # type: ignore[arg-type]


@pytest.mark.parametrize(("raw", "code"), [
    (b"\x81\x85\x00\x00\x00\x00\xff\xfe\xfd\xfc\xfb", 1007),  # text that is not UTF-8
    (b"\x83\x80\x00\x00\x00\x00", 1002),  # a reserved opcode
    (b"\x81\x05hello", 1002),  # a client frame without a mask
    (b"\x89\xfe\x01\x00" + b"\x00" * 260, 1002),  # a ping over 125 bytes
])
async def test_frames_wsproto_cannot_parse_close_the_stream_with_their_code(
        raw: bytes, code: int) -> None:
    sessions = StubSessions("c1")
    async with serving(sessions) as (_, route, port):
        assert route is not None
        ws = await Ws.open(port)
        await ws.start()
        await sessions.wait_attached(1)
        await ws.stream.send_all(raw)
        assert (await ws.closed_with())[0] == code
        with trio.fail_after(WAIT_S):
            await sessions.handlers["c1"].got_stop.wait()
        assert sessions.handlers["c1"].stops == 1


async def test_random_bytes_after_the_upgrade_never_crash_the_route() -> None:
    sessions = StubSessions("c1")
    chooser = random.Random(10)
    async with serving(sessions) as (_, route, port):
        assert route is not None
        for _ in range(20):
            ws = await Ws.open(port)
            await ws.stream.send_all(bytes(chooser.randrange(256) for _ in range(300)))
            await ws.closed_with()  # a close frame or the connection's end, never a hang
        assert (await Ws.open(port)).status == 101  # still serving


async def test_a_handler_that_raises_closes_its_stream_1011_and_the_route_goes_on() -> None:
    sessions = StubSessions("c1", "c2")
    async with serving(sessions) as (_, route, port):
        assert route is not None
        ws = await Ws.open(port)
        await ws.start("tok-c1")
        await sessions.wait_attached(1)
        handler = sessions.handlers["c1"]

        def broken(stream: MediaStream, audio: bytes) -> None:
            raise RuntimeError("bug in the voice session")

        handler.media = broken  # type: ignore[method-assign]
        await ws.send(vector_messages()[2])
        assert await ws.closed_with() == (1011, "internal error")
        with trio.fail_after(WAIT_S):
            await handler.got_stop.wait()
        other = await Ws.open(port)
        await other.start("tok-c2")
        await sessions.wait_attached(2)
        await other.send(vector_messages()[2])
        with trio.fail_after(WAIT_S):
            await sessions.handlers["c2"].got_media.wait()


async def test_skip_signature_verification_skips_the_upgrade_check() -> None:
    config = build_config({
        "provider": "twilio", "fromNumber": "+15550001111",
        "twilio": {"accountSid": "AC1", "authToken": "secret-token"},
        "skipSignatureVerification": True}, {})
    async with httpx.AsyncClient() as http:
        provider = TwilioProvider(config, http)
        request = WebhookRequest("GET", "/voice/stream", "", {"host": "h"}, b"")
        assert provider.verify_upgrade(request) is None
        strict = TwilioProvider(build_config({
            "provider": "twilio", "fromNumber": "+15550001111",
            "twilio": {"accountSid": "AC1", "authToken": "secret-token"}}, {}), http)
        reason = strict.verify_upgrade(request)
        assert reason is not None and "missing signature" in reason
        assert "secret-token" not in reason


async def test_the_daemon_closes_streams_1001_before_it_ends_the_calls(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A whole in-process daemon (mock carrier given the stub's stream checks, a supervisor
    given stub ``stream_sessions``, as the lead's supervisor will have): at stop, the stream
    hears 1001 and its handler ``stopped`` before the supervisor's shutdown begins."""
    from voicecall_trio.providers.mock import MockProvider
    from voicecall_trio.supervisor import Supervisor
    from voicecall_trio.testing.daemon import running_daemon

    order: list[str] = []
    sessions = StubSessions("c1")
    auth = StubAuth()
    monkeypatch.setattr("voicecall_trio.supervisor._StreamSessions", lambda sup: sessions)
    for name in ("verify_upgrade", "call_id_for_token", "framing"):
        monkeypatch.setattr(MockProvider, name, getattr(auth, name), raising=False)
    real_shutdown = Supervisor.shutdown

    async def shutdown(self: Supervisor, grace_s: float) -> None:
        order.append("calls ended")
        await real_shutdown(self, grace_s)

    monkeypatch.setattr(Supervisor, "shutdown", shutdown)
    nowhere = "127.0.0.1:9"  # the key switches on model checks and replies: keep them local
    async with running_daemon({"streaming": {"enabled": True, "openaiApiKey": "sk-x",
                                             "realtimeUrl": f"ws://{nowhere}/v1/realtime"},
                               "tts": {"baseUrl": f"http://{nowhere}/v1"},
                               "responseBaseUrl": f"http://{nowhere}/v1"}) as d:
        assert d.handle.media_route is not None
        port = int(d.base_url.rsplit(":", 1)[1])
        ws = await Ws.open(port)
        await ws.start()
        await sessions.wait_attached(1)
        sessions.handlers["c1"].stopped = (  # type: ignore[method-assign]
            lambda stream: order.append("stream stopped"))
        d.stop()
        assert await ws.closed_with() == (1001, "going away")
    assert order == ["stream stopped", "calls ended"]


async def test_an_upgrade_with_a_body_is_not_the_routes() -> None:
    sessions = StubSessions("c1")
    async with serving(sessions) as (_, route, port):
        assert route is not None
        head = (b"GET /voice/stream HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                b"Sec-WebSocket-Version: 13\r\nTransfer-Encoding: chunked\r\n"
                b"X-Twilio-Signature: good\r\n\r\n0\r\n\r\n")
        assert await http_status(port, head) in (400, 404)
        assert route.open == 0 and route.forbidden == 0 and sessions.asked == []


async def test_a_carrier_that_resets_the_connection_ends_the_stream_without_a_traceback(
        caplog: pytest.LogCaptureFixture) -> None:
    """(review R2) A socket gone with a TCP reset (not a FIN) mid-stream: the handler is told
    once, and no error or traceback is logged (a reset is the network's doing)."""
    import socket as stdlib_socket
    import struct

    caplog.set_level(logging.DEBUG)
    sessions = StubSessions("c1")
    async with serving(sessions) as (_, route, port):
        assert route is not None
        ws = await Ws.open(port)
        await ws.start()
        with trio.fail_after(WAIT_S):
            await sessions.attached.wait()
        await ws.send(vector_messages()[2])
        raw = ws.stream.socket
        raw.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_LINGER,
                       struct.pack("ii", 1, 0))
        await ws.stream.aclose()  # closes with a reset
        handler = sessions.handlers["c1"]
        stream = sessions.streams["c1"]
        assert isinstance(stream, RouteStream)
        with trio.fail_after(WAIT_S):
            await handler.got_stop.wait()
            await stream.done.wait()
        assert handler.stops == 1
    bad = [f"{r.name}: {r.getMessage()}" for r in caplog.records
           if r.levelno >= logging.ERROR or r.exc_info is not None]
    assert bad == []
