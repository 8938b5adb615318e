"""The doctor's network checks against local servers: the stream upgrade, Telnyx's unsigned
reachability probe, and the model check (``serve``'s background one included)."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from voicecall_trio.cli.doctor.network import check_reachability, check_stream_upgrade
from voicecall_trio.config import build_config
from voicecall_trio.model_lifecycle import warn_about_models
from voicecall_trio.testing import FakeTelnyx, running_daemon

WAIT_S = 15.0


@asynccontextmanager
async def answering(status_line: bytes | None) -> AsyncIterator[int]:
    """A TCP server on loopback that answers any request with ``status_line`` (None: it
    closes without a word). Yields its port."""

    async def handler(stream: trio.SocketStream) -> None:
        head = b""
        while b"\r\n\r\n" not in head and len(head) < 8192:
            chunk = await stream.receive_some(4096)
            if not chunk:
                break
            head += chunk
        if status_line is not None:
            await stream.send_all(status_line + b"\r\nContent-Length: 0\r\n\r\n")
        await stream.aclose()

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, handler, listeners)
        yield port
        nursery.cancel_scope.cancel()


STREAMING = build_config({"streaming": {"enabled": True}}, {})


@pytest.mark.parametrize(("answer", "status", "words"), [
    (b"HTTP/1.1 403 Forbidden", "ok", "HTTP 403: signature enforced"),
    (b"HTTP/1.1 101 Switching Protocols", "ok", "upgraded"),
    (b"HTTP/1.1 404 Not Found", "fail", "HTTP 404"),
    (None, "fail", "not HTTP"),
])
async def test_stream_upgrade(answer: bytes | None, status: str, words: str) -> None:
    with trio.fail_after(WAIT_S):
        async with answering(answer) as port:
            check = await check_stream_upgrade(STREAMING, f"http://127.0.0.1:{port}")
    assert check.status == status and words in check.detail, check
    assert f"ws://127.0.0.1:{port}/voice/stream" in check.detail


async def test_stream_upgrade_to_a_closed_port_and_when_off() -> None:
    async with answering(None) as port:
        pass
    check = await check_stream_upgrade(STREAMING, f"https://127.0.0.1:{port}/voice/webhook")
    assert check.status == "fail" and "cannot connect" in check.detail
    assert f"wss://127.0.0.1:{port}/voice/stream" in check.detail
    off = await check_stream_upgrade(build_config({}, {}), "https://x.example")
    assert off.status == "skip"


async def test_telnyx_reachability_counts_this_daemons_401(tmp_path: Path) -> None:
    with trio.fail_after(WAIT_S):
        async with FakeTelnyx() as fake:
            doc = {"provider": "telnyx", "fromNumber": "+15550001234",
                   "telnyx": {"apiKey": "KEY", "connectionId": "conn-1",
                              "publicKey": fake.public_key, "apiBaseUrl": fake.url}}
            async with running_daemon(doc, store=tmp_path / "s") as d, \
                    httpx.AsyncClient() as http:
                check = await check_reachability(d.config, d.webhook_url,
                                                 d.handle.probe_token, http)
                assert check.status == "ok" and "HTTP 401" in check.detail, check
                wrong = await check_reachability(d.config, d.webhook_url, "not-the-token",
                                                 http)
                assert wrong.status == "fail" and "not from this daemon" in wrong.detail
                # /healthz is not where the token goes: it never shows it
                health = (await http.get(f"{d.base_url}/healthz")).json()
                assert "probeToken" not in health
                assert d.handle.probe_token not in json.dumps(health)


def models_transport(shutdowns: dict[str, Any], seen: list[httpx.Request]) -> httpx.MockTransport:
    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        model = request.url.path.rsplit("/", 1)[-1]
        if model not in shutdowns:
            return httpx.Response(404, json={"error": {"message": "no such model"}})
        return httpx.Response(200, json={"id": model, "object": "model",
                                         "shutdown_date": shutdowns[model]})

    return httpx.MockTransport(answer)


async def test_background_check_warns_once_per_model(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="voicecall.models")
    config = build_config({"streaming": {"enabled": True, "openaiApiKey": "sk-bg-0123456789"},
                           "responseModel": "openai/gpt-4o-mini"}, {})
    seen: list[httpx.Request] = []
    transport = models_transport({"gpt-4o-mini": "2027-01-14", "gpt-4o-transcribe": None,
                                  "gpt-4o-mini-tts": 1_600_000_000}, seen)
    async with httpx.AsyncClient(transport=transport) as http:
        from datetime import date

        await warn_about_models(config, {}, http=http, today=lambda: date(2027, 1, 1))
    assert [r.url.path for r in seen] == ["/v1/models/gpt-4o-mini",
                                          "/v1/models/gpt-4o-transcribe",
                                          "/v1/models/gpt-4o-mini-tts"]
    assert all(r.headers["authorization"] == "Bearer sk-bg-0123456789" for r in seen)
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings == [
        "model check: responseModel gpt-4o-mini: OpenAI shuts it down on 2027-01-14 (in 13 "
        "days); choose a newer model",
        "model check: tts.model gpt-4o-mini-tts: shut down by OpenAI on 2020-09-13; choose a "
        "newer model"]
    assert "sk-bg" not in caplog.text


async def test_a_model_another_server_does_not_list_is_not_a_failure() -> None:
    """OpenRouter, vLLM and others answer 404 to ``GET /models/{id}``: only OpenAI announces
    shutdowns, so there that is no finding against the config (doctor must not fail a
    working reply setup); at OpenAI a 404 is still a failure (a model that does not exist)."""
    from datetime import date

    from voicecall_trio.cli.doctor.network import check_models

    seen: list[httpx.Request] = []
    local = build_config({"responseBaseUrl": "https://openrouter.ai/api/v1",
                          "responseModel": "openrouter/anthropic/claude-3.5-sonnet",
                          "responseApiKey": "sk-or-0123456789"}, {})
    openai = build_config({"responseModel": "openai/gpt-typo",
                           "responseApiKey": "sk-oa-0123456789"}, {})
    async with httpx.AsyncClient(transport=models_transport({}, seen)) as http:
        elsewhere = await check_models(local, {}, http, today=date(2027, 1, 1))
        at_openai = await check_models(openai, {}, http, today=date(2027, 1, 1))
    assert len(seen) == 2
    assert elsewhere.status == "ok", elsewhere.detail
    assert "openrouter.ai" in elsewhere.detail and "sk-or" not in elsewhere.detail
    assert at_openai.status == "fail" and "no such model" in at_openai.detail


async def test_no_key_no_request_and_a_failing_server_never_raises(
        caplog: pytest.LogCaptureFixture) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise AssertionError("no request may be made without a key")

    async with httpx.AsyncClient(transport=httpx.MockTransport(refuse)) as http:
        await warn_about_models(build_config({"streaming": {"enabled": True}}, {}), {},
                                http=http)

    def broken(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    caplog.set_level(logging.WARNING, logger="voicecall.models")
    config = build_config({"streaming": {"openaiApiKey": "sk-x-0123456789"}}, {})
    async with httpx.AsyncClient(transport=httpx.MockTransport(broken)) as http:
        await warn_about_models(config, {}, http=http)
    assert "cannot look it up" in caplog.text and "sk-x" not in caplog.text


async def test_serve_checks_models_in_the_background_after_ready(tmp_path: Path) -> None:
    requested = trio.Event()
    paths: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        paths.append(scope["path"])
        requested.set()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b'{"id": "m"}'})

    from voicecall_trio.testing import serve_asgi

    stop = trio.Event()
    with trio.fail_after(WAIT_S):
        async with trio.open_nursery() as nursery:
            base = await nursery.start(serve_asgi, app, stop)
            doc = {"responseBaseUrl": f"{base}/v1", "responseModel": "openai/m",
                   "streaming": {"openaiApiKey": "sk-serve-0123456789"}}
            async with running_daemon(doc, store=tmp_path / "s") as d:
                assert (await d.rpc("daemon.health"))["ready"] is True
                await requested.wait()
            stop.set()
    assert paths == ["/v1/models/m"]


def test_a_socket_that_never_answers_fails_the_daemon_check(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    from voicecall_trio.cli.doctor import local

    monkeypatch.setattr(local, "HEALTH_TIMEOUT_S", 0.2)
    path = tmp_path / "mute.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as mute:
        mute.bind(str(path))
        mute.listen(1)  # connections queue up; nobody ever reads or answers
        check, health = local.check_daemon(str(path))
    assert check.status == "fail" and "no answer to daemon.health" in check.detail
    assert health is None


async def test_the_probe_echo_on_both_http_paths(tmp_path: Path) -> None:
    from voicecall_trio.health import PROBE_HEADER

    async def chunked() -> Any:
        yield b"a=1"

    with trio.fail_after(WAIT_S):
        async with running_daemon({}, store=tmp_path / "s") as d, httpx.AsyncClient() as http:
            token = d.handle.probe_token
            assert (await d.rpc("daemon.health"))["probeToken"] == token
            fast = await http.post(d.webhook_url, content=b"a=1", headers={PROBE_HEADER: token})
            handed = await http.post(d.webhook_url, content=chunked(),
                                     headers={PROBE_HEADER: token})  # chunked: Hypercorn's
            wrong = await http.post(d.webhook_url, content=b"", headers={PROBE_HEADER: "x"})
            plain = await http.post(d.webhook_url, content=b"")
    assert fast.headers.get(PROBE_HEADER) == token and fast.status_code == 404
    assert handed.headers.get(PROBE_HEADER) == token and handed.status_code == 404
    assert PROBE_HEADER not in wrong.headers and PROBE_HEADER not in plain.headers


@pytest.mark.parametrize("url", ["http://[::1/voice/webhook", "http://127.0.0.1:99999/x",
                                 "ftp://x.example/voice/webhook", "not a url"])
async def test_a_malformed_public_url_fails_the_checks_without_a_crash(url: str) -> None:
    config = build_config({"streaming": {"enabled": True}}, {})
    async with httpx.AsyncClient() as http:
        reach = await check_reachability(config, url, "token", http)
    upgrade = await check_stream_upgrade(config, url)
    assert reach.status == "fail" and upgrade.status == "fail", (reach, upgrade)
