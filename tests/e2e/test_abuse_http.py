"""Abuse of the HTTP front on real loopback sockets (issue #8), each bounded in time.

Every test runs its abuse while a correctly signed Twilio webhook from 127.0.0.1 and an RPC
``voicecall.status`` keep being asked for, and asserts that each answers within 1 s
throughout. The file-descriptor test runs ``voicecall serve`` as a subprocess under a
1024-descriptor limit; the others run the daemon in-process with the front's timeouts set
small, so they take seconds rather than the real 10 s / 30 s.
"""

from __future__ import annotations

import resource
import socket
import subprocess
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import pytest
import trio
from conftest import VOICECALL, MakeDaemon, RpcConnection, clean_env

from voicecall_trio import front as front_module
from voicecall_trio.providers.twilio.signature import compute_signature
from voicecall_trio.testing import running_daemon

TOKEN = "abuse-twilio-auth-token-0123456789"
ACCOUNT = "AC" + "0" * 32
PUBLIC = "https://voice.example.com/voice/webhook"
ANSWER_S = 1.0

TWILIO = {
    "provider": "twilio",
    "fromNumber": "+15550001234",
    "twilio": {"accountSid": ACCOUNT, "authToken": TOKEN, "apiBaseUrl": "http://127.0.0.1:9"},
    "publicUrl": PUBLIC,
}


def signed_webhook() -> bytes:
    """A correctly signed status callback for an unknown call: Twilio's 200, no effect."""
    params = {"AccountSid": ACCOUNT, "CallSid": "CA" + "7" * 32, "CallStatus": "ringing",
              "From": "+15550001234", "To": "+15555550123", "Direction": "outbound-api"}
    body = urlencode(params).encode()
    return (f"POST /voice/webhook HTTP/1.1\r\nHost: voice.example.com\r\n"
            f"X-Twilio-Signature: {compute_signature(TOKEN, PUBLIC, params)}\r\n"
            f"Content-Type: application/x-www-form-urlencoded\r\nConnection: close\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def junk_heads(count: int) -> list[bytes]:
    """Requests that never finish: a signature header with any value, a body still to come."""
    fast = (b"POST /voice/webhook HTTP/1.1\r\nHost: voice.example.com\r\n"
            b"X-Twilio-Signature: junk\r\nContent-Length: 1000\r\n\r\nCallSid=")
    chunked = (b"POST /voice/webhook HTTP/1.1\r\nHost: voice.example.com\r\n"
               b"X-Twilio-Signature: junk\r\nTransfer-Encoding: chunked\r\n\r\n100\r\nCall")
    return [fast if n % 2 else chunked for n in range(count)]


# -- blocking helpers (the subprocess tests) -------------------------------------------------


def webhook_status(port: int) -> int:
    """The status of one signed webhook, answered within ANSWER_S (else the test fails)."""
    deadline = time.monotonic() + ANSWER_S
    with socket.create_connection(("127.0.0.1", port), timeout=ANSWER_S) as sock:
        sock.sendall(signed_webhook())
        data = b""
        while b"\r\n" not in data:
            remaining = deadline - time.monotonic()
            assert remaining > 0, "no answer to a signed webhook within 1 s"
            sock.settimeout(remaining)
            chunk = sock.recv(4096)
            assert chunk, "the connection closed without an answer"
            data += chunk
    return int(data.split(b" ", 2)[1])


def assert_answering(port: int, socket_path: Any, rounds: int = 5) -> None:
    for _ in range(rounds):
        assert webhook_status(port) == 200
        started = time.monotonic()
        with RpcConnection(socket_path, timeout=ANSWER_S) as conn:
            reply = conn.request("voicecall.status", {}, timeout=ANSWER_S)
        assert "result" in reply and time.monotonic() - started < ANSWER_S


def http_port(daemon: Any) -> int:
    deadline = time.monotonic() + 10
    while not (listen := daemon.health()["listen"]):  # the RPC socket answers first
        assert time.monotonic() < deadline, "the HTTP front never reported its address"
        time.sleep(0.02)
    return int(listen[0].rsplit(":", 1)[1])


def start_limited(make_daemon: MakeDaemon, fd_limit: int, **overrides: Any) -> Any:
    """A ``voicecall serve`` subprocess whose RLIMIT_NOFILE is ``fd_limit``."""
    daemon = make_daemon(start=False, **TWILIO, **overrides)

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (fd_limit, fd_limit))

    err = open(daemon.stderr_path, "wb")  # noqa: SIM115 (closed by the daemon's exit)
    daemon.proc = subprocess.Popen(
        [VOICECALL, "serve", "--config", str(daemon.config_path)], stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=err, env=clean_env(), start_new_session=True,
        preexec_fn=limit)
    err.close()
    daemon.wait_ready()
    return daemon


@pytest.fixture
def many_fds() -> Any:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 4096:
        pytest.skip("needs a hard RLIMIT_NOFILE of 4096 for the test's own sockets")
    resource.setrlimit(resource.RLIMIT_NOFILE, (4096, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def open_many(port: int, count: int, first: Callable[[int], bytes]) -> list[socket.socket]:
    out = []
    for n in range(count):
        sock = socket.socket()
        sock.setblocking(False)
        try:
            sock.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        out.append(sock)
        if n % 100 == 99:
            time.sleep(0)  # let the kernel's backlog drain
    time.sleep(0.2)  # (bounded) the connects complete; nothing below depends on it exactly
    for n, sock in enumerate(out):
        data = first(n)
        if data:
            try:
                sock.send(data)
            except OSError:
                pass
    return out


def test_1100_idle_or_slow_connections_leave_webhooks_and_status_answering(
        make_daemon: MakeDaemon, many_fds: None) -> None:
    daemon = start_limited(make_daemon, 1024)
    port = http_port(daemon)
    healthz = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    socks = open_many(port, 1100, lambda n: healthz if n % 3 == 0 else
                      (b"GET /healthz HTTP/1.1\r\nHo" if n % 3 == 1 else b""))
    try:
        assert_answering(port, daemon.socket, rounds=10)
        more = open_many(port, 200, lambda n: b"")  # keeps coming while we ask
        socks += more
        assert_answering(port, daemon.socket, rounds=10)
    finally:
        for sock in socks:
            sock.close()
    log = daemon.stderr_text()
    assert log.count("cannot accept HTTP connections") <= 1, log[-2000:]
    assert "Traceback" not in log, log[-2000:]


def test_64_pending_junk_requests_do_not_make_signed_webhooks_429(
        make_daemon: MakeDaemon) -> None:
    daemon = make_daemon(**TWILIO)
    port = http_port(daemon)
    junk = junk_heads(80)
    socks = open_many(port, len(junk), lambda n: junk[n])
    try:
        assert_answering(port, daemon.socket, rounds=20)
    finally:
        for sock in socks:
            sock.close()


# -- in-process: connections past their deadline ---------------------------------------------


@pytest.fixture
def short_deadlines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(front_module, "REQUEST_TIMEOUT_S", 0.5)
    monkeypatch.setattr(front_module, "KEEP_ALIVE_S", 1.0)


STALLERS = [
    b"POST /voice/webhook HTTP/1.1\r\nHost: x\r\nX-Twilio-Signature: j\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n",
    b"POST /healthz HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 9\r\n\r\n",
    b"POST /healthz HTTP/1.0\r\nContent-Length: 9\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",  # then kept alive
    b"POST /voice/webhook HTTP/1.1\r\nHost: x\r\nX-Twilio-Signature: j\r\n"
    b"Content-Length: 9\r\n\r\n",
    b"",  # connects and says nothing
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
]


async def test_no_connection_outlives_its_deadline_while_webhooks_answer(
        short_deadlines: None) -> None:
    with trio.fail_after(30):
        async with running_daemon(TWILIO) as d:
            port = int(d.base_url.rsplit(":", 1)[1])
            closed_at: list[float] = []

            async def stall(raw: bytes) -> None:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
                start = trio.current_time()
                if raw:
                    await stream.send_all(raw)
                try:
                    while await stream.receive_some(65536):
                        pass
                except trio.BrokenResourceError:
                    pass
                closed_at.append(trio.current_time() - start)

            async def ask() -> None:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
                with trio.fail_after(ANSWER_S):
                    await stream.send_all(signed_webhook())
                    data = b""
                    while b"\r\n" not in data:
                        data += await stream.receive_some(4096)
                    assert data.startswith(b"HTTP/1.1 200 ")
                    await d.rpc("voicecall.status", {})
                await stream.aclose()

            async with trio.open_nursery() as nursery:
                for raw in STALLERS * 4:
                    nursery.start_soon(stall, raw)
                for _ in range(15):
                    await ask()
                    await trio.sleep(0.1)
            # request deadline 0.5 s, keep-alive 1 s, plus the sweeper's slack
            assert len(closed_at) == len(STALLERS) * 4 and max(closed_at) < 2.5, closed_at
            d.stop()


def test_the_cap_is_lowered_below_a_small_fd_limit_and_said_once(
        make_daemon: MakeDaemon, many_fds: None) -> None:
    daemon = start_limited(make_daemon, 256)
    port = http_port(daemon)
    socks = open_many(port, 400, lambda n: b"" if n % 2 else b"GET /healthz HTTP/1.1\r\n")
    try:
        assert_answering(port, daemon.socket, rounds=10)
    finally:
        for sock in socks:
            sock.close()
    log = daemon.stderr_text()
    assert log.count("serve.maxConnections 768 lowered to 128") == 1, log[-2000:]
    assert "Traceback" not in log and "cannot accept" not in log, log[-2000:]
