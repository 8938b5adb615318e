"""systemd notifications from a whole in-process daemon (real socket, real HTTP server) to a
fake ``NOTIFY_SOCKET``: READY=1, the watchdog's pings, STOPPING=1; no ping task without
``WATCHDOG_USEC``. The ``serve`` process under a fake systemd: test_systemd_serve.py."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from pathlib import Path

import trio

from voicecall_trio.daemon import DaemonHandle, run_daemon
from voicecall_trio.testing.daemon import daemon_config

WAIT_S = 20  # real seconds: a hang fails


def received(sock: socket.socket) -> list[str]:
    out = []
    sock.setblocking(False)
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except BlockingIOError:
            return out


async def next_message(sock: trio.socket.SocketType) -> str:
    with trio.fail_after(WAIT_S):
        return (await sock.recv(4096)).decode()


async def test_daemon_says_ready_pings_the_watchdog_and_says_stopping(tmp_path: Path) -> None:
    directory = tempfile.mkdtemp(prefix="sd", dir="/tmp")
    path = os.path.join(directory, "notify")
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    await sock.bind(path)
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "100000"}  # a ping every 50 ms
    config = daemon_config({}, store=Path(directory) / "store")
    try:
        async with trio.open_nursery() as nursery:
            handle: DaemonHandle = await nursery.start(
                lambda task_status: run_daemon(config, environ=env, handle_signals=False,
                                               task_status=task_status))
            seen = [await next_message(sock) for _ in range(4)]
            # the first ping may go out just before READY=1; both come, then more pings
            assert "READY=1" in seen[:2]
            assert seen.count("WATCHDOG=1") >= 3
            handle.stop()
            while (message := await next_message(sock)) != "STOPPING=1":
                assert message == "WATCHDOG=1"
    finally:
        sock.close()
        shutil.rmtree(directory, ignore_errors=True)


async def test_no_watchdog_task_without_watchdog_usec(tmp_path: Path) -> None:
    directory = tempfile.mkdtemp(prefix="sd", dir="/tmp")
    path = os.path.join(directory, "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as raw:
        raw.bind(path)
        config = daemon_config({}, store=tmp_path / "store")
        async with trio.open_nursery() as nursery:
            handle: DaemonHandle = await nursery.start(
                lambda task_status: run_daemon(config, environ={"NOTIFY_SOCKET": path},
                                               handle_signals=False, task_status=task_status))
            handle.stop()
        assert received(raw) == ["READY=1", "STOPPING=1"]
    shutil.rmtree(directory, ignore_errors=True)
