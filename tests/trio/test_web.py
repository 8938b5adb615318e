"""The webhook endpoint's guards, driven as an ASGI app (no server, no carrier)."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

from voicecall_trio.config import build_config
from voicecall_trio.errors import SignatureRejected
from voicecall_trio.providers import WebhookRequest, WebhookResponse
from voicecall_trio.testing.directory import FakeDirectory
from voicecall_trio.testing.provider import FakeProvider
from voicecall_trio.web import create_app


def answer(request: WebhookRequest) -> WebhookResponse:
    """The carrier module: an empty TwiML document with a header of its own; ``boom`` is a bug
    in it."""
    if request.body == b"boom":
        raise RuntimeError("carrier module bug")
    if request.body == b"forged":
        raise SignatureRejected("signature does not match")
    return WebhookResponse(200, b"<Response/>", "text/xml", {"X-Extra": "1"})


async def call(app: Any, method: str, path: str, *, headers: dict[str, str] | None = None,
               chunks: tuple[bytes, ...] = (b"",), query: bytes = b"") -> tuple[int, bytes, dict[
                   str, str]]:
    pending = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
               for i, c in enumerate(chunks)]
    received: list[dict[str, Any]] = []
    reads = 0

    async def receive() -> dict[str, Any]:
        nonlocal reads
        reads += 1
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        received.append(message)

    scope = {"type": "http", "method": method, "path": path, "query_string": query,
             "headers": [(k.encode(), v.encode()) for k, v in (headers or {}).items()],
             "client": ("10.0.0.1", 1234), "scheme": "https", "http_version": "1.1",
             "root_path": "", "raw_path": path.encode(), "server": ("127.0.0.1", 3334)}
    await app(scope, receive, send)
    start = next(m for m in received if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in received if m["type"] == "http.response.body")
    out_headers = {k.decode(): v.decode() for k, v in start["headers"]}
    out_headers["_reads"] = str(reads)
    return start["status"], body, out_headers


def make(provider: FakeProvider, **overrides: Any) -> Any:
    config = build_config({"webhookSecurity": {"maxBodyBytes": 100, "maxInFlightPerIp": 2},
                           **overrides}, {})
    return create_app(config, provider, directory=FakeDirectory())


async def test_a_signed_post_reaches_the_carrier_with_everything_it_needs() -> None:
    provider = FakeProvider(answer)
    status, body, headers = await call(make(provider), "POST", "/voice/webhook",
                                       headers={"X-Sig": "abc", "Host": "voice.example.com"},
                                       chunks=(b"a=1&", b"b=2"), query=b"callId=c1")
    assert (status, body, headers["x-extra"]) == (200, b"<Response/>", "1")
    (seen,) = provider.seen
    assert seen.body == b"a=1&b=2" and seen.query_string == "callId=c1"
    assert seen.headers["x-sig"] == "abc" and seen.host == "voice.example.com"
    assert (seen.scheme, seen.remote_addr) == ("https", "10.0.0.1")


async def test_missing_signature_is_401_before_the_body_is_read() -> None:
    provider = FakeProvider(answer)
    status, _, headers = await call(make(provider), "POST", "/voice/webhook",
                                    chunks=(b"x" * 50,))
    assert status == 401 and headers["_reads"] == "0" and not provider.seen


async def test_skip_signature_verification_lets_unsigned_requests_through() -> None:
    provider = FakeProvider(answer)
    status, _, _ = await call(make(provider, skipSignatureVerification=True), "POST",
                              "/voice/webhook")
    assert status == 200 and provider.seen


async def test_bodies_over_the_cap_are_413_declared_or_streamed() -> None:
    provider = FakeProvider(answer)
    app = make(provider)
    declared, _, headers = await call(app, "POST", "/voice/webhook",
                                      headers={"X-Sig": "a", "Content-Length": "101"})
    assert declared == 413 and headers["_reads"] == "0"
    streamed, _, _ = await call(app, "POST", "/voice/webhook", headers={"X-Sig": "a"},
                                chunks=(b"x" * 60, b"x" * 60))
    assert streamed == 413 and not provider.seen


async def test_wrong_method_path_and_carrier_failure() -> None:
    provider = FakeProvider(answer)
    app = make(provider)
    assert (await call(app, "GET", "/voice/webhook"))[0] == 405
    assert (await call(app, "POST", "/voice/webhook-evil", headers={"X-Sig": "a"}))[0] == 404
    assert (await call(app, "POST", "/voice/webhook/", headers={"X-Sig": "a"}))[0] == 404
    assert (await call(app, "POST", "/voice/webhook", headers={"X-Sig": "a"},
                       chunks=(b"boom",)))[0] == 400
    assert (await call(app, "POST", "/voice/webhook",
                       headers={"X-Sig": "a", "Content-Length": "nope"}))[0] == 400


async def test_a_rejection_left_to_the_gate_is_rendered_with_its_status() -> None:
    app = make(FakeProvider(answer))
    status, body, _ = await call(app, "POST", "/voice/webhook", headers={"X-Sig": "a"},
                                 chunks=(b"forged",))
    assert (status, body) == (401, b"invalid signature")  # the reason stays in the log


async def test_per_ip_in_flight_limit_answers_429() -> None:
    gate = trio.Event()
    provider = FakeProvider(answer, hold=gate)
    app = make(provider)
    results: list[int] = []

    async def one() -> None:
        results.append((await call(app, "POST", "/voice/webhook", headers={"X-Sig": "a"}))[0])

    async with trio.open_nursery() as nursery:
        nursery.start_soon(one)
        nursery.start_soon(one)
        await trio.testing.wait_all_tasks_blocked()
        assert (await call(app, "POST", "/voice/webhook", headers={"X-Sig": "a"}))[0] == 429
        gate.set()
    assert results == [200, 200]
    assert (await call(app, "POST", "/voice/webhook", headers={"X-Sig": "a"}))[0] == 200


async def test_requests_whose_body_never_completes_take_no_in_flight_slot() -> None:
    provider = FakeProvider(answer)
    app = make(provider)  # maxInFlightPerIp: 2
    never = trio.Event()

    async def stalled() -> None:
        async def receive() -> dict[str, Any]:
            await never.wait()  # the body never finishes
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            pass

        scope = {"type": "http", "method": "POST", "path": "/voice/webhook",
                 "headers": [(b"x-sig", b"junk")], "client": ("10.0.0.1", 1)}
        await app(scope, receive, send)

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(stalled)
        await trio.testing.wait_all_tasks_blocked()
        assert (await call(app, "POST", "/voice/webhook", headers={"X-Sig": "a"}))[0] == 200
        nursery.cancel_scope.cancel()
