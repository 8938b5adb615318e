"""``voicecall doctor`` end to end: the real CLI against a real daemon, offline.

The loopback setup: ``publicUrl`` is the daemon's own ``http://127.0.0.1:PORT`` URL, so the
reachability self-test goes out of the CLI, into the daemon's webhook route and back. The
Twilio cases run the daemon in-process against ``FakeTwilio`` (its account endpoint is the
cheap authenticated read, its ``Date`` header the clock) and a fake OpenAI models endpoint;
the CLI runs as a subprocess (``trio.run_process``) so the daemon keeps serving meanwhile.
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from conftest import VOICECALL, MakeDaemon, clean_env

from voicecall_trio.testing import (
    FakeTelnyx,
    FakeTwilio,
    RunningDaemon,
    running_daemon,
    serve_asgi,
)

ACCOUNT = "AC" + "3" * 32
TOKEN = "doctor-test-twilio-auth-token-0"
OPENAI_KEY = "sk-doctor-test-key-0123456789"
FROM = "+15550001234"
WAIT_S = 30.0
NAMES = ["config", "daemon", "socket", "publicUrl", "reachability", "streamUpgrade",
         "credentials", "clock", "keys", "models"]
SECRET_VARS = ("OPENAI_API_KEY", "ELEVENLABS_API_KEY", "TWILIO_ACCOUNT_SID",
               "TWILIO_AUTH_TOKEN", "TELNYX_API_KEY", "TELNYX_CONNECTION_ID",
               "TELNYX_PUBLIC_KEY", "NGROK_AUTHTOKEN", "NGROK_DOMAIN")


def offline_env() -> dict[str, str]:
    env = clean_env()
    for name in SECRET_VARS:
        env.pop(name, None)  # no key from the host may send a request to a real service
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def closed_port() -> int:
    return free_port()  # nothing listens there once the probe socket is closed


def statuses(report: dict[str, Any]) -> dict[str, str]:
    assert [c["name"] for c in report["checks"]] == NAMES, report
    return {c["name"]: c["status"] for c in report["checks"]}


def detail(report: dict[str, Any], name: str) -> str:
    return next(c["detail"] for c in report["checks"] if c["name"] == name)


def test_doctor_passes_on_a_loopback_mock_setup(make_daemon: MakeDaemon) -> None:
    port = free_port()
    d = make_daemon(serve={"port": port}, publicUrl=f"http://127.0.0.1:{port}/voice/webhook")
    done = d.run("doctor", "--json")
    assert done.returncode == 0, (done.stdout, done.stderr)
    report = json.loads(done.stdout)
    assert report["ok"] is True
    got = statuses(report)
    assert all(status in ("ok", "skip") for status in got.values()), report
    assert got["reachability"] == "ok"
    assert f"http://127.0.0.1:{port}/voice/webhook" in detail(report, "reachability")
    assert "(from config)" in detail(report, "publicUrl")
    text = d.run("doctor")
    assert text.returncode == 0
    lines = text.stdout.splitlines()
    assert [line.split(":", 1)[0] for line in lines] == [
        f"[{'ok' if got[n] == 'ok' else '--'}] {n}" for n in NAMES]


def test_reachability_fails_naming_the_url_when_it_points_nowhere(
        make_daemon: MakeDaemon) -> None:
    nowhere = f"http://127.0.0.1:{closed_port()}/voice/webhook"
    d = make_daemon(publicUrl=nowhere)
    done = d.run("doctor", "--json")
    assert done.returncode == 1, (done.stdout, done.stderr)
    report = json.loads(done.stdout)
    assert report["ok"] is False
    assert statuses(report)["reachability"] == "fail"
    assert nowhere in detail(report, "reachability")
    assert statuses(report)["daemon"] == "ok"
    text = d.run("doctor")
    assert text.returncode == 1
    (line,) = [row for row in text.stdout.splitlines() if row.startswith("[!!] reachability:")]
    assert f"cannot reach {nowhere}" in line


def test_doctor_without_a_daemon(make_daemon: MakeDaemon) -> None:
    d = make_daemon(start=False, publicUrl="http://127.0.0.1:9/voice/webhook")
    done = d.run("doctor", "--json")
    assert done.returncode == 1
    report = json.loads(done.stdout)
    got = statuses(report)
    assert got["config"] == "ok" and got["daemon"] == "fail"
    assert got["reachability"] == "skip"


def test_a_bad_config_fails_and_skips_the_rest(tmp_path: Path) -> None:
    config = tmp_path / "bad.json"
    config.write_text(json.dumps({"provider": "twilio", "store": str(tmp_path / "s")}))
    done = trio.run(doctor_run, config, ())
    assert done.returncode == 1
    report = json.loads(done.stdout)
    got = statuses(report)
    assert got["config"] == "fail" and "twilio.accountSid" in detail(report, "config")
    assert {got[n] for n in NAMES[3:]} == {"skip"}


# -- Twilio, in-process daemon -----------------------------------------------------------


class FakeModels:
    """``GET /v1/models/{id}``: OpenAI's model object, with the shutdown dates given."""

    def __init__(self, shutdowns: dict[str, Any]) -> None:
        self.shutdowns = shutdowns
        self.requests: list[tuple[str, str]] = []
        self.url = ""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        self.requests.append((scope["path"], headers.get("authorization", "")))
        model = scope["path"].rsplit("/", 1)[-1]
        if not scope["path"].startswith("/v1/models/") or model not in self.shutdowns:
            status, body = 404, {"error": {"message": "The model does not exist"}}
        elif headers.get("authorization") != f"Bearer {OPENAI_KEY}":
            status, body = 401, {"error": {"message": "Incorrect API key"}}
        else:
            status, body = 200, {"id": model, "object": "model", "created": 1700000000,
                                 "owned_by": "system"}
            if self.shutdowns[model] is not None:
                body["shutdown_date"] = self.shutdowns[model]
        payload = json.dumps(body).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": payload})


@asynccontextmanager
async def fake_models(shutdowns: dict[str, Any]) -> AsyncIterator[FakeModels]:
    app = FakeModels(shutdowns)
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        base = await nursery.start(serve_asgi, app, stop)
        app.url = f"{base}/v1"
        try:
            yield app
        finally:
            stop.set()


def twilio_config(fake: FakeTwilio, models: FakeModels, port: int, **extra: Any
                  ) -> dict[str, Any]:
    return {"provider": "twilio", "fromNumber": FROM,
            "twilio": {"accountSid": ACCOUNT, "authToken": TOKEN, "apiBaseUrl": fake.url},
            "serve": {"port": port}, "publicUrl": f"http://127.0.0.1:{port}/voice/webhook",
            "responseBaseUrl": models.url, "streaming": {"openaiApiKey": OPENAI_KEY},
            **extra}


async def doctor_run(config: Path, extra: tuple[str, ...]) -> Any:
    return await trio.run_process(
        [VOICECALL, "doctor", "--json", "--config", str(config), *extra],
        capture_stdout=True, capture_stderr=True, check=False, env=offline_env())


async def doctor_json(d: RunningDaemon, config: Path) -> tuple[int, dict[str, Any]]:
    done = await doctor_run(config, ("--socket", str(d.handle.socket_path)))
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout)


@asynccontextmanager
async def twilio_daemon(tmp_path: Path, shutdowns: dict[str, Any], **extra: Any
                        ) -> AsyncIterator[tuple[RunningDaemon, FakeTwilio, FakeModels, Path]]:
    """A Twilio daemon on the fakes, and a config file with the same settings for doctor."""
    port = free_port()
    fake = FakeTwilio(account_sid=ACCOUNT, auth_token=TOKEN, phone_number=FROM)
    async with fake, fake_models(shutdowns) as models:
        doc = twilio_config(fake, models, port, **extra)
        config = tmp_path / "doctor.json"
        config.write_text(json.dumps({"store": str(tmp_path / "store"), **doc}))
        async with running_daemon(doc, store=tmp_path / "store") as d:
            yield d, fake, models, config


async def test_doctor_passes_end_to_end_on_twilio(tmp_path: Path) -> None:
    with trio.fail_after(WAIT_S):
        async with twilio_daemon(tmp_path, {"gpt-4o-mini": "2099-01-01"}) as (
                d, fake, models, config):
            code, report = await doctor_json(d, config)
            # the probe was a status callback for a call nobody has: no call was created
            assert await d.rpc("voicecall.status", {}) == {"calls": []}
    assert code == 0, report
    got = statuses(report)
    assert got == {"config": "ok", "daemon": "ok", "socket": "ok", "publicUrl": "ok",
                   "reachability": "ok", "streamUpgrade": "skip", "credentials": "ok",
                   "clock": "ok", "keys": "ok", "models": "ok"}, report
    assert "a signed test webhook" in detail(report, "reachability")
    assert "Twilio accepted" in detail(report, "credentials")
    assert "warning: carriers want https" in detail(report, "publicUrl")
    assert "2099-01-01" in detail(report, "models")
    # looked up by doctor (and by serve's own background check once it was ready)
    assert set(models.requests) == {("/v1/models/gpt-4o-mini", f"Bearer {OPENAI_KEY}")}
    assert [r.action for r in fake.api_requests] == ["account"]
    assert TOKEN not in json.dumps(report) and OPENAI_KEY not in json.dumps(report)


async def test_a_model_near_its_shutdown_and_a_refused_token(tmp_path: Path) -> None:
    with trio.fail_after(WAIT_S):
        async with twilio_daemon(tmp_path, {"old-model": 1_700_000_000},
                                 responseModel="openai/old-model") as (d, fake, _, config):
            fake.auth_token = "not-the-daemons-token"  # the account read is refused now
            code, report = await doctor_json(d, config)
    assert code == 1
    got = statuses(report)
    assert got["models"] == "fail"
    assert "old-model" in detail(report, "models") and "2023-11-14" in detail(report, "models")
    assert got["credentials"] == "fail" and "HTTP 401" in detail(report, "credentials")


async def test_a_public_url_that_leads_elsewhere_is_not_this_daemon(tmp_path: Path) -> None:
    with trio.fail_after(WAIT_S):
        async with twilio_daemon(tmp_path, {"gpt-4o-mini": None}) as (d, fake, _, config):
            # the fake's own server answers the probe: a URL that reaches something else
            d.handle.provider.set_public_url(f"{fake.url}/voice/webhook")
            code, report = await doctor_json(d, config)
    assert code == 1
    assert statuses(report)["reachability"] == "fail"
    assert "not from this daemon" in detail(report, "reachability")
    assert f"{fake.url}/voice/webhook" in detail(report, "reachability")
    # the config file still says the loopback URL: doctor says so
    assert "restart the daemon" in detail(report, "publicUrl")


async def test_doctor_passes_end_to_end_on_telnyx(tmp_path: Path) -> None:
    port = free_port()
    with trio.fail_after(WAIT_S):
        async with FakeTelnyx(api_key="KEY-doctor-0123456789") as fake:
            doc = {"provider": "telnyx", "fromNumber": FROM,
                   "telnyx": {"apiKey": "KEY-doctor-0123456789", "connectionId": "conn-1",
                              "publicKey": fake.public_key, "apiBaseUrl": fake.url},
                   "serve": {"port": port},
                   "publicUrl": f"http://127.0.0.1:{port}/voice/webhook",
                   "responseBaseUrl": "http://127.0.0.1:9/v1"}
            config = tmp_path / "doctor.json"
            config.write_text(json.dumps({"store": str(tmp_path / "store"), **doc}))
            async with running_daemon(doc, store=tmp_path / "store") as d:
                code, report = await doctor_json(d, config)
    assert code == 0, report
    got = statuses(report)
    assert got["reachability"] == "ok" and "HTTP 401" in detail(report, "reachability")
    assert got["credentials"] == "ok" and "Telnyx accepted telnyx.apiKey" in \
        detail(report, "credentials")
    assert got["clock"] == "ok"
    assert "KEY-doctor" not in json.dumps(report)


@pytest.mark.parametrize("content", [b'{"provider": "twilio",', b'{"note": "\xff"}', None])
def test_a_file_that_cannot_be_read_is_a_failed_config_check_not_an_error(
        tmp_path: Path, content: bytes | None) -> None:
    """Unparseable, not UTF-8, or missing: ``--json`` still prints the report (config
    ``fail`` with the cause, the rest skipped), it does not stop at an ``error:`` line."""
    config = tmp_path / "broken.json"
    if content is not None:
        config.write_bytes(content)
    done = trio.run(doctor_run, config, ())
    assert done.returncode == 1
    report = json.loads(done.stdout)
    got = statuses(report)
    assert list(got) == list(NAMES)
    assert got["config"] == "fail" and detail(report, "config")  # the cause
    assert {got[n] for n in NAMES[1:]} == {"skip"}
