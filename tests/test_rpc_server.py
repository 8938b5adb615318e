"""The RPC server survives whatever a client does, and answers half-closed clients."""

from __future__ import annotations

import socket
from typing import Any

import trio

from voicecall_trio.testing import running_daemon

FAST = {"mock": {"answerDelayMs": 5, "replyDelayMs": 5, "speakMsPerChar": 0}}


def raw_exchange(path: str, payload: bytes, *, half_close: bool) -> bytes:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(path)
    sock.sendall(payload)
    if half_close:
        sock.shutdown(socket.SHUT_WR)
    else:
        sock.close()
        return b""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    sock.close()
    return data


async def test_clients_that_vanish_or_send_poison_do_not_crash_the_daemon() -> None:
    async with running_daemon(FAST) as daemon:
        path = str(daemon.handle.socket_path)
        poison = [b"garbage\n" * 50, b"[" * 100_000 + b"\n", b"x" * (1024 * 1024 + 10) + b"\n"]
        for payload in poison:
            # write and vanish at once: the error reply cannot be delivered
            await trio.to_thread.run_sync(lambda p=payload: raw_exchange(path, p,
                                                                         half_close=False))
        deep = await trio.to_thread.run_sync(
            lambda: raw_exchange(path, b"[" * 100_000 + b"\n", half_close=True))
        assert b"-32700" in deep
        health: dict[str, Any] = await daemon.rpc("daemon.health")
        assert health["ok"]


async def test_a_half_closed_client_still_gets_its_call_placed_and_answered() -> None:
    async with running_daemon(FAST) as daemon:
        path = str(daemon.handle.socket_path)
        request = (b'{"jsonrpc":"2.0","id":1,"method":"voicecall.initiate","params":'
                   b'{"to":"+15555550123","message":"hi","mode":"conversation"}}\n')
        reply = await trio.to_thread.run_sync(
            lambda: raw_exchange(path, request, half_close=True))
        assert b'"initiated":true' in reply
        status = await daemon.rpc("voicecall.status")
        assert len(status["calls"]) == 1 and status["calls"][0]["providerCallId"]


def test_a_file_that_is_not_a_socket_is_never_deleted(tmp_path: Any) -> None:
    import pytest

    from voicecall_trio.rpc.unix import bind_unix_socket

    precious = tmp_path / "calls.jsonl"
    precious.write_text("a journal\n")
    with pytest.raises(FileExistsError):
        bind_unix_socket(precious)
    assert precious.read_text() == "a journal\n"


def _one_shot_server(path: str, replies: list[bytes]) -> Any:
    """A thread that accepts one client and answers each line it reads with the next reply."""
    import threading

    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)

    def serve() -> None:
        conn, _ = listener.accept()
        conn.settimeout(10)
        with conn:
            for reply in replies:
                if not conn.recv(65536):
                    return
                conn.sendall(reply)
        listener.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


def test_the_sync_client_copes_with_replies_it_cannot_use() -> None:
    import tempfile

    import pytest

    from voicecall_trio.rpc.client import SyncClient
    from voicecall_trio.rpc.protocol import RpcError

    path = tempfile.mkdtemp(prefix="vcsync", dir="/tmp") + "/s.sock"
    thread = _one_shot_server(path, [
        b'{"jsonrpc":"2.0","id":1,"result":{"text":"noon \\ud83d"}}\n',  # repaired
        b'\xff\xfe not a reply\n',  # not UTF-8: an error, not a hang or a crash
        b'{"jsonrpc":"2.0","id":3,"error":{"code":-32603,"message":"Internal error"}}\n',
    ])
    with SyncClient(path) as client:
        assert client.call("a", timeout=10) == {"text": "noon \ufffd"}
        with pytest.raises(RpcError):
            client.call("b", timeout=10)
        with pytest.raises(RpcError) as caught:
            client.call("c", timeout=10)
        assert caught.value.code == -32603
        with pytest.raises(RpcError) as refused:  # refused before it is sent
            client.call("voicecall.speak", {"callId": "c", "message": "\ud83d"})
        assert refused.value.code == -32602
    thread.join(10)
