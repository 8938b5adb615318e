"""Tailscale Funnel/Serve end to end: a real daemon (and ``voicecall expose``) with a fake
``tailscale`` on ``PATH`` that records every command line (``fake_tunnels.py``)."""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import trio
from conftest import VOICECALL, clean_env
from fake_tunnels import FakeTunnels

from voicecall_trio.config import build_config
from voicecall_trio.daemon import run_daemon
from voicecall_trio.errors import TunnelError
from voicecall_trio.testing import running_daemon

WAIT_S = 15.0
DNS = "box.tail1234.ts.net"


async def test_funnel_runs_the_commands_reports_the_url_and_turns_off(tmp_path: Path) -> None:
    fakes = FakeTunnels(tmp_path)
    with trio.fail_after(WAIT_S):
        async with running_daemon({"tunnel": {"provider": "tailscale-funnel"}},
                                  environ=fakes.env()) as d:
            health = await d.rpc("daemon.health")
            assert health["publicUrl"] == f"https://{DNS}/voice/webhook"
            port = urlsplit(d.base_url).port
            assert fakes.tailscale_calls() == [
                ["status", "--json"],
                ["funnel", "--bg", "--yes", "--set-path", "/voice/webhook",
                 f"http://127.0.0.1:{port}/voice/webhook"]]
    assert fakes.tailscale_calls()[-1] == ["funnel", "--set-path", "/voice/webhook", "off"]


async def test_serve_warns_and_streaming_exposes_the_stream_path(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    fakes = FakeTunnels(tmp_path)
    config = {"tunnel": {"provider": "tailscale-serve"}, "streaming": {"enabled": True}}
    with trio.fail_after(WAIT_S):
        async with running_daemon(config, environ=fakes.env()) as d:
            assert (await d.rpc("daemon.health"))["publicUrl"] == \
                f"https://{DNS}/voice/webhook"
            port = urlsplit(d.base_url).port
    calls = fakes.tailscale_calls()
    assert ["serve", "--bg", "--yes", "--set-path", "/voice/stream",
            f"http://127.0.0.1:{port}/voice/stream"] in calls
    assert calls[-2:] == [["serve", "--set-path", "/voice/webhook", "off"],
                          ["serve", "--set-path", "/voice/stream", "off"]]
    assert "Tailscale Serve is private to your tailnet" in caplog.text


async def test_the_legacy_tailscale_keys_still_work(tmp_path: Path) -> None:
    fakes = FakeTunnels(tmp_path)
    config = {"tailscale": {"mode": "funnel", "path": "/voice/webhook"}}
    with trio.fail_after(WAIT_S):
        async with running_daemon(config, environ=fakes.env()) as d:
            assert (await d.rpc("daemon.health"))["publicUrl"] == \
                f"https://{DNS}/voice/webhook"
    assert fakes.tailscale_calls()[1][0] == "funnel"


async def failure(tmp_path: Path, fakes: FakeTunnels, doc: dict[str, Any],
                  env: dict[str, str]) -> str:
    config = build_config({"store": str(tmp_path / "store"), "serve": {"port": 0}, **doc}, {})
    with trio.fail_after(WAIT_S), pytest.raises(BaseException) as caught:
        async with trio.open_nursery() as nursery:
            await nursery.start(lambda task_status: run_daemon(
                config, environ=env, handle_signals=False, task_status=task_status))
    leaf: BaseException = caught.value
    while isinstance(leaf, BaseExceptionGroup):
        leaf = leaf.exceptions[0]
    assert isinstance(leaf, TunnelError), leaf
    return leaf.message


async def test_a_failing_funnel_stops_start_up_with_tailscales_words(tmp_path: Path) -> None:
    fakes = FakeTunnels(tmp_path)
    fakes.script_tailscale(dns=DNS, fail={"funnel": "Funnel not available; \"funnel\" node "
                                                    "attribute not set."})
    message = await failure(tmp_path, fakes, {"tunnel": {"provider": "tailscale-funnel"}},
                            fakes.env())
    assert message.startswith('tunnel.provider "tailscale-funnel": `tailscale funnel --bg')
    assert "failed (exit 1): Funnel not available" in message


async def test_no_dns_name_or_no_binary(tmp_path: Path) -> None:
    fakes = FakeTunnels(tmp_path)
    fakes.script_tailscale(dns="")
    message = await failure(tmp_path, fakes, {"tunnel": {"provider": "tailscale-funnel"}},
                            fakes.env())
    assert "names no DNS name" in message
    none = FakeTunnels(tmp_path / "none", tailscale=False)
    message = await failure(tmp_path / "none", none, {"tailscale": {"mode": "serve"}},
                            none.env(path="/nonexistent"))
    assert message.startswith('tailscale.mode "serve": the tailscale binary was not found')


def expose(fakes: FakeTunnels, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([VOICECALL, "expose", *args, "--config", str(config)],
                          capture_output=True, text=True, timeout=30,
                          env=fakes.env(clean_env()), stdin=subprocess.DEVNULL)


def test_expose_prints_the_url_and_takes_it_off(tmp_path: Path) -> None:
    fakes = FakeTunnels(tmp_path)
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"serve": {"port": 4444}}))
    done = expose(fakes, config, "--mode", "funnel")
    assert (done.returncode, done.stdout) == (0, f"https://{DNS}/voice/webhook\n"), done.stderr
    assert fakes.tailscale_calls()[-1] == ["funnel", "--bg", "--yes", "--set-path",
                                           "/voice/webhook", "http://127.0.0.1:4444/voice/webhook"]
    done = expose(fakes, config, "--mode", "off")
    assert (done.returncode, done.stdout) == (0, "off: /voice/webhook no longer exposed\n")
    assert fakes.tailscale_calls()[-2:] == [["funnel", "--set-path", "/voice/webhook", "off"],
                                            ["serve", "--set-path", "/voice/webhook", "off"]]


def test_expose_fails_with_the_cause(tmp_path: Path) -> None:
    fakes = FakeTunnels(tmp_path)
    fakes.script_tailscale(dns=DNS, fail={"serve": "serve config denied"})
    config = tmp_path / "c.json"
    config.write_text("{}")
    done = expose(fakes, config, "--mode", "serve")
    assert done.returncode == 1 and done.stdout == ""
    assert "error: expose --mode serve: `tailscale serve --bg" in done.stderr
    assert "serve config denied" in done.stderr


async def test_a_failed_start_takes_off_what_it_exposed(tmp_path: Path) -> None:
    fakes = FakeTunnels(tmp_path)
    fakes.script_tailscale(dns=DNS, fail={"funnel": "no"})
    await failure(tmp_path, fakes, {"tunnel": {"provider": "tailscale-funnel"}}, fakes.env())
    assert fakes.tailscale_calls()[-1] == ["funnel", "--set-path", "/voice/webhook", "off"]


async def test_a_legacy_path_that_misses_the_webhook_is_warned_about(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="voicecall.tunnel")
    fakes = FakeTunnels(tmp_path)
    with trio.fail_after(WAIT_S):
        async with running_daemon({"tailscale": {"mode": "funnel", "path": "/old"}},
                                  environ=fakes.env()) as d:
            assert (await d.rpc("daemon.health"))["publicUrl"] == f"https://{DNS}/old"
    assert "tailscale.path /old is not serve.path /voice/webhook" in caplog.text
