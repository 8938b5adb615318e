"""Tunnel agents behaving badly: endless lines, floods of errors, a ``tailscale`` that hangs.

Real child processes (the fakes of ``fake_tunnels.py``, or ``sleep``) run by the tunnel
shells directly; timeouts are proven on the autojump clock.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import pytest
import trio
from fake_tunnels import FakeTunnels, ngrok_line, ngrok_started

from voicecall_trio.errors import TunnelError
from voicecall_trio.tunnel.ngrok_run import NgrokTunnel
from voicecall_trio.tunnel.tailscale_run import runner

WAIT_S = 15.0


def tunnel(fakes: FakeTunnels, **kwargs: Any) -> NgrokTunnel:
    return NgrokTunnel(bind="127.0.0.1", port=9, serve_path="/voice/webhook", token=None,
                       domain=None, environ=fakes.env(), **kwargs)


async def test_an_endless_line_is_cut_and_the_url_still_found(tmp_path: Path) -> None:
    fakes = FakeTunnels(tmp_path)
    fakes.script_ngrok([{"lines": ["x" * 300_000, "{" * 70_000,
                                   ngrok_started("https://late.ngrok.app")]}])
    agent = tunnel(fakes)
    reported: list[str] = []
    up = trio.Event()

    def report(url: str) -> None:
        reported.append(url)
        up.set()

    with trio.fail_after(WAIT_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(agent.open, report)
            await up.wait()
            nursery.cancel_scope.cancel()
    assert reported == ["https://late.ngrok.app/voice/webhook"]
    assert fakes.ngrok_stopped()  # cancelled: the agent was terminated


async def test_a_flood_of_error_lines_after_the_url_logs_once_and_the_exit_names_the_last(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="voicecall.tunnel")
    fakes = FakeTunnels(tmp_path)
    errors = [ngrok_line(lvl="eror", msg="heartbeat timeout", err=f"lost {n} ERR_NGROK_3004")
              for n in range(500)]
    fakes.script_ngrok([{"lines": [ngrok_started("https://a.ngrok.app"), *errors],
                         "exit": 3}])
    reported: list[str] = []
    with trio.fail_after(WAIT_S), pytest.raises(TunnelError) as caught:
        await tunnel(fakes).open(reported.append)
    assert reported == ["https://a.ngrok.app/voice/webhook"]
    assert caught.value.message == ("ngrok exited (status 3): heartbeat timeout lost 499 "
                                    "ERR_NGROK_3004")
    assert len([r for r in caplog.records if r.name == "voicecall.tunnel"]) == 1


async def test_a_hanging_tailscale_times_out(autojump_clock: Any) -> None:
    sleep = shutil.which("sleep")
    assert sleep is not None
    with pytest.raises(TunnelError, match=r"did not finish within 15 s"):
        await runner({"PATH": "/usr/bin:/bin"})([sleep, "1000"])


async def test_a_tailscale_that_cannot_run(tmp_path: Path) -> None:
    broken = tmp_path / "tailscale"
    broken.write_text("not a program")
    broken.chmod(0o644)
    with pytest.raises(TunnelError, match=r"cannot run .*tailscale"):
        await runner({})([str(broken), "status", "--json"])


async def test_a_last_line_without_newline_still_counts(tmp_path: Path) -> None:
    fakes = FakeTunnels(tmp_path)
    fakes.script_ngrok([{"raw": ngrok_line(lvl="crit", msg="command failed",
                                           err="ERR_NGROK_108 session limit"), "exit": 1}])
    with trio.fail_after(WAIT_S), pytest.raises(TunnelError) as caught:
        await tunnel(fakes).open(lambda url: None)
    assert caught.value.message.startswith("ngrok reported: command failed ERR_NGROK_108")


async def test_an_agent_that_closes_its_log_but_lives_on_is_stopped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # real time (the autojump clock could pass the 30 s URL deadline before the child
    # printed), with a short grace instead of the 5 s one
    from voicecall_trio.tunnel import ngrok_run

    monkeypatch.setattr(ngrok_run, "STOP_GRACE_S", 0.2)
    script = tmp_path / "bin" / "ngrok"
    script.parent.mkdir(parents=True)
    # prints the URL, closes stdout, then lingers (exec keeps the pid: the fake is sleep)
    script.write_text("#!/bin/sh\n"
                      "echo '{\"lvl\":\"info\",\"msg\":\"started tunnel\","
                      "\"url\":\"https://x.ngrok.app\"}'\n"
                      "exec 1>&-\nexec sleep 1000\n")
    script.chmod(0o755)
    agent = NgrokTunnel(bind="127.0.0.1", port=9, serve_path="/h", token=None, domain=None,
                        environ={"PATH": f"{script.parent}:/usr/bin:/bin"})
    reported: list[str] = []
    with trio.fail_after(WAIT_S), pytest.raises(TunnelError, match="closed its log but did "
                                                                   "not exit"):
        await agent.open(reported.append)
    assert reported == ["https://x.ngrok.app/h"]


async def test_a_warning_with_an_err_before_the_url_is_not_fatal(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Real agents on a firewalled host log ``lvl=warn msg="failed to check for update"
    obj=updater err=...`` at start: the tunnel still comes up, so start-up must go on."""
    caplog.set_level(logging.WARNING, logger="voicecall.tunnel")
    fakes = FakeTunnels(tmp_path)
    update = ngrok_line(lvl="warn", msg="failed to check for update", obj="updater",
                        err='Post "https://update.equinox.io/check": context deadline exceeded')
    fakes.script_ngrok([{"lines": [update, update, ngrok_started("https://ok.ngrok.app")]}])
    reported: list[str] = []
    up = trio.Event()

    def report(url: str) -> None:
        reported.append(url)
        up.set()

    with trio.fail_after(WAIT_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(tunnel(fakes).open, report)
            await up.wait()
            nursery.cancel_scope.cancel()
    assert reported == ["https://ok.ngrok.app/voice/webhook"]
    warned = [r.getMessage() for r in caplog.records if r.name == "voicecall.tunnel"]
    assert len(warned) == 1 and "failed to check for update" in warned[0]
