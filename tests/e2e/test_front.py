"""The HTTP front on a real loopback socket: webhooks answered in place, the rest by Hypercorn."""

from __future__ import annotations

import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing
from hypercorn.config import Config as HypercornConfig

from voicecall_trio import front as front_module
from voicecall_trio import front_limits
from voicecall_trio.config import build_config
from voicecall_trio.front import HttpFront
from voicecall_trio.providers import WebhookRequest, WebhookResponse
from voicecall_trio.testing.directory import FakeDirectory
from voicecall_trio.testing.provider import FakeProvider
from voicecall_trio.web import WebhookGate, create_app_for

WAIT_S = 10


def echo(request: WebhookRequest) -> WebhookResponse:
    """The carrier module: each body back inside ``<Response>``; ``boom`` is a bug in it and
    ``big`` a 64 KiB answer."""
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
    gate = WebhookGate(config, provider, directory=FakeDirectory())
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
    provider = FakeProvider(echo)
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
    provider = FakeProvider(echo)
    async with serving(provider) as (_, port, _):
        client = await connect(port)
        await client.stream.send_all(webhook(b"first") + webhook(b"second") + webhook(b"x"))
        bodies = [(await client.response())[2] for _ in range(3)]
        assert bodies == [b"<Response>first</Response>", b"<Response>second</Response>",
                          b"<Response>x</Response>"]


async def test_other_requests_go_to_hypercorn_with_the_bytes_already_read() -> None:
    provider = FakeProvider(echo)
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
    provider = FakeProvider(echo)
    async with serving(provider) as (front, port, _):
        client = await connect(port)
        await client.stream.send_all(
            b"POST /voice/webhook HTTP/1.1\r\nHost: x\r\nX-Sig: s\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n4\r\nab=1\r\n3\r\n&c=\r\n0\r\n\r\n")
        status, _, body = await client.response()
        assert (status, body) == (200, b"<Response>ab=1&c=</Response>")
        assert (front.answered, front.handed_over) == (0, 1)


async def test_refusals_are_the_gates_and_leave_the_connection_usable() -> None:
    provider = FakeProvider(echo)
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
    provider = FakeProvider(echo)
    async with serving(provider) as (_, port, _):
        client = await connect(port)
        await client.stream.send_all(webhook(b"x" * 101))
        status, headers, _ = await client.response()
        assert status == 413 and headers["connection"] == "close"
        assert await client.closed()
        assert provider.seen == []


async def test_an_unsigned_oversized_body_is_not_read_either() -> None:
    provider = FakeProvider(echo)
    async with serving(provider) as (_, port, _):
        client = await connect(port)
        await client.stream.send_all(b"POST /voice/webhook HTTP/1.1\r\nHost: x\r\n"
                                     b"Content-Length: 1000000000\r\n\r\n" + b"x" * 1000)
        status, headers, _ = await client.response()
        assert status == 401 and headers["connection"] == "close"
        assert await client.closed()
        assert provider.seen == []


async def test_a_client_that_stops_reading_is_dropped(autojump_clock: Any) -> None:
    provider = FakeProvider(echo)
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
    provider = FakeProvider(echo)
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
    provider = FakeProvider(echo)
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
    provider = FakeProvider(echo)
    async with serving(provider, keep_alive_s=0.2) as (_, port, _):
        client = await connect(port)
        await client.stream.send_all(webhook())
        assert (await client.response())[0] == 200
        assert await client.closed()


async def test_stop_closes_idle_connections_and_lets_busy_ones_finish() -> None:
    provider = FakeProvider(echo)
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


# -- issue 8: every connection bounded in time, whoever serves it -----------------------------

SHORT_REQUEST_S = 0.5  # the request timeout these tests set (the daemon's is 10 s)
SHORT_KEEP_ALIVE_S = 1.0


@pytest.fixture
def short_timeouts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(front_module, "REQUEST_TIMEOUT_S", SHORT_REQUEST_S)


async def closed_within(client: Client, seconds: float) -> float:
    """Read (and drop) until the server closes; how long that took. Fails past ``seconds``."""
    start = trio.current_time()
    with trio.fail_after(seconds):
        while True:
            try:
                data = await client.stream.receive_some(65536)
            except trio.BrokenResourceError:
                break
            if not data:
                break
    return trio.current_time() - start


STALLED_HEADS = {
    "chunked head, no chunks": b"POST /voice/webhook HTTP/1.1\r\nHost: x\r\nX-Sig: s\r\n"
                               b"Transfer-Encoding: chunked\r\n\r\n",
    "expect, no body": b"POST /other HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                       b"Content-Length: 10\r\n\r\n",
    "HTTP/1.0 length, no body": b"POST /healthz HTTP/1.0\r\nContent-Length: 10\r\n\r\n",
    "healthz body never comes": b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n"
                                b"\r\n",
    "h2 preface, then nothing": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
}


@pytest.mark.parametrize("raw", STALLED_HEADS.values(), ids=STALLED_HEADS.keys())
async def test_a_handed_over_request_that_stalls_is_closed_at_its_deadline(
        raw: bytes, short_timeouts: None) -> None:
    async with serving(FakeProvider(echo), keep_alive_s=30.0) as (front, port, _):
        client = await connect(port)
        await client.stream.send_all(raw)
        elapsed = await closed_within(client, 5 * SHORT_REQUEST_S)
        assert elapsed < 3 * SHORT_REQUEST_S and front.handed_over == 1


async def test_a_slowloris_body_does_not_extend_the_deadline(short_timeouts: None) -> None:
    async with serving(FakeProvider(echo)) as (_, port, _):
        client = await connect(port)
        await client.stream.send_all(b"POST /voice/webhook HTTP/1.1\r\nHost: x\r\nX-Sig: s\r\n"
                                     b"Transfer-Encoding: chunked\r\n\r\nffff\r\n")
        start = trio.current_time()
        with trio.move_on_after(10 * SHORT_REQUEST_S):
            try:
                while True:  # one byte every 0.1 s, forever unless the server ends it
                    await client.stream.send_all(b"a")
                    await trio.sleep(0.1)
            except trio.BrokenResourceError:
                pass
        assert trio.current_time() - start < 3 * SHORT_REQUEST_S
        await closed_within(client, 1.0)


async def test_a_handed_over_keep_alive_connection_closes_when_idle(short_timeouts: None
                                                                     ) -> None:
    async with serving(FakeProvider(echo), keep_alive_s=SHORT_KEEP_ALIVE_S) as (front, port, _):
        client = await connect(port)
        for _ in range(2):  # served by Quart, then kept alive
            await client.stream.send_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await client.response())[0] == 200
        elapsed = await closed_within(client, 4 * SHORT_KEEP_ALIVE_S)
        assert 0.5 * SHORT_KEEP_ALIVE_S < elapsed < 3 * SHORT_KEEP_ALIVE_S
        assert front.handed_over == 1


async def test_a_request_being_handled_has_no_deadline(short_timeouts: None) -> None:
    provider = FakeProvider(echo)
    provider.hold = trio.Event()
    async with serving(provider) as (_, port, _):
        client = await connect(port)
        await client.stream.send_all(b"POST /voice/webhook HTTP/1.1\r\nHost: x\r\nX-Sig: s\r\n"
                                     b"Transfer-Encoding: chunked\r\n\r\n3\r\na=1\r\n0\r\n\r\n")
        await trio.sleep(3 * SHORT_REQUEST_S)  # the carrier module takes its time
        provider.hold.set()
        status, _, body = await client.response()
        assert (status, body) == (200, b"<Response>a=1</Response>")


# -- issue 8: junk cannot take carrier slots ----------------------------------------------------


async def test_pending_junk_does_not_take_the_carriers_slots() -> None:
    provider = FakeProvider(echo)
    async with serving(provider) as (_, port, _):  # maxInFlightPerIp: 2
        junk = [await connect(port) for _ in range(4)]
        for n, client in enumerate(junk):  # a signature header, a body that never finishes
            if n % 2:
                await client.stream.send_all(webhook(b"x" * 50)[:-10])
            else:  # chunked: Hypercorn's WebhookEndpoint
                await client.stream.send_all(
                    b"POST /voice/webhook HTTP/1.1\r\nHost: x\r\nX-Sig: junk\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n5\r\nab")
        await trio.testing.wait_all_tasks_blocked()
        carrier = await connect(port)
        for _ in range(3):
            await carrier.stream.send_all(webhook())
            assert (await carrier.response())[0] == 200
        chunked = await connect(port)
        await chunked.stream.send_all(
            b"POST /voice/webhook HTTP/1.1\r\nHost: x\r\nX-Sig: s\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n3\r\na=1\r\n0\r\n\r\n")
        assert (await chunked.response())[0] == 200
        for client in [*junk, carrier, chunked]:
            await client.stream.aclose()


# -- issue 8: file descriptors cannot be exhausted from outside ---------------------------------


def test_the_connection_cap_keeps_a_reserve_below_the_fd_limit() -> None:
    assert front_limits.connection_cap(768, 1024) == 768
    assert front_limits.connection_cap(768, 512) == 512 - front_limits.FD_RESERVE
    assert front_limits.connection_cap(768, 10) == 1


def test_a_recurring_warning_is_one_line_a_minute_with_a_count(
        caplog: pytest.LogCaptureFixture) -> None:
    warn = front_limits.Throttled("cannot accept")
    for tick in range(1200):  # two minutes of failures every 0.1 s
        warn(tick / 10, "Too many open files")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and all("Too many open files" in line for line in lines)
    assert "(600 time(s)" in lines[1] and not any(r.exc_info for r in caplog.records)


async def test_at_the_cap_the_oldest_idle_connection_is_shed(monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    monkeypatch.setattr(front_module, "MAX_CONNECTIONS", 4)
    async with serving(FakeProvider(echo)) as (front, port, _):
        idle = [await connect(port) for _ in range(3)]
        await idle[0].stream.send_all(webhook())  # kept alive after an answer
        assert (await idle[0].response())[0] == 200
        slow = await connect(port)  # a request arriving slowly: shed after the idle ones
        await slow.stream.send_all(webhook()[:20])
        await trio.testing.wait_all_tasks_blocked()
        fresh = [await connect(port) for _ in range(3)]  # (kept: a dropped one would close)
        for client in fresh:
            await client.stream.send_all(webhook())
            assert (await client.response())[0] == 200
        for client in idle:  # the three that were idle longest went first
            assert await client.closed()
        assert front.shed == 3 and front.open_connections <= 4
        await trio.testing.wait_all_tasks_blocked()
        await slow.stream.send_all(webhook()[20:])
        assert (await slow.response())[0] == 200  # never shed: idle ones went first


async def test_at_the_cap_busy_connections_are_never_shed(monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    monkeypatch.setattr(front_module, "MAX_CONNECTIONS", 2)
    provider = FakeProvider(echo)
    provider.hold = trio.Event()
    async with serving(provider) as (front, port, _):
        busy = [await connect(port) for _ in range(2)]
        for n, client in enumerate(busy):
            await client.stream.send_all(webhook(f"{n}".encode()))
        with trio.fail_after(WAIT_S):
            while len(provider.seen) < 2:
                await trio.testing.wait_all_tasks_blocked()
        late = await connect(port)
        assert await late.closed()
        assert front.refused == 1
        provider.hold.set()
        assert [(await c.response())[0] for c in busy] == [200, 200]


# -- issue 8, item 10: the smaller HTTP ones -----------------------------------------------------


async def test_an_unknown_transfer_encoding_is_a_400_not_a_501() -> None:
    async with serving(FakeProvider(echo)) as (_, port, _):
        client = await connect(port)
        await client.stream.send_all(b"POST /voice/webhook HTTP/1.1\r\nHost: x\r\nX-Sig: s\r\n"
                                     b"Transfer-Encoding: gzip, chunked\r\n\r\n")
        assert (await client.response())[0] == 400


async def test_both_framings_at_once_are_refused_and_the_connection_closed() -> None:
    """Review finding: Transfer-Encoding and Content-Length together (a smuggling attempt
    behind a proxy that believes Content-Length) was served by h11 and the connection kept,
    so a request hidden in the body was answered too. RFC 9112 6.3: refuse, or close."""
    async with serving(FakeProvider(echo)) as (front, port, _):
        client = await connect(port)
        await client.stream.send_all(
            b"POST /voice/webhook HTTP/1.1\r\nHost: x\r\nX-Sig: s\r\nContent-Length: 5\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + webhook())
        status, headers, _ = await client.response()
        assert status == 400 and headers.get("connection") == "close"
        assert await closed_within(client, WAIT_S) < WAIT_S  # the hidden request: never read
        assert front.handed_over == 0


@pytest.mark.parametrize("raw", [
    b"GET /healthz HTTP/1.1\nHost: x\n\n",  # bare LF: h11 takes it, our parser never would
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(64)),  # a TLS ClientHello
    b"\x00\xff garbage without any line end",
    b"GET /healthz HTTP/1.1\r\nHost: x\nX-A: b\r\n\n",
])
async def test_a_head_that_cannot_be_simple_is_answered_at_once(raw: bytes) -> None:
    async with serving(FakeProvider(echo)) as (_, port, _):  # the request timeout stays 10 s
        client = await connect(port)
        await client.stream.send_all(raw)
        with trio.fail_after(2):
            status = (await client.response())[0]
        assert status in (200, 400)
        await client.stream.aclose()


async def test_pipelined_http10_keep_alive_webhooks_are_both_answered() -> None:
    provider = FakeProvider(echo)
    async with serving(provider) as (_, port, _):
        client = await connect(port)
        one = (b"POST /voice/webhook HTTP/1.0\r\nHost: x\r\nX-Sig: s\r\n"
               b"Connection: keep-alive\r\nContent-Length: 3\r\n\r\n")
        await client.stream.send_all(one + b"n=1" + one + b"n=2")
        first, second = await client.response(), await client.response()
        assert (first[0], first[2], first[1]["connection"]) == (200, b"<Response>n=1</Response>",
                                                                "keep-alive")
        assert (second[0], second[2]) == (200, b"<Response>n=2</Response>")
        plain = await connect(port)  # without keep-alive: answered, then closed
        await plain.stream.send_all(one.replace(b"keep-alive", b"x") + b"n=3")
        status, headers, _ = await plain.response()
        assert (status, headers["connection"]) == (200, "close") and await plain.closed()


@pytest.mark.parametrize(("extra", "status"), [
    ("", 401),  # no signature header
    ("X-Sig: s\r\nContent-Length: 1000\r\n", 413),
    ("Transfer-Encoding: chunked\r\n", 401),  # one Hypercorn would serve
])
async def test_expect_100_continue_is_refused_before_the_go_ahead(extra: str, status: int
                                                                  ) -> None:
    async with serving(FakeProvider(echo)) as (_, port, _):
        client = await connect(port)
        length = "" if "Content-Length" in extra or "chunked" in extra else \
            "Content-Length: 5\r\n"
        await client.stream.send_all(f"POST /voice/webhook HTTP/1.1\r\nHost: x\r\n{extra}"
                                     f"{length}Expect: 100-continue\r\n\r\n".encode())
        assert (await client.response())[0] == status  # the first answer, not a 100
        assert await client.closed()


async def test_expect_100_continue_at_the_in_flight_limit_is_a_429_first() -> None:
    provider = FakeProvider(echo)
    provider.hold = trio.Event()
    async with serving(provider) as (_, port, _):
        busy = [await connect(port) for _ in range(2)]
        for client in busy:
            await client.stream.send_all(webhook())
        with trio.fail_after(WAIT_S):
            while len(provider.seen) < 2:
                await trio.testing.wait_all_tasks_blocked()
        late = await connect(port)
        head = webhook(b"a=1")[:-5]  # up to the blank line
        await late.stream.send_all(head + b"Expect: 100-continue\r\n\r\n")
        assert (await late.response())[0] == 429  # the first answer, not a 100
        assert await late.closed()
        provider.hold.set()
        assert [(await c.response())[0] for c in busy] == [200, 200]


async def test_expect_100_continue_then_the_body_is_answered() -> None:
    provider = FakeProvider(echo)
    async with serving(provider) as (front, port, _):
        client = await connect(port)
        head = webhook(b"a=1")[:-3]
        await client.stream.send_all(head[:-2] + b"Expect: 100-continue\r\n\r\n")
        with trio.fail_after(WAIT_S):
            while b"\r\n\r\n" not in client.buffer:
                await client._more()
        assert client.buffer.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        client.buffer = client.buffer[len(b"HTTP/1.1 100 Continue\r\n\r\n"):]
        await client.stream.send_all(b"a=1")
        status, _, body = await client.response()
        assert (status, body) == (200, b"<Response>a=1</Response>")
        assert front.handed_over == 0


async def test_an_early_413_on_a_chunked_body_logs_no_traceback(
        caplog: pytest.LogCaptureFixture) -> None:
    """Clients that send a chunked body over the cap and reset the connection at once: the
    413 races Hypercorn's close (a race: before the fix about half the runs logged one)."""
    async with serving(FakeProvider(echo)) as (front, port, _):
        for size in (8, 20, 50, 200, 1000) * 20:
            sock = trio.socket.socket()
            await sock.connect(("127.0.0.1", port))
            chunks = b"".join(b"10\r\n" + b"x" * 16 + b"\r\n" for _ in range(size))
            try:
                await sock.send(b"POST /voice/webhook HTTP/1.1\r\nHost: x\r\nX-Sig: s\r\n"
                                b"Transfer-Encoding: chunked\r\n\r\n" + chunks)
            except OSError:
                pass
            await trio.sleep(0.001 * (size % 3))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()  # a reset, not a clean close
        with trio.fail_after(WAIT_S):
            await trio.testing.wait_all_tasks_blocked(0.05)  # the resets are all handled
        assert front.open_connections == 0
    assert not [r for r in caplog.records if r.exc_info or "ASGI" in r.getMessage()]


async def test_a_chunked_webhook_with_expect_gets_its_100_when_it_is_not_refused() -> None:
    async with serving(FakeProvider(echo)) as (front, port, _):
        client = await connect(port)
        await client.stream.send_all(b"POST /voice/webhook HTTP/1.1\r\nHost: x\r\nX-Sig: s\r\n"
                                     b"Transfer-Encoding: chunked\r\n"
                                     b"Expect: 100-continue\r\n\r\n")
        with trio.fail_after(WAIT_S):
            while b"\r\n\r\n" not in client.buffer:
                await client._more()
        assert client.buffer.startswith(b"HTTP/1.1 100 ")
        client.buffer = client.buffer.partition(b"\r\n\r\n")[2]
        await client.stream.send_all(b"3\r\na=1\r\n0\r\n\r\n")
        status, _, body = await client.response()
        assert (status, body, front.handed_over) == (200, b"<Response>a=1</Response>", 1)


class H2Client:
    """Just enough of an h2 client (the h2 package Hypercorn uses) for the deadline tests."""

    def __init__(self, stream: trio.SocketStream) -> None:
        import h2.config
        import h2.connection

        self.stream = stream
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.conn.initiate_connection()

    async def flush(self) -> None:
        await self.stream.send_all(self.conn.data_to_send())

    async def response_status(self, stream_id: int) -> int:
        import h2.events

        with trio.fail_after(WAIT_S):
            while True:
                data = await self.stream.receive_some(65536)
                assert data, "closed before the response"
                for event in self.conn.receive_data(data):
                    if isinstance(event, h2.events.ResponseReceived):
                        return int(dict(event.headers)[b":status"])
                await self.flush()


async def test_h2_connections_have_the_same_deadlines(short_timeouts: None) -> None:
    async with serving(FakeProvider(echo), keep_alive_s=SHORT_KEEP_ALIVE_S) as (_, port, _):
        idle = H2Client(await trio.open_tcp_stream("127.0.0.1", port))
        idle.conn.send_headers(1, [(":method", "GET"), (":path", "/healthz"),
                                   (":scheme", "http"), (":authority", "x")], end_stream=True)
        await idle.flush()
        assert await idle.response_status(1) == 200
        slow = H2Client(await trio.open_tcp_stream("127.0.0.1", port))
        slow.conn.send_headers(1, [(":method", "POST"), (":path", "/voice/webhook"),
                                   (":scheme", "http"), (":authority", "x"), ("x-sig", "s")])
        await slow.flush()  # and the body never comes
        assert await closed_within(Client(slow.stream), 4 * SHORT_REQUEST_S) < 3 * SHORT_REQUEST_S
        assert await closed_within(Client(idle.stream), 4 * SHORT_KEEP_ALIVE_S) > 0


def test_max_connections_must_be_positive() -> None:
    from voicecall_trio.errors import ConfigError

    assert build_config({}, {}).serve.max_connections == front_module.MAX_CONNECTIONS
    with pytest.raises(ConfigError, match=r"serve\.maxConnections"):
        build_config({"serve": {"maxConnections": 0}}, {})


async def test_an_h2_peer_that_never_opens_its_window_holds_no_slot_and_no_connection(
        short_timeouts: None) -> None:
    """Review finding: h2 streams whose answers can never be sent (the peer advertises a zero
    window) kept their webhook slots and their connection for ever, so signed webhooks from
    that address got 429 and the cap filled with dead connections. The slot is released
    before the answer goes out, and an answer still going out runs against the request
    timeout."""
    import h2.settings

    async with serving(FakeProvider(echo)) as (front, port, _):
        stuck = H2Client(await trio.open_tcp_stream("127.0.0.1", port))
        stuck.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
        for _ in range(3):  # more than maxInFlightPerIp (2) in these tests
            stream_id = stuck.conn.get_next_available_stream_id()
            stuck.conn.send_headers(stream_id, [
                (":method", "POST"), (":path", "/voice/webhook"), (":scheme", "http"),
                (":authority", "x"), ("x-sig", "s")])
            stuck.conn.send_data(stream_id, b"a=1", end_stream=True)
        healthz = stuck.conn.get_next_available_stream_id()
        stuck.conn.send_headers(healthz, [(":method", "GET"), (":path", "/healthz"),
                                          (":scheme", "http"), (":authority", "x")],
                                end_stream=True)
        await stuck.flush()
        with trio.fail_after(WAIT_S):
            await trio.testing.wait_all_tasks_blocked(0.05)  # the answers are stuck now
        assert front.handed_over == 1 and front.gate.in_flight == {}
        client = await connect(port)
        await client.stream.send_all(webhook())
        assert (await client.response())[0] == 200  # not 429
        assert await closed_within(Client(stuck.stream), 4 * SHORT_REQUEST_S) < 3 * SHORT_REQUEST_S
        with trio.fail_after(WAIT_S):
            await trio.testing.wait_all_tasks_blocked(0.05)
        assert front.open_connections == 1  # only the fast-path client is left
