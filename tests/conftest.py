"""Shared helpers: a real ``voicecall serve`` subprocess on the mock carrier, and clients for it.

``make_daemon(**overrides)`` writes a config (small mock delays, HTTP port 0, a short store
path under /tmp so the Unix socket path stays well below 107 bytes), starts
``voicecall serve --config F`` with stderr captured to a file, and returns once
``daemon.health`` answers on the socket. ``daemon`` is the same with the defaults. Every
process a test starts through these helpers is killed at teardown, whatever the test did.

Waiting is always on a condition: the socket answering, a journal line appearing, an event
arriving on a subscription, a subprocess exiting. The only pauses are the short back-off
inside bounded polling loops (the daemon is another process; there is nothing to block on
until its socket exists).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from voicecall_trio.states import TERMINAL_STATE_NAMES as TERMINAL_STATES

_LOCAL_NAMES = {"localhost", "127.0.0.1", "::1", "0.0.0.0", "::", ""}
_real_getaddrinfo = socket.getaddrinfo


def _local_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    """Tests never reach the internet: a name other than loopback does not resolve, so a
    test that would call a real API fails at once (and never waits on DNS)."""
    name = host.decode() if isinstance(host, bytes) else str(host or "")
    if name not in _LOCAL_NAMES and not name.startswith("127."):
        raise socket.gaierror(socket.EAI_NONAME, f"tests resolve no names ({name})")
    return _real_getaddrinfo(host, *args, **kwargs)


@pytest.fixture(autouse=True)
def no_internet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "getaddrinfo", _local_getaddrinfo)


_BIN = Path(sys.executable).parent
VOICECALL = str(_BIN / "voicecall") if (_BIN / "voicecall").exists() else (
    shutil.which("voicecall") or "voicecall"
)
PYTHON = sys.executable


CALLER_SCRIPT = [
    "Hello, this is the test callee speaking.",
    "Yes, tomorrow at nine works for me.",
    "Please send me a reminder.",
    "Thanks, goodbye.",
]

POLL_INTERVAL_S = 0.02  # back-off inside bounded condition polls only
START_TIMEOUT_S = 20.0
CLI_TIMEOUT_S = 30.0


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def base_config(store: Path) -> dict[str, Any]:
    return {
        "mock": {
            "answerDelayMs": 50,
            "replyDelayMs": 50,
            "speakMsPerChar": 1,
            "callerScript": list(CALLER_SCRIPT),
        },
        "outbound": {"notifyHangupDelaySec": 0.2},
        "serve": {"port": 0},
        "store": str(store),
        "maxConcurrentCalls": 3,
        "shutdownGraceSeconds": 2,
    }


def clean_env() -> dict[str, str]:
    """The test's environment without anything that would redirect the CLI or the daemon
    (an ``OPENAI_API_KEY`` would have the daemon's built-in replies call OpenAI)."""
    env = dict(os.environ)
    for name in ("VOICECALL_SOCKET", "VOICECALL_CONFIG", "NOTIFY_SOCKET", "WATCHDOG_USEC",
                 "WATCHDOG_PID", "OPENAI_API_KEY"):
        env.pop(name, None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


# -- raw JSON-RPC over the Unix socket (stdlib only) ----------------------------------------


class RpcConnection:
    """One newline-delimited JSON-RPC connection, read and written by hand."""

    def __init__(self, path: Path | str, timeout: float = 5.0) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(self.path)
        self._buffer = b""
        self._ids = iter(range(1, 1 << 30))
        self.notifications: list[dict[str, Any]] = []

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> RpcConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send_line(self, data: bytes) -> None:
        self.sock.sendall(data if data.endswith(b"\n") else data + b"\n")

    def send(self, obj: Any) -> None:
        self.send_line(json.dumps(obj).encode())

    def read_message(self, timeout: float = 5.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no message from the daemon in time")
            self.sock.settimeout(remaining)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the daemon closed the connection")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        message = json.loads(line)
        assert isinstance(message, dict), message
        return message

    def read_reply(self, msg_id: Any = ..., timeout: float = 5.0) -> dict[str, Any]:
        """The next response (not a notification); with ``msg_id``, the one with that id."""
        deadline = time.monotonic() + timeout
        while True:
            message = self.read_message(max(0.0, deadline - time.monotonic()))
            if "method" in message and "id" not in message:
                self.notifications.append(message)
                continue
            if msg_id is ... or message.get("id") == msg_id:
                return message

    def request(self, method: str, params: dict[str, Any] | None = None,
                timeout: float = 10.0) -> dict[str, Any]:
        """Send a request and return the whole reply object (result or error)."""
        msg_id = next(self._ids)
        body: dict[str, Any] = {"jsonrpc": "2.0", "id": msg_id, "method": method}
        if params is not None:
            body["params"] = params
        self.send(body)
        return self.read_reply(msg_id, timeout)

    def call(self, method: str, params: dict[str, Any] | None = None,
             timeout: float = 10.0) -> Any:
        reply = self.request(method, params, timeout)
        if "error" in reply:
            raise AssertionError(f"{method} failed: {reply['error']}")
        return reply["result"]


class EventWatcher(RpcConnection):
    """A ``voicecall.subscribe`` connection that keeps every ``voicecall.event`` it sees."""

    def __init__(self, path: Path | str) -> None:
        super().__init__(path)
        assert self.call("voicecall.subscribe", {}) == {"subscribed": True}

    @property
    def events(self) -> list[dict[str, Any]]:
        return [n["params"] for n in self.notifications if n.get("method") == "voicecall.event"]

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool],
                 timeout: float = 10.0) -> dict[str, Any]:
        for event in self.events:
            if predicate(event):
                return event
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no matching event within {timeout}s; saw {self.events}")
            message = self.read_message(remaining)
            if message.get("method") != "voicecall.event":
                continue
            self.notifications.append(message)
            if predicate(message["params"]):
                return message["params"]


# -- the daemon under test --------------------------------------------------------------------


class Daemon:
    """A ``voicecall serve`` subprocess plus everything a test needs to drive and inspect it."""

    def __init__(self, workdir: Path, config: dict[str, Any], *, name: str = "d",
                 config_name: str | None = None) -> None:
        self.workdir = workdir
        self.name = name
        self.config = config
        self.store = Path(config["store"])
        self.config_path = workdir / (config_name or f"{name}.json")
        self.config_path.write_text(json.dumps(config, indent=2), encoding="utf-8")
        socket_path = config.get("control", {}).get("socketPath")
        self.socket = Path(socket_path) if socket_path else self.store / "voicecall.sock"
        assert len(os.fsencode(self.socket)) <= 107, self.socket
        self.journal = self.store / "calls.jsonl"
        self.proc: subprocess.Popen[bytes] | None = None
        self.generation = 0
        self.stderr_path = workdir / f"{name}.stderr.0"
        self.children: list[subprocess.Popen[Any]] = []
        self.watchers: list[RpcConnection] = []

    # process control -------------------------------------------------------------------
    def start(self, *, wait: bool = True, extra_args: tuple[str, ...] = ()) -> Daemon:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.generation += 1
        self.stderr_path = self.workdir / f"{self.name}.stderr.{self.generation}"
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [VOICECALL, "serve", "--config", str(self.config_path), *extra_args],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                env=clean_env(), start_new_session=True,
            )
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> dict[str, Any]:
        """Poll the socket (bounded) until ``daemon.health`` answers ok."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"daemon exited with {self.proc.returncode} before it was ready:\n"
                    f"{self.stderr_text()}"
                )
            try:
                with RpcConnection(self.socket, timeout=2.0) as conn:
                    health = conn.call("daemon.health")
                if health.get("ok"):
                    return health  # type: ignore[no-any-return]
            except (OSError, ConnectionError, TimeoutError, ValueError) as exc:
                last = exc
            time.sleep(POLL_INTERVAL_S)
        raise AssertionError(f"daemon not ready within {timeout}s ({last}):\n{self.stderr_text()}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait; returns the exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def cleanup(self) -> None:
        for watcher in self.watchers:
            watcher.close()
        for child in [*self.children, self.proc]:
            if child is not None and child.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    child.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.wait(10)
            if child is not None and child is not self.proc and child.stdout is not None:
                with contextlib.suppress(Exception):
                    child.stdout.close()

    def stderr_text(self) -> str:
        try:
            return self.stderr_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    # clients ---------------------------------------------------------------------------
    def run(self, *args: str, timeout: float = CLI_TIMEOUT_S, input: str | None = None,
            with_config: bool = True) -> subprocess.CompletedProcess[str]:
        """Run the ``voicecall`` CLI (with ``--config`` of this daemon) to completion."""
        cmd = [VOICECALL, *args]
        if with_config:
            cmd += ["--config", str(self.config_path)]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              input=input, env=clean_env(), stdin=None if input else
                              subprocess.DEVNULL)

    def run_json(self, *args: str, timeout: float = CLI_TIMEOUT_S) -> Any:
        """Run a CLI command that must succeed and print one JSON document."""
        done = self.run(*args, timeout=timeout)
        assert done.returncode == 0, (done.returncode, done.stdout, done.stderr)
        return json.loads(done.stdout)

    def popen(self, *args: str) -> subprocess.Popen[str]:
        """Start the CLI in the background (killed at teardown); stdout is a pipe."""
        child = subprocess.Popen(
            [VOICECALL, *args, "--config", str(self.config_path)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=clean_env(),
        )
        self.children.append(child)
        return child

    def connect(self) -> RpcConnection:
        conn = RpcConnection(self.socket)
        self.watchers.append(conn)
        return conn

    def watcher(self) -> EventWatcher:
        watcher = EventWatcher(self.socket)
        self.watchers.append(watcher)
        return watcher

    def rpc(self, method: str, params: dict[str, Any] | None = None) -> Any:
        with RpcConnection(self.socket) as conn:
            return conn.call(method, params)

    def health(self) -> dict[str, Any]:
        return self.rpc("daemon.health")  # type: ignore[no-any-return]

    def wait_call_ended(self, call_id: str, timeout: float = 15.0) -> dict[str, Any]:
        """``voicecall watch --call-id`` exits when the call ends; then return its status."""
        done = self.run("watch", "--call-id", call_id, "--json", timeout=timeout)
        assert done.returncode == 0, (done.stdout, done.stderr)
        status = self.run_json("status", "--call-id", call_id, "--json")
        assert status["found"] is True
        assert status["call"]["state"] in TERMINAL_STATES, status
        return status["call"]  # type: ignore[no-any-return]

    # the journal -----------------------------------------------------------------------
    def journal_lines(self) -> list[bytes]:
        try:
            data = self.journal.read_bytes()
        except FileNotFoundError:
            return []
        return [line for line in data.split(b"\n") if line.strip()]

    def journal_records(self) -> list[dict[str, Any]]:
        """Every readable line, in order (unreadable ones are skipped)."""
        out = []
        for line in self.journal_lines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def records_of(self, call_id: str) -> list[dict[str, Any]]:
        return [r for r in self.journal_records() if r.get("callId") == call_id]

    def journal_call_ids(self) -> set[str]:
        return {r["callId"] for r in self.journal_records()}

    def wait_journal(self, predicate: Callable[[list[dict[str, Any]]], bool],
                     timeout: float = 10.0) -> list[dict[str, Any]]:
        """Poll (bounded) until the journal's readable records satisfy ``predicate``."""
        deadline = time.monotonic() + timeout
        while True:
            records = self.journal_records()
            if predicate(records):
                return records
            if time.monotonic() >= deadline:
                raise AssertionError(f"journal condition not met within {timeout}s: {records}")
            time.sleep(POLL_INTERVAL_S)


class LineReader:
    """Reads a child's stdout on a thread so a test can wait for lines with a timeout."""

    def __init__(self, stream: Any) -> None:
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: Any) -> None:
        try:
            for line in stream:
                self.lines.put(line.rstrip("\n"))
        except (OSError, ValueError):
            pass
        finally:
            self.lines.put(None)

    def wait_for(self, predicate: Callable[[str], bool], timeout: float) -> str | None:
        """The first new line matching ``predicate`` within ``timeout``, else None."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                return None
            if line is None:
                return None
            self.seen.append(line)
            if predicate(line):
                return line

    def drain(self, timeout: float = 5.0) -> list[str]:
        """Everything until EOF (call after the child exited)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                return self.seen
            if line is None:
                return self.seen
            self.seen.append(line)


# -- fixtures -------------------------------------------------------------------------------


MakeDaemon = Callable[..., Daemon]


@contextlib.contextmanager
def short_tmpdir() -> Iterator[Path]:
    """A short directory under /tmp (Unix socket paths are limited to 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="vc", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def daemon_factory(workdir: Path) -> Iterator[MakeDaemon]:
    """``factory(start=True, name=..., store=None, **config_overrides) -> Daemon``.

    Every daemon made (and every CLI child started through it) is killed on exit, whatever
    happened in between.
    """
    made: list[Daemon] = []

    def factory(*, start: bool = True, name: str | None = None, store: Path | None = None,
                **overrides: Any) -> Daemon:
        n = len(made)
        config = deep_merge(base_config(store or workdir / f"s{n}"), overrides)
        daemon = Daemon(workdir, config, name=name or f"d{n}")
        made.append(daemon)
        if start:
            daemon.start()
        return daemon

    try:
        yield factory
    finally:
        for daemon in made:
            daemon.cleanup()


@pytest.fixture
def vc_workdir() -> Iterator[Path]:
    with short_tmpdir() as path:
        yield path


@pytest.fixture
def make_daemon(vc_workdir: Path) -> Iterator[MakeDaemon]:
    with daemon_factory(vc_workdir) as factory:
        yield factory


@pytest.fixture
def daemon(make_daemon: MakeDaemon) -> Daemon:
    """A fresh daemon with the default test config, for this test only."""
    return make_daemon()


@pytest.fixture(scope="module")
def quiet_daemon() -> Iterator[Daemon]:
    """One daemon shared by a module's tests that never place a call (saves start-ups).

    Tests using it may assert that the journal is empty and no call is active.
    """
    with short_tmpdir() as workdir, daemon_factory(workdir) as factory:
        yield factory(name="quiet")
