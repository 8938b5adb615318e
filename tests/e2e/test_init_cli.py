"""``voicecall init`` as a subprocess: flags without a terminal, exit codes, the file's mode,
prompts on a real pseudo-terminal (the secret is never echoed), and doctor afterwards."""

from __future__ import annotations

import os
import pty
import select
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

from voicecall_trio.config import load_config

_BIN = Path(sys.executable).parent
VOICECALL = str(_BIN / "voicecall") if (_BIN / "voicecall").exists() else "voicecall"
SID = "AC" + "4" * 32
TOKEN = "pty-secret-token-do-not-echo-42"
FROM = "+15550001234"


def env_for(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("VOICECALL_CONFIG", "VOICECALL_SOCKET", "XDG_CONFIG_HOME",
                        "TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "OPENAI_API_KEY")}
    env["HOME"] = str(home)
    return env


def run(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([VOICECALL, "init", *args], capture_output=True, text=True,
                          timeout=60, env=env_for(home), stdin=subprocess.DEVNULL)


TWILIO = ("--provider", "twilio", "--account-sid", SID, "--auth-token", TOKEN,
          "--from-number", FROM, "--skip-doctor")


def test_flags_write_a_private_config_at_the_default_path(tmp_path: Path) -> None:
    done = run(*TWILIO, home=tmp_path)
    assert done.returncode == 0, done.stderr
    path = tmp_path / ".config" / "voicecall" / "config.toml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert "next: voicecall serve\n" in done.stdout
    assert "no publicUrl and no tunnel" in done.stderr
    config = load_config(path, {})
    assert config.twilio.auth_token == TOKEN and config.from_number == FROM
    assert TOKEN not in done.stdout + done.stderr


def test_an_existing_file_is_exit_1_and_force_replaces_it(tmp_path: Path) -> None:
    target = tmp_path / "c.toml"
    target.write_text("# mine\n")
    done = run(*TWILIO, "--config", str(target), home=tmp_path)
    assert done.returncode == 1 and "--force" in done.stderr
    assert target.read_text() == "# mine\n"
    done = run(*TWILIO, "--config", str(target), "--force", home=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"next: voicecall serve --config {target}" in done.stdout
    assert load_config(target, {}).provider == "twilio"


def test_no_terminal_and_missing_values_is_exit_2_naming_the_flags(tmp_path: Path) -> None:
    done = run("--provider", "twilio", "--from-number", FROM, home=tmp_path)
    assert done.returncode == 2
    assert "--account-sid" in done.stderr and "--auth-token" in done.stderr
    assert not (tmp_path / ".config").exists()
    done = run(home=tmp_path)
    assert done.returncode == 2 and "--provider" in done.stderr


def test_a_bad_number_is_exit_2_naming_the_flag_and_writes_nothing(tmp_path: Path) -> None:
    done = run("--provider", "mock", "--from-number", "12345", "--skip-doctor", home=tmp_path)
    assert done.returncode == 2 and "--from-number" in done.stderr
    done = run(*TWILIO, "--public-url", "voice.example.com", home=tmp_path)
    assert done.returncode == 2 and "--public-url" in done.stderr
    assert not (tmp_path / ".config" / "voicecall" / "config.toml").exists()


def test_doctor_runs_afterwards_and_does_not_change_the_exit_code(tmp_path: Path) -> None:
    done = run("--provider", "mock", "--config", str(tmp_path / "m.toml"), home=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "voicecall doctor" in done.stdout
    assert "config" in done.stdout  # doctor's first check; the daemon check fails (not running)


def read_until(fd: int, needle: bytes, seen: bytearray, timeout: float = 20.0) -> None:
    """Read the terminal's output until ``needle`` appears (bounded)."""
    deadline = time.monotonic() + timeout
    while needle not in seen:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no {needle!r} in {bytes(seen)!r}"
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                chunk = b""
            assert chunk, f"terminal closed before {needle!r}: {bytes(seen)!r}"
            seen += chunk


def test_prompts_on_a_terminal_never_echo_the_secret(tmp_path: Path) -> None:
    target = tmp_path / "c.toml"
    primary, secondary = pty.openpty()
    child = subprocess.Popen(
        [VOICECALL, "init", "--provider", "twilio", "--config", str(target), "--skip-doctor"],
        stdin=secondary, stdout=secondary, stderr=secondary, env=env_for(tmp_path),
        start_new_session=True)
    os.close(secondary)
    seen = bytearray()
    try:
        read_until(primary, b"Account SID", seen)
        os.write(primary, SID.encode() + b"\n")
        read_until(primary, b"(not shown): ", seen)
        os.write(primary, TOKEN.encode() + b"\n")
        read_until(primary, b"E.164", seen)
        os.write(primary, FROM.encode() + b"\n")
        read_until(primary, b"Public URL", seen)
        os.write(primary, b"https://voice.example.com\n")
        read_until(primary, b"next: voicecall serve", seen)
        assert child.wait(30) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
        os.close(primary)
    assert SID.encode() in seen  # ordinary answers echo, as a terminal does
    assert TOKEN.encode() not in seen  # the secret does not
    config = load_config(target, {})
    assert config.twilio.auth_token == TOKEN and config.public_url == "https://voice.example.com"


def test_a_path_init_cannot_write_is_refused_before_anything_is_asked(tmp_path: Path) -> None:
    done = run(*TWILIO, "--config", str(tmp_path / "c.json"), home=tmp_path)
    assert done.returncode == 2 and ".toml" in done.stderr
    (tmp_path / "d.toml").mkdir()
    done = run(*TWILIO, "--config", str(tmp_path / "d.toml"), "--force", home=tmp_path)
    assert done.returncode == 1 and "is a directory" in done.stderr
    blocked = tmp_path / "ro"
    blocked.mkdir(mode=0o500)
    done = run(*TWILIO, "--config", str(blocked / "sub" / "c.toml"), home=tmp_path)
    if os.geteuid() != 0:  # root writes anywhere
        assert done.returncode == 1 and "cannot write" in done.stderr
    assert "Traceback" not in done.stderr


def test_init_then_serve_is_the_whole_set_up() -> None:
    """The README's two commands: ``voicecall init`` writes the default config, and a plain
    ``voicecall serve`` finds it and runs with it."""
    from conftest import RpcConnection, short_tmpdir

    with short_tmpdir() as home:
        done = run("--provider", "mock", "--from-number", FROM, "--skip-doctor", home=home)
        assert done.returncode == 0, done.stderr
        config = home / ".config" / "voicecall" / "config.toml"
        text = config.read_text()
        config.write_text(text.replace("[serve]", "[serve]\nport = 0"))  # a free port
        serve = subprocess.Popen([VOICECALL, "serve"], env=env_for(home),
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, start_new_session=True)
        try:
            sock = home / "clawd" / "voice-calls" / "voicecall.sock"
            deadline = time.monotonic() + 20
            while True:
                assert serve.poll() is None, serve.stderr.read() if serve.stderr else ""
                try:
                    with RpcConnection(sock, timeout=2.0) as conn:
                        health = conn.call("daemon.health")
                    break
                except (OSError, ConnectionError):
                    assert time.monotonic() < deadline
                    time.sleep(0.02)
            assert health["provider"] == "mock"
            serve.send_signal(signal.SIGTERM)
            assert serve.wait(20) == 0
        finally:
            if serve.poll() is None:
                serve.kill()
                serve.wait(10)
            if serve.stderr is not None:
                serve.stderr.close()
