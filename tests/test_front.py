"""The HTTP front on a real loopback socket: webhooks answered in place, the rest by Hypercorn."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import trio
import trio.testing
from hypercorn.config import Config as HypercornConfig

from voicecall_trio import front as front_module
from voicecall_trio.config import build_config
from voicecall_trio.front import HttpFront
from voicecall_trio.providers.base import WebhookRequest, WebhookResponse
from voicecall_trio.web import WebhookGate, create_app_for

WAIT_S = 10


class FakeProvider:
    name = "fake"
    signature_headers = ("x-sig",)

    def __init__(self) -> None:
        self.seen: list[WebhookRequest] = []
        self.hold: trio.Event | None = None  # set by a test to keep handlers waiting

    async def handle_webhook(self, request: WebhookRequest, directory: Any) -> WebhookResponse:
        self.seen.append(request)
        if self.hold is not None:
            await self.hold.wait()
        if request.body == b"boom":
            raise RuntimeError("carrier module bug")
        if request.body == b"big":
            return WebhookResponse(200, b"x" * 65536)
        return WebhookResponse(200, b"<Response>" + request.body + b"</Response>", "text/xml",
                               {"X-Extra": "1"})


@asynccontextmanager
async def serving(provider: FakeProvider, *, keep_alive_s: float = 30.0
                  ) -> AsyncIterator[tuple[HttpFront, int, trio.Event]]:
    config = build_config({"webhookSecurity": {"maxBodyBytes": 100, "maxInFlightPerIp": 2}}, {})
    gate = WebhookGate(config, provider, directory=None)  # type: ignore[arg-type]
    hc = HypercornConfig()
    hc.accesslog = None
    hc.graceful_timeout = 2.0
    hc.keep_alive_timeout = keep_alive_s
    front = HttpFront(create_app_for(gate, health=lambda: {"ok": True}), hc, gate)
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(front.serve, listeners, stop))
        assert binds == [f"http://127.0.0.1:{port}"]
        yield front, port, stop
        stop.set()


def webhook(body: bytes = b"a=1", *, sig: bool = True, extra: str = "") -> bytes:
    signature = "X-Sig: s\r\n" if sig else ""
    return (f"POST /voice/webhook?callId=c1 HTTP/1.1\r\nHost: voice.example.com\r\n{signature}"
            f"{extra}Content-Length: {len(body)}\r\n\r\n").encode() + body


class Client:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = b""

    async def response(self) -> tuple[int, dict[str, str], bytes]:
        """One response with a Content-Length body."""
        with trio.fail_after(WAIT_S):
            while b"\r\n\r\n" not in self.buffer:
                await self._more()
            head, _, rest = self.buffer.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0"))
            while len(rest) < length:
                await self._more()
                rest = self.buffer.partition(b"\r\n\r\n")[2]
            self.buffer = rest[length:]
            return int(lines[0].split(" ")[1]), headers, rest[:length]

    async def closed(self) -> bool:
        """True once the server has closed the connection (and sent nothing more)."""
        with trio.fail_after(WAIT_S):
            try:
                data = await self.stream.receive_some(65536)
            except trio.BrokenResourceError:
                return True
            return data == b""

    async def _more(self) -> None:
        data = await self.stream.receive_some(65536)
        if not data:
            raise EOFError(self.buffer)
        self.buffer += data


async def connect(port: int) -> Client:
    return Client(await trio.open_tcp_stream("127.0.0.1", port))


async def test_webhooks_are_answered_in_place_on_a_kept_connection() -> None:
    provider = FakeProvider()
    async with serving(provider) as (front, port, _):
        client = await connect(port)
        for n in range(3):
            await client.stream.send_all(webhook(f"n={n}".encode()))
            status, headers, body = await client.response()
            assert (status, body, headers["x-extra"]) == (200, f"<Response>n={n}</Response>"
                                                          .encode(), "1")
            assert headers["content-type"] == "text/xml" and "date" in headers
        assert (front.answered, front.handed_over) == (3, 0)
        seen = provider.seen[0]
        assert (seen.path, seen.query_string, seen.remote_addr) == ("/voice/webhook",
                                                                    "callId=c1", "127.0.0.1")
        assert seen.host == "voice.example.com" and seen.headers["x-sig"] == "s"


async def test_pipelined_requests_are_answered_in_order() -> None:
    provider = FakeProvider()
    async with serving(provider) as (_, port, _):
        client = await connect(port)
        await client.stream.send_all(webhook(b"first") + webhook(b"second") + webhook(b"x"))
        bodies = [(await client.response())[2] for _ in range(3)]
        assert bodies == [b"<Response>first</Response>", b"<Response>second</Response>",
                          b"<Response>x</Response>"]


async def test_other_requests_go_to_hypercorn_with_the_bytes_already_read() -> None:
    provider = FakeProvider()
    async with serving(provider) as (front, port, _):
        client = await connect(port)
        await client.stream.send_all(webhook())
        assert (await client.response())[0] == 200
        # same connection, now a request the fast path does not serve
        await client.stream.send_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, body = await client.response()
        assert status == 200 and b'"ok"' in body
        assert front.handed_over == 1
        await client.stream.send_all(b"GET /voice/webhook-evil HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await client.response())[0] == 404
        # Hypercorn serves the webhook path too, through the same gate
        await client.stream.send_all(webhook(b"late"))
        status, _, body = await client.response()
        assert (status, body) == (200, b"<Response>late</Response>")
        assert front.answered == 1 and len(provider.seen) == 2


async def test_a_chunked_webhook_is_handed_over_and_reaches_the_carrier_whole() -> None:
    provider = FakeProvider()
    async with serving(provider) as (front, port, _):
        client = await connect(port)
        await client.stream.send_all(
            b"POST /voice/webhook HTTP/1.1\r\nHost: x\r\nX-Sig: s\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n4\r\nab=1\r\n3\r\n&c=\r\n0\r\n\r\n")
        status, _, body = await client.response()
        assert (status, body) == (200, b"<Response>ab=1&c=</Response>")
        assert (front.answered, front.handed_over) == (0, 1)


async def test_refusals_are_the_gates_and_leave_the_connection_usable() -> None:
    provider = FakeProvider()
    async with serving(provider) as (_, port, _):
        client = await connect(port)
        await client.stream.send_all(webhook(b"unsigned", sig=False))
        assert (await client.response())[0] == 401
        await client.stream.send_all(webhook(b"boom"))
        assert (await client.response())[0] == 400  # the carrier module failed
        await client.stream.send_all(webhook(extra="Content-Length-Extra: 1\r\n"))
        assert (await client.response())[0] == 200
        await client.stream.send_all(b"GET /voice/webhook HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, _ = await client.response()
        assert status == 405 and headers["allow"] == "POST"
        assert [r.body for r in provider.seen] == [b"boom", b"a=1"]


async def test_an_oversized_body_is_refused_unread_and_the_connection_closed() -> None:
    provider = FakeProvider()
    async with serving(provider) as (_, port, _):
        client = await connect(port)
        await client.stream.send_all(webhook(b"x" * 101))
        status, headers, _ = await client.response()
        assert status == 413 and headers["connection"] == "close"
        assert await client.closed()
        assert provider.seen == []


async def test_an_unsigned_oversized_body_is_not_read_either() -> None:
    provider = FakeProvider()
    async with serving(provider) as (_, port, _):
        client = await connect(port)
        await client.stream.send_all(b"POST /voice/webhook HTTP/1.1\r\nHost: x\r\n"
                                     b"Content-Length: 1000000000\r\n\r\n" + b"x" * 1000)
        status, headers, _ = await client.response()
        assert status == 401 and headers["connection"] == "close"
        assert await client.closed()
        assert provider.seen == []


async def test_a_client_that_stops_reading_is_dropped(autojump_clock: Any) -> None:
    provider = FakeProvider()
    async with serving(provider) as (_, port, _):
        client = await connect(port)
        sent = 300  # 300 x 64 KiB of answers: far more than the socket buffers hold
        await client.stream.send_all(webhook(b"big") * sent)
        # the server blocks writing; on the mock clock this passes its send deadline at once
        await trio.sleep(front_module.REQUEST_TIMEOUT_S + 1)
        answered = 0
        with trio.fail_after(WAIT_S):
            try:
                while True:
                    await client.response()
                    answered += 1
            except (EOFError, trio.BrokenResourceError):
                pass
        assert 0 < answered < sent


async def test_garbage_gets_a_4xx_and_the_server_carries_on() -> None:
    provider = FakeProvider()
    async with serving(provider) as (_, port, _):
        client = await connect(port)
        await client.stream.send_all(b"POST /voice/webhook HTTP/1.1\r\nX-Sig: s\r\n"
                                     b"Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd")
        status, _, _ = await client.response()
        assert 400 <= status < 500
        no_host = await connect(port)  # HTTP/1.1 without Host: Hypercorn's answer, as before
        await no_host.stream.send_all(b"POST /voice/webhook HTTP/1.1\r\nX-Sig: s\r\n"
                                      b"Content-Length: 0\r\n\r\n")
        assert (await no_host.response())[0] == 400
        for junk in (b"\x16\x03\x01\x02\x00\x01\x00\r\n\r\n", b"POST /voice/webhook HTTP/1.1"):
            vanishing = await connect(port)
            await vanishing.stream.send_all(junk)
            await vanishing.stream.aclose()
        fresh = await connect(port)
        await fresh.stream.send_all(webhook())
        assert (await fresh.response())[0] == 200


async def test_requests_in_flight_per_address_are_capped() -> None:
    provider = FakeProvider()
    provider.hold = trio.Event()
    async with serving(provider) as (_, port, _):
        first, second, third = [await connect(port) for _ in range(3)]
        await first.stream.send_all(webhook(b"1"))
        await second.stream.send_all(webhook(b"2"))
        with trio.fail_after(WAIT_S):
            while len(provider.seen) < 2:
                await trio.testing.wait_all_tasks_blocked()
        await third.stream.send_all(webhook(b"3"))
        assert (await third.response())[0] == 429
        provider.hold.set()
        assert [(await c.response())[0] for c in (first, second)] == [200, 200]
        await third.stream.send_all(webhook(b"3"))
        assert (await third.response())[0] == 200


async def test_idle_connections_are_closed_after_the_keep_alive_timeout() -> None:
    provider = FakeProvider()
    async with serving(provider, keep_alive_s=0.2) as (_, port, _):
        client = await connect(port)
        await client.stream.send_all(webhook())
        assert (await client.response())[0] == 200
        assert await client.closed()


async def test_stop_closes_idle_connections_and_lets_busy_ones_finish() -> None:
    provider = FakeProvider()
    async with serving(provider) as (_, port, stop):
        idle = await connect(port)
        await idle.stream.send_all(webhook(b"warm"))
        assert (await idle.response())[0] == 200
        provider.hold = trio.Event()
        busy = await connect(port)
        await busy.stream.send_all(webhook(b"slow"))
        with trio.fail_after(WAIT_S):
            while len(provider.seen) < 2:
                await trio.testing.wait_all_tasks_blocked()
        stop.set()
        assert await idle.closed()
        provider.hold.set()
        status, headers, body = await busy.response()
        assert (status, body, headers["connection"]) == (200, b"<Response>slow</Response>",
                                                          "close")
        assert await busy.closed()
