"""Fuzz the HTTP front: bytes in over a real loopback socket, with hand-over to Hypercorn.

Each example starts a front (fast path + Hypercorn + Quart, a fake carrier behind the gate),
sends arbitrary bytes or near-miss requests (request lines, headers, chunked framing,
pipelining) and half-closes. Asserted: no crash, no 5xx, every connection answered and closed
within a bound (the front's deadlines are set short), and no smuggling: the carrier only ever
sees bodies that were sent as bodies, whichever of the fast path or Hypercorn framed them.
"""

from __future__ import annotations

import re
from functools import partial
from typing import Any

import h11
import trio
from hypercorn.config import Config as HypercornConfig
from hypothesis import given
from hypothesis import strategies as st

from voicecall_trio.config import build_config
from voicecall_trio.front import HttpFront
from voicecall_trio.providers import WebhookRequest, WebhookResponse
from voicecall_trio.testing.directory import FakeDirectory
from voicecall_trio.testing.provider import FakeProvider
from voicecall_trio.web import WebhookGate, create_app_for

BOUND_S = 5.0  # every example's connection must be done by then (deadlines below are 0.5 s)


def ok(request: WebhookRequest) -> WebhookResponse:
    return WebhookResponse(200, b"ok")


async def exchange(raw: bytes) -> tuple[bytes, list[bytes]]:
    """Everything the server sent back for ``raw``, and the bodies the carrier saw."""
    carrier = FakeProvider(ok, name="fuzz")
    config = build_config({"webhookSecurity": {"maxBodyBytes": 4096}}, {})
    gate = WebhookGate(config, carrier, directory=FakeDirectory())
    hc = HypercornConfig()
    hc.accesslog = None
    hc.graceful_timeout = 0.5
    hc.keep_alive_timeout = 0.5
    front = HttpFront(create_app_for(gate), hc, gate, request_timeout_s=0.5)
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    stop = trio.Event()
    received = b""
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(front.serve, listeners, stop))
        with trio.fail_after(BOUND_S):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            try:
                await stream.send_all(raw)
                await stream.send_eof()
            except trio.BrokenResourceError:
                pass  # refused and closed before it all went: fine
            try:
                while data := await stream.receive_some(65536):
                    received += data
            except trio.BrokenResourceError:
                pass
            await stream.aclose()
        stop.set()
    return received, [request.body for request in carrier.seen]


def reference_bodies(raw: bytes) -> list[bytes]:
    """The webhook bodies h11 alone finds in ``raw``, in order, until it stops."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(raw)
    conn.receive_data(b"")
    out: list[bytes] = []
    body: list[bytes] | None = None
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError:
            return out
        if isinstance(event, h11.Request):
            target = event.target.split(b"?")[0]
            wanted = (event.method == b"POST" and target == b"/voice/webhook"
                      and any(name == b"x-sig" for name, _ in event.headers))
            body = [] if wanted else None
        elif isinstance(event, h11.Data) and body is not None:
            body.append(event.data)
        elif isinstance(event, h11.EndOfMessage):
            if body is not None and sum(map(len, body)) <= 4096:
                out.append(b"".join(body))
            try:
                conn.send(h11.Response(status_code=200, headers=[("content-length", "0")]))
                conn.send(h11.EndOfMessage())
                conn.start_next_cycle()
            except h11.LocalProtocolError:
                return out
        else:  # NEED_DATA, PAUSED, ConnectionClosed
            return out


def check(raw: bytes) -> None:
    received, bodies = trio.run(exchange, raw)
    statuses = [int(m) for m in re.findall(rb"HTTP/1\.[01] (\d{3}) ", received)]
    assert all(status < 500 for status in statuses), (raw, received)
    # no smuggling: wherever both found requests, they found the same ones (the front may
    # stop earlier, after a refusal that closes, or go on, with HTTP/1.0 keep-alive)
    reference = reference_bodies(raw)
    common = min(len(reference), len(bodies))
    assert bodies[:common] == reference[:common], (raw, bodies, reference)


@given(st.binary(max_size=600))
def test_arbitrary_bytes(raw: bytes) -> None:
    check(raw)


TOKENS = st.sampled_from(["POST", "GET", "PUT", "PRI", "post", "POST "])
TARGETS = st.sampled_from(["/voice/webhook", "/healthz", "/voice/webhook?x=1", "*", "/%2e",
                           "http://h/voice/webhook", "/voice/webhook/"])
VERSIONS = st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/1.1 ", "http/1.1"])
EOLS = st.sampled_from(["\r\n", "\n", "\r"])
HEADERS = st.lists(st.sampled_from([
    "Host: h", "X-Sig: s", "Content-Length: {n}", "Content-Length: {m}", "content-length: {n}",
    "Transfer-Encoding: chunked", "Transfer-Encoding: gzip", "Transfer-Encoding: chunked, x",
    "Expect: 100-continue", "Expect: nope", "Connection: close", "Connection: keep-alive",
    "Connection: upgrade", "Upgrade: websocket", "Upgrade: h2c", " folded", "X-A: b\x00",
    "Content-Length: +{n}", "Content-Length: {n}, {n}",
]), max_size=6)


@st.composite
def request(draw: Any, index: int) -> tuple[str, bytes]:
    body = f"b{index}=" + draw(st.text("xyz&=", max_size=20))
    eol = draw(EOLS) if draw(st.integers(0, 9)) == 0 else "\r\n"
    lines = [f"{draw(TOKENS)} {draw(TARGETS)} {draw(VERSIONS)}"]
    lines += [h.format(n=len(body), m=len(body) + 3) for h in draw(HEADERS)]
    if "chunked" in " ".join(lines).lower() and draw(st.booleans()):
        framed = f"{len(body):x}\r\n{body}\r\n0\r\n\r\n"
    else:
        framed = body
    return (eol.join(lines) + eol + eol + framed), body.encode()


@given(st.lists(st.integers(0, 99), min_size=1, max_size=4).flatmap(
    lambda ids: st.tuples(*[request(i) for i in ids])))
def test_near_miss_requests_pipelined(requests: tuple[tuple[str, bytes], ...]) -> None:
    check("".join(text for text, _ in requests).encode("latin-1"))
