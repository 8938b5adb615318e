"""The supervised ngrok tunnel end to end: a real daemon, a fake ``ngrok`` on ``PATH``.

The daemon runs in-process (``running_daemon``) with an environment whose ``PATH`` starts
with the fake (``fake_tunnels.py``). Webhooks are sent to the daemon's port as the ngrok
agent relays them: from loopback, with the tunnel's ``Host`` and ``X-Forwarded-Proto``.
Waits are on conditions (the supervisor's URL change, the daemon stopping) under
``fail_after``; the one real delay is the supervisor's first restart backoff (1 s).
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
import pytest
import trio
from conftest import VOICECALL, clean_env
from fake_tunnels import FakeTunnels, ngrok_line, ngrok_started

from voicecall_trio.config import build_config
from voicecall_trio.daemon import run_daemon
from voicecall_trio.errors import DaemonStartError, TunnelError
from voicecall_trio.providers.twilio.signature import compute_signature
from voicecall_trio.testing import RunningDaemon, running_daemon
from voicecall_trio.tunnel.ngrok_run import NgrokTunnel
from voicecall_trio.tunnel.task import start_tunnel

ACCOUNT = "AC" + "7" * 32
TOKEN = "tunnel-test-twilio-auth-token-01"
NGROK_TOKEN = "2ngrokTestToken_abcdefghijklmnopqrstuvwxyz"
FIRST = "https://first.ngrok-free.app"
SECOND = "https://second.ngrok-free.app"
WAIT_S = 15.0


def twilio(**extra: Any) -> dict[str, Any]:
    return {"provider": "twilio", "fromNumber": "+15550001234",
            "twilio": {"accountSid": ACCOUNT, "authToken": TOKEN},
            "tunnel": {"provider": "ngrok", "ngrokAuthToken": NGROK_TOKEN}, **extra}


async def relayed_status_callback(d: RunningDaemon, signed_for: str) -> int:
    """A status callback for an unknown call, signed for ``signed_for``, relayed to the
    daemon as the ngrok agent would (Host of the tunnel, from loopback)."""
    params = [("AccountSid", ACCOUNT), ("ApiVersion", "2010-04-01"),
              ("CallSid", "CA" + uuid.uuid4().hex), ("CallStatus", "completed"),
              ("Direction", "outbound-api"), ("From", "+15550001234"), ("To", "+15555550123")]
    host = urlsplit(signed_for).netloc
    async with httpx.AsyncClient() as client:
        reply = await client.post(d.webhook_url, content=urlencode(params), headers={
            "Host": host, "X-Forwarded-Proto": "https", "X-Forwarded-For": "54.172.60.1",
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": compute_signature(TOKEN, signed_for, params)})
    return reply.status_code


async def test_ngrok_url_is_in_force_and_follows_a_restart(tmp_path: Path) -> None:
    fakes = FakeTunnels(tmp_path)
    fakes.script_ngrok([
        {"lines": ["not json: ngrok banner", ngrok_line(lvl="info", msg="client session "
                                                                         "established"),
                   ngrok_started(FIRST)]},
        {"lines": [ngrok_started(SECOND)]},
    ])
    with trio.fail_after(WAIT_S):
        async with running_daemon(twilio(), environ=fakes.env()) as d:
            health = await d.rpc("daemon.health")
            assert health["publicUrl"] == f"{FIRST}/voice/webhook"
            assert await relayed_status_callback(d, f"{FIRST}/voice/webhook") == 200
            assert await relayed_status_callback(d, f"{SECOND}/voice/webhook") in (401, 403)

            tunnel = d.handle.tunnel
            assert tunnel is not None
            fakes.kill(0)  # the agent crashes; the supervisor starts it again
            assert await tunnel.wait_url_change(f"{FIRST}/voice/webhook") == \
                f"{SECOND}/voice/webhook"
            assert tunnel.restarts == 1
            health = await d.rpc("daemon.health")
            assert health["publicUrl"] == f"{SECOND}/voice/webhook"
            assert await relayed_status_callback(d, f"{SECOND}/voice/webhook") == 200
            assert await relayed_status_callback(d, f"{FIRST}/voice/webhook") in (401, 403)
    runs = fakes.ngrok_runs()
    assert len(runs) == 2
    port = urlsplit(d.base_url).port
    assert runs[0]["argv"] == ["http", f"127.0.0.1:{port}", "--log", "stdout",
                               "--log-format", "json"]
    assert fakes.ngrok_stopped() == [runs[1]["pid"]]  # shutdown stopped the live agent


async def test_the_token_goes_through_the_environment_and_the_domain_on_the_line(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    fakes = FakeTunnels(tmp_path)
    fakes.script_ngrok([{"lines": [ngrok_started("https://me.ngrok.app")]}])
    config = twilio(tunnel={"provider": "ngrok", "ngrokAuthToken": NGROK_TOKEN,
                            "ngrokDomain": "me.ngrok.app"})
    with trio.fail_after(WAIT_S):
        async with running_daemon(config, environ=fakes.env()) as d:
            assert (await d.rpc("daemon.health"))["publicUrl"] == \
                "https://me.ngrok.app/voice/webhook"
            status = await trio.run_process(
                [VOICECALL, "status", "--socket", str(d.handle.socket_path)],
                capture_stdout=True, capture_stderr=True, env=clean_env())
            assert status.stdout.decode().splitlines() == [
                "public URL: https://me.ngrok.app/voice/webhook", "no calls"]
    (run,) = fakes.ngrok_runs()
    assert run["token"] == NGROK_TOKEN
    assert run["argv"][-2:] == ["--url", "me.ngrok.app"]
    assert NGROK_TOKEN not in " ".join(run["argv"])
    assert not (tmp_path / "home").exists()  # no ngrok config file was written anywhere
    assert NGROK_TOKEN not in caplog.text and TOKEN not in caplog.text
    assert "public URL https://me.ngrok.app/voice/webhook" in caplog.text


async def test_public_url_wins_over_the_tunnel(tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    fakes = FakeTunnels(tmp_path)
    config = twilio(publicUrl="https://fixed.example/voice/webhook")
    with trio.fail_after(WAIT_S):
        async with running_daemon(config, environ=fakes.env()) as d:
            assert (await d.rpc("daemon.health"))["publicUrl"] == \
                "https://fixed.example/voice/webhook"
            assert d.handle.tunnel is None
    assert fakes.ngrok_runs() == []
    assert 'publicUrl is set: it wins over tunnel.provider "ngrok"' in caplog.text


async def start_fails(tmp_path: Path, config: dict[str, Any], env: dict[str, str]) -> str:
    doc = {"store": str(tmp_path / "store"), "serve": {"port": 0}, **config}
    with trio.fail_after(WAIT_S), pytest.raises(BaseException) as caught:
        async with trio.open_nursery() as nursery:
            await nursery.start(lambda task_status: run_daemon(
                build_config(doc, {}), environ=env, handle_signals=False,
                task_status=task_status))
            nursery.cancel_scope.cancel()
    leaf: BaseException = caught.value
    while isinstance(leaf, BaseExceptionGroup):
        leaf = leaf.exceptions[0]
    assert isinstance(leaf, TunnelError) and isinstance(leaf, DaemonStartError), leaf
    return leaf.message


async def test_an_error_line_stops_start_up_with_ngroks_code(tmp_path: Path) -> None:
    fakes = FakeTunnels(tmp_path)
    fakes.script_ngrok([{"lines": [ngrok_line(
        lvl="eror", msg="session closing", obj="tunnels.session",
        err=f"authentication failed: Your authtoken: {NGROK_TOKEN}\r\n\r\nERR_NGROK_105\r\n")]}])
    message = await start_fails(tmp_path, twilio(), fakes.env())
    assert message.startswith('tunnel.provider "ngrok": ngrok reported: ')
    assert "ERR_NGROK_105" in message and "authentication failed" in message
    assert NGROK_TOKEN not in message
    assert fakes.ngrok_stopped()  # the agent was stopped, not left behind


async def test_an_exit_before_the_url_names_the_status_and_stderr(tmp_path: Path) -> None:
    fakes = FakeTunnels(tmp_path)
    fakes.script_ngrok([{"lines": [], "stderr": "ERROR:  failed to start tunnel: The "
                         "endpoint 'https://x.ngrok.app' is not on your account.\n"
                         "ERROR:  ERR_NGROK_320\n", "exit": 1}])
    message = await start_fails(tmp_path, twilio(), fakes.env())
    assert message.startswith('tunnel.provider "ngrok": ngrok exited (status 1): ')
    assert "not on your account" in message and "ERR_NGROK_320" in message


async def test_a_missing_binary_is_named(tmp_path: Path) -> None:
    fakes = FakeTunnels(tmp_path, ngrok=False)
    message = await start_fails(tmp_path, twilio(), fakes.env(path="/nonexistent"))
    assert message.startswith('tunnel.provider "ngrok": the ngrok binary was not found on PATH')


async def test_no_url_in_time_is_a_failure(tmp_path: Path, autojump_clock: Any) -> None:
    fakes = FakeTunnels(tmp_path)
    fakes.script_ngrok([{"lines": [ngrok_line(lvl="info", msg="waiting")]}])
    tunnel = NgrokTunnel(bind="127.0.0.1", port=9, serve_path="/voice/webhook", token=None,
                         domain=None, environ=fakes.env())
    reported: list[str] = []
    with pytest.raises(TunnelError, match=r"no public URL within 30 s"):
        await tunnel.open(reported.append)
    assert reported == []


def test_serve_exits_1_naming_tunnel_provider_and_the_binary(tmp_path: Path) -> None:
    config = tmp_path / "c.json"
    store = Path("/tmp") / f"vc{uuid.uuid4().hex[:8]}"
    config.write_text(json.dumps({"store": str(store), "serve": {"port": 0},
                                  "tunnel": {"provider": "ngrok"}}))
    env = clean_env()
    env["PATH"] = "/nonexistent"
    done = subprocess.run([VOICECALL, "serve", "--config", str(config)], capture_output=True,
                          text=True, timeout=30, env=env, stdin=subprocess.DEVNULL)
    assert done.returncode == 1, (done.stdout, done.stderr)
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith('error: tunnel.provider "ngrok": the ngrok binary was not found'), \
        done.stderr
    assert not (store / "voicecall.sock").exists()


async def test_a_stop_while_the_tunnel_starts_returns_at_once(tmp_path: Path) -> None:
    fakes = FakeTunnels(tmp_path)
    fakes.script_ngrok([{"lines": []}])  # never up
    config = build_config({"tunnel": {"provider": "ngrok"}}, {})
    stop = trio.Event()
    stop.set()
    seen: list[str] = []
    with trio.fail_after(WAIT_S):
        async with trio.open_nursery() as nursery:
            assert await start_tunnel(nursery, config, seen.append, ["http://127.0.0.1:9"],
                                      fakes.env(), stop=stop) is None
    assert seen == []
    assert len(fakes.ngrok_runs()) == len(fakes.ngrok_stopped())  # nothing left running


def test_sigterm_while_ngrok_starts_is_a_graceful_stop(tmp_path: Path) -> None:
    fakes = FakeTunnels(tmp_path)
    fakes.script_ngrok([{"lines": [ngrok_line(lvl="info", msg="connecting")]}])
    store = Path("/tmp") / f"vc{uuid.uuid4().hex[:8]}"
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"store": str(store), "serve": {"port": 0},
                                  "tunnel": {"provider": "ngrok"}}))
    proc = subprocess.Popen([VOICECALL, "serve", "--config", str(config)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=fakes.env(clean_env()),
                            start_new_session=True)
    try:
        deadline = time.monotonic() + WAIT_S
        while not fakes.ngrok_runs():  # bounded poll: the daemon is another process
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=WAIT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, err
    assert fakes.ngrok_stopped() == [fakes.ngrok_runs()[0]["pid"]]
    assert not (store / "voicecall.sock").exists()


def test_serve_names_ngroks_code_and_never_prints_the_token(tmp_path: Path) -> None:
    fakes = FakeTunnels(tmp_path)
    fakes.script_ngrok([{"lines": [ngrok_line(
        lvl="eror", msg="session closing",
        err=f"authentication failed: Your authtoken: {NGROK_TOKEN}\r\n\r\nERR_NGROK_105\r\n")],
        "stderr": f"ERROR: token {NGROK_TOKEN} refused\n"}])
    config = tmp_path / "c.json"
    config.write_text(json.dumps({
        "store": str(Path("/tmp") / f"vc{uuid.uuid4().hex[:8]}"), "serve": {"port": 0},
        "tunnel": {"provider": "ngrok", "ngrokAuthToken": NGROK_TOKEN}}))
    done = subprocess.run([VOICECALL, "serve", "--config", str(config)], capture_output=True,
                          text=True, timeout=30, env=fakes.env(clean_env()),
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 1, done.stderr
    assert "ERR_NGROK_105" in done.stderr and 'tunnel.provider "ngrok"' in done.stderr
    assert NGROK_TOKEN not in done.stderr + done.stdout
    assert fakes.ngrok_runs()[0]["token"] == NGROK_TOKEN


async def test_a_reconnect_on_another_url_in_the_same_run_is_followed(tmp_path: Path) -> None:
    fakes = FakeTunnels(tmp_path)
    fakes.script_ngrok([{"lines": [ngrok_started(FIRST),
                                   ngrok_line(lvl="warn", msg="session reconnecting"),
                                   ngrok_started(SECOND)]}])
    with trio.fail_after(WAIT_S):
        async with running_daemon(twilio(), environ=fakes.env()) as d:
            tunnel = d.handle.tunnel
            assert tunnel is not None
            assert await tunnel.wait_url_change(f"{FIRST}/voice/webhook") == \
                f"{SECOND}/voice/webhook"
            assert (await d.rpc("daemon.health"))["publicUrl"] == f"{SECOND}/voice/webhook"
            assert await relayed_status_callback(d, f"{SECOND}/voice/webhook") == 200
            assert tunnel.restarts == 0
    assert len(fakes.ngrok_runs()) == 1
