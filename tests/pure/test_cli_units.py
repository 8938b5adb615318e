"""CLI behaviour that needs no daemon: argument binding, the tool's JSON contract."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from voicecall_trio import cli
from voicecall_trio.cli import app, calls


def test_fast_binding_matches_the_command_signatures() -> None:
    bound = app.bind(["continue", "--call-id", "abc", "--message", "hi", "--json"])
    assert bound == (calls.continue_, {"call_id": "abc", "message": "hi", "json": True})
    assert app.bind(["status", "--call-id=x"]) == (calls.status, {"call_id": "x"})
    # anything unusual goes to cyclopts, which explains it
    for argv in (["call", "--message"], ["status", "--bogus"], ["--help"], ["call", "--to", "+1"],
                 ["tool", "{}"], ["call", "--message", "x", "--mode", "notify"]):
        assert app.bind(argv) is None, argv


def test_tool_errors_are_json_on_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["tool", "not json", "--socket", "/nonexistent.sock"]) == cli.EXIT_USAGE
    assert "error" in json.loads(capsys.readouterr().out)
    action = '{"action": "initiate_call", "message": "hi", "to": "12345"}'
    assert cli.main(["tool", action, "--socket", "/nonexistent.sock"]) == cli.EXIT_FAILED
    assert "E.164" in json.loads(capsys.readouterr().out)["error"]
    assert cli.main(["tool", '{"action": "fly"}', "--socket", "/x.sock"]) == cli.EXIT_FAILED
    assert "unknown action" in json.loads(capsys.readouterr().out)["error"]


def test_tool_schema_lists_every_action(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["tool", "--schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["name"] == "voice_call"
    assert set(schema["parameters"]["properties"]["action"]["enum"]) == {
        "initiate_call", "continue_call", "speak_to_user", "end_call", "get_status"}


def test_unreachable_daemon_is_exit_3_naming_the_socket(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["status", "--socket", "/tmp/definitely-not-here.sock"]) == 3
    assert "/tmp/definitely-not-here.sock" in capsys.readouterr().err


def test_tool_with_no_daemon_is_exit_3_and_still_json(
    capsys: pytest.CaptureFixture[str],
) -> None:
    action = '{"action": "get_status", "callId": "x"}'
    assert cli.main(["tool", action, "--socket", "/tmp/no-daemon-here.sock"]) == 3
    captured = capsys.readouterr()
    assert "/tmp/no-daemon-here.sock" in json.loads(captured.out)["error"]


def test_help_shows_placeholders_verbatim(capsys: pytest.CaptureFixture[str]) -> None:
    """Help text is plain text: ``<store>`` must not vanish as if it were a markup tag."""
    assert cli.main(["serve", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "<store>/voicecall.sock" in out
    assert "config.{toml,json,json5}" in out


def test_serve_hands_its_socket_to_the_daemon_not_to_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    from voicecall_trio import daemon, logs

    seen: list[Any] = []
    monkeypatch.setattr(logs, "configure_logging", lambda *args, **kwargs: None)
    monkeypatch.setattr(daemon, "serve_forever",
                        lambda cfg, on_ready=None, **kwargs: seen.append(kwargs))
    monkeypatch.delenv("VOICECALL_SOCKET", raising=False)
    config = tmp_path / "config.json"
    config.write_text("{}")
    assert cli.main(["serve", "--config", str(config), "--socket", "~/vc.sock"]) == 0
    assert seen == [{"socket_path": Path(os.path.expanduser("~/vc.sock")),
                     "config_path": config.absolute()}]
    assert "VOICECALL_SOCKET" not in os.environ
    assert cli.main(["serve", "--config", str(config)]) == 0
    # the config's (or VOICECALL_SOCKET's) socket
    assert seen[-1] == {"socket_path": None, "config_path": config.absolute()}


def test_python_dash_m_runs_the_same_cli() -> None:
    """scripts/bench.py, demo.py and soak.py start the CLI as ``python -m voicecall_trio.cli``."""
    done = subprocess.run([sys.executable, "-m", "voicecall_trio.cli", "status", "--socket",
                           "/tmp/definitely-not-here.sock"], capture_output=True, text=True,
                          timeout=30, stdin=subprocess.DEVNULL)
    assert done.returncode == cli.EXIT_UNREACHABLE
    assert "/tmp/definitely-not-here.sock" in done.stderr


def test_watch_knows_the_models_terminal_states() -> None:
    """watch keeps the set as strings (model imports msgspec, the CLI must not): same set."""
    from voicecall_trio.cli.watch import TERMINAL_STATES
    from voicecall_trio.model import TERMINAL_STATES as MODEL_TERMINAL

    assert {str(state.value) for state in MODEL_TERMINAL} == TERMINAL_STATES


FAKE_TAILSCALE = """#!/bin/sh
echo "$@" >> "$TS_LOG"
case "$*" in
  "status --json") echo '{"Self": {"DNSName": "box.tail.ts.net."}}'; exit 0 ;;
esac
if [ -n "$TS_FAIL" ]; then echo "funnel is not enabled" >&2; exit 1; fi
"""


@pytest.mark.parametrize(("mode", "fail", "code", "calls", "err", "out"), [
    ("funnel", "", 0, ["status --json",
                       "funnel --bg --yes --set-path /hook http://127.0.0.1:4321/hook"], "",
     "https://box.tail.ts.net/hook\n"),
    ("serve", "", 0, ["status --json",
                      "serve --bg --yes --set-path /hook http://127.0.0.1:4321/hook"],
     "Tailscale Serve is private to your tailnet", "https://box.tail.ts.net/hook\n"),
    ("off", "1", 0, ["funnel --set-path /hook off", "serve --set-path /hook off"], "",
     "off: /hook no longer exposed\n"),
    ("funnel", "1", 1, ["status --json",
                        "funnel --bg --yes --set-path /hook http://127.0.0.1:4321/hook"],
     "error: expose --mode funnel: `tailscale funnel --bg --yes --set-path /hook "
     "http://127.0.0.1:4321/hook` failed (exit 1): funnel is not enabled", ""),
])
def test_expose_runs_tailscale(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    mode: str, fail: str, code: int, calls: list[str], err: str, out: str,
) -> None:
    fake = tmp_path / "bin" / "tailscale"
    fake.parent.mkdir()
    fake.write_text(FAKE_TAILSCALE)
    fake.chmod(0o755)
    log = tmp_path / "calls.log"
    monkeypatch.setenv("PATH", f"{fake.parent}:/usr/bin:/bin")
    monkeypatch.setenv("TS_LOG", str(log))
    monkeypatch.setenv("TS_FAIL", fail)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"serve": {"port": 4321, "path": "/hook"}}))
    assert cli.main(["expose", "--mode", mode, "--config", str(config)]) == code
    assert log.read_text().splitlines() == calls
    printed, error = capsys.readouterr()
    assert err in error
    assert printed == out


def test_expose_without_tailscale_says_how_to_get_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    config = tmp_path / "config.json"
    config.write_text("{}")
    assert cli.main(["expose", "--config", str(config)]) == 1
    assert "the tailscale binary was not found on PATH" in capsys.readouterr().err
