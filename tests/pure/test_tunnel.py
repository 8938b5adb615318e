"""tunnel.py: the Tailscale command lines and how their outcomes read (pure, no tailscale)."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from voicecall_trio import tunnel

TS = "/usr/bin/tailscale"


class FakeRun:
    """``subprocess.run`` with scripted outcomes: records each command line it is given."""

    def __init__(self, *outcomes: tuple[int, str, str]) -> None:
        self.outcomes = list(outcomes)
        self.commands: list[list[str]] = []

    def __call__(self, command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        assert kwargs == {"capture_output": True, "text": True}
        self.commands.append(command)
        code, out, err = self.outcomes.pop(0) if self.outcomes else (0, "", "")
        return subprocess.CompletedProcess(command, code, out, err)


@pytest.mark.parametrize(("mode", "expected"), [
    ("funnel", [[TS, "funnel", "--bg", "--yes", "--set-path", "/voice/webhook",
                 "http://127.0.0.1:3334/voice/webhook"]]),
    ("serve", [[TS, "serve", "--bg", "--yes", "--set-path", "/voice/webhook",
                "http://127.0.0.1:3334/voice/webhook"]]),
    ("off", [[TS, "funnel", "--set-path", "/voice/webhook", "off"],
             [TS, "serve", "--set-path", "/voice/webhook", "off"]]),
])
def test_expose_commands(mode: tunnel.TailscaleMode, expected: list[list[str]]) -> None:
    assert tunnel.expose_commands(TS, mode, port=3334, path="/voice/webhook") == expected


@pytest.mark.parametrize(("mode", "expected"), [
    ("funnel", [TS, "funnel", "status"]), ("off", [TS, "funnel", "status"]),
    ("serve", [TS, "serve", "status"]),
])
def test_status_command_shows_funnel_unless_serve(mode: tunnel.TailscaleMode,
                                                  expected: list[str]) -> None:
    assert tunnel.status_command(TS, mode) == expected


def test_a_failed_step_names_the_command_and_tailscales_words() -> None:
    run = FakeRun((1, "", "  funnel not enabled for this tailnet\n"))
    failure = tunnel.apply_tailscale(TS, "funnel", port=8080, path="/hook", run=run)
    assert failure == ("funnel --bg --yes --set-path /hook http://127.0.0.1:8080/hook failed: "
                       "funnel not enabled for this tailnet")


def test_off_runs_both_steps_and_ignores_their_failures() -> None:
    run = FakeRun((1, "", "not serving"), (1, "", "not serving"))
    assert tunnel.apply_tailscale(TS, "off", port=8080, path="/hook", run=run) is None
    assert [command[1] for command in run.commands] == ["funnel", "serve"]


def test_status_text_or_done() -> None:
    assert tunnel.tailscale_status(TS, "funnel", run=FakeRun((0, " https://x.ts.net\n", ""))) \
        == "https://x.ts.net"
    assert tunnel.tailscale_status(TS, "off", run=FakeRun((0, "", ""))) == "off: done"


def test_find_tailscale_asks_for_the_binary_by_name() -> None:
    asked: list[str] = []

    def which(name: str) -> str | None:
        asked.append(name)
        return None

    assert tunnel.find_tailscale(which) is None
    assert asked == ["tailscale"]


def test_tunnel_imports_no_trio() -> None:
    done = subprocess.run(
        [sys.executable, "-c",
         "import sys, voicecall_trio.tunnel; print('trio' in sys.modules)"],
        capture_output=True, text=True, timeout=30, check=True)
    assert done.stdout.strip() == "False"
