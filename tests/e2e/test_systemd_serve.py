"""``voicecall serve`` as systemd runs it: ``NOTIFY_SOCKET`` and ``WATCHDOG_USEC`` in its
environment, a datagram socket of ours standing in for systemd. READY=1 once it answers,
WATCHDOG=1 pings, RELOADING=1/READY=1 around a SIGHUP, STOPPING=1 on SIGTERM, exit 0."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from conftest import VOICECALL, RpcConnection, base_config, clean_env, short_tmpdir

WAIT_S = 20.0


def next_message(sock: socket.socket, timeout: float = WAIT_S) -> str:
    sock.settimeout(timeout)
    return sock.recv(4096).decode()


def test_serve_under_a_fake_systemd() -> None:
    with short_tmpdir() as workdir:
        notify_path = str(workdir / "notify")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(notify_path)
        config = workdir / "c.json"
        config.write_text(json.dumps(base_config(workdir / "store")))
        env = {**clean_env(), "NOTIFY_SOCKET": notify_path, "WATCHDOG_USEC": "200000"}
        err = open(workdir / "stderr", "wb")  # noqa: SIM115 (closed in finally)
        proc = subprocess.Popen([VOICECALL, "serve", "--config", str(config)], env=env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=err, start_new_session=True)
        try:
            messages = [next_message(sock) for _ in range(3)]
            assert messages[0] == "READY=1", messages
            assert messages[1:] == ["WATCHDOG=1", "WATCHDOG=1"]  # every 100 ms
            with RpcConnection(Path(workdir / "store" / "voicecall.sock")) as conn:
                assert conn.call("daemon.health")["ready"] is True

            proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + WAIT_S
            seen: list[str] = []
            while "READY=1" not in seen:
                assert time.monotonic() < deadline, seen
                message = next_message(sock)
                if message != "WATCHDOG=1":
                    seen.append(message)
            assert seen[0].startswith("RELOADING=1\nMONOTONIC_USEC=") and seen[1] == "READY=1"

            proc.send_signal(signal.SIGTERM)
            while (message := next_message(sock)) != "STOPPING=1":
                assert message == "WATCHDOG=1"
            assert proc.wait(WAIT_S) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            err.close()
            sock.close()
        assert not os.path.exists(workdir / "store" / "voicecall.sock")
