"""``voicecall systemd-unit`` as a subprocess: this user, this venv, this config; the unit
checked by ``systemd-analyze verify`` when it is installed."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from voicecall_trio.cli.systemd_unit import Unit, render_unit

_BIN = Path(sys.executable).parent
VOICECALL = str(_BIN / "voicecall") if (_BIN / "voicecall").exists() else "voicecall"


def directives(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


# -- the command ------------------------------------------------------------------------------


def run(*args: str, home: Path, **extra_env: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("VOICECALL_CONFIG", "VOICECALL_SOCKET", "XDG_CONFIG_HOME")}
    env["HOME"] = str(home)
    env.update(extra_env)
    return subprocess.run([VOICECALL, "systemd-unit", *args], capture_output=True, text=True,
                          timeout=30, env=env, stdin=subprocess.DEVNULL)


def test_the_command_fills_in_this_user_this_venv_and_the_config(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"store": str(store), "shutdownGraceSeconds": 3}))
    # VOICECALL_SOCKET of this shell is not the unit's: the socket is the config's
    done = run("--config", str(config), home=tmp_path, VOICECALL_SOCKET="/elsewhere/x.sock")
    assert done.returncode == 0, done.stderr
    assert "/elsewhere" not in done.stdout
    d = directives(done.stdout)
    assert d["User"] == [pwd.getpwuid(os.getuid()).pw_name]
    assert d["ExecStart"] == [f"{VOICECALL} serve --config {config}"]
    assert d["ReadWritePaths"] == [str(store)]
    assert d["TimeoutStopSec"] == ["18"]


def test_systemd_analyze_accepts_the_unit(tmp_path: Path) -> None:
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed")
    unit = tmp_path / "voicecall.service"
    unit.write_text(render_unit(Unit(executable=(VOICECALL,), config="/etc/voicecall/c.toml",
                                     user="root", group="root", store="/var/lib/voicecall",
                                     socket="/run/voicecall/voicecall.sock")))
    verify = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                            text=True, timeout=60)
    problems = [line for line in verify.stderr.splitlines() if "voicecall.service" in line]
    assert problems == [], verify.stderr


def test_no_config_file_is_a_clear_failure(tmp_path: Path) -> None:
    done = run(home=tmp_path)
    assert done.returncode == 1
    assert "voicecall init" in done.stderr
