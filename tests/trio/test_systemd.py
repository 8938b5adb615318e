"""sd_notify and the watchdog against a fake ``NOTIFY_SOCKET`` (a datagram socket of ours):
the pure parts and the watchdog task on the autojump clock. A whole daemon: e2e/."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import trio

from voicecall_trio import systemd


@contextmanager
def notify_socket() -> Iterator[tuple[socket.socket, str]]:
    """A bound AF_UNIX datagram socket standing in for systemd (short path under /tmp)."""
    directory = tempfile.mkdtemp(prefix="sd", dir="/tmp")
    path = os.path.join(directory, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    try:
        yield sock, path
    finally:
        sock.close()
        shutil.rmtree(directory, ignore_errors=True)


def received(sock: socket.socket) -> list[str]:
    out = []
    sock.setblocking(False)
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except BlockingIOError:
            return out


# -- pure parts ---------------------------------------------------------------------------------


def test_notify_sends_one_datagram_and_reports_whether_it_could() -> None:
    with notify_socket() as (sock, path):
        assert systemd.notify("READY=1", {"NOTIFY_SOCKET": path}) is True
        assert received(sock) == ["READY=1"]
    assert systemd.notify("READY=1", {}) is False
    assert systemd.notify("READY=1", {"NOTIFY_SOCKET": "/nonexistent/notify"}) is False
    assert systemd.notify("READY=1", {"NOTIFY_SOCKET": "vsock:2:1234"}) is False


def test_notify_reaches_an_abstract_socket() -> None:
    name = f"voicecall-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        assert systemd.notify("STOPPING=1", {"NOTIFY_SOCKET": "@" + name})
        assert received(sock) == ["STOPPING=1"]


def test_notify_never_blocks_on_a_systemd_that_does_not_read() -> None:
    with notify_socket() as (_, path):
        env = {"NOTIFY_SOCKET": path}
        results = [systemd.notify("WATCHDOG=1", env) for _ in range(5000)]
        assert results[0] is True and results[-1] is False  # the queue filled; no hang


@pytest.mark.parametrize(("env", "expected"), [
    ({"WATCHDOG_USEC": "30000000"}, 15.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4242"}, 15.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # someone else's watchdog
    ({"WATCHDOG_USEC": "1"}, systemd.MIN_INTERVAL_S),  # never a busy loop
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "-5"}, None),
    ({"WATCHDOG_USEC": "soon"}, None),
    ({"WATCHDOG_USEC": ""}, None),
    ({}, None),
])
def test_watchdog_interval_is_half_of_watchdog_usec_for_our_pid(
    env: dict[str, str], expected: float | None
) -> None:
    assert systemd.watchdog_interval_s(env, pid=4242) == expected


def test_reloading_carries_a_monotonic_timestamp() -> None:
    with notify_socket() as (sock, path):
        assert systemd.reloading({"NOTIFY_SOCKET": path})
        (message,) = received(sock)
        first, second = message.split("\n")
        assert first == "RELOADING=1" and int(second.removeprefix("MONOTONIC_USEC=")) > 0


async def test_watchdog_pings_at_once_then_every_interval(autojump_clock: Any) -> None:
    with notify_socket() as (sock, path):
        with trio.move_on_after(10.05):  # virtual seconds
            await systemd.watchdog(2.5, {"NOTIFY_SOCKET": path})
        assert received(sock) == ["WATCHDOG=1"] * 5  # t = 0, 2.5, 5, 7.5, 10


async def test_an_unreachable_systemd_is_logged_once_not_per_ping(
    autojump_clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with trio.move_on_after(10.05):
        await systemd.watchdog(1.0, {"NOTIFY_SOCKET": "/nonexistent/notify"})
    warnings = [r for r in caplog.records if "cannot send WATCHDOG=1" in r.getMessage()]
    assert len(warnings) == 1
