"""The RPC server survives whatever a client does, and answers half-closed clients."""

from __future__ import annotations

import socket
from typing import Any

import trio
import trio.testing

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


def test_the_sync_client_says_a_reply_is_over_the_line_limit_instead_of_waiting() -> None:
    """Review finding: a reply over 1 MiB was dropped by the client's line splitter, which
    then waited for ever for a reply that would never come (`voicecall status` hung)."""
    import tempfile

    import pytest

    from voicecall_trio.rpc.client import SyncClient
    from voicecall_trio.rpc.protocol import RpcError

    path = tempfile.mkdtemp(prefix="vcsync", dir="/tmp") + "/s.sock"
    huge = b'{"jsonrpc":"2.0","id":1,"result":"' + b"x" * (1024 * 1024 + 10) + b'"}\n'
    thread = _one_shot_server(path, [huge])
    with SyncClient(path) as client, pytest.raises(RpcError, match="1 MiB"):
        client.call("voicecall.status", timeout=10)
    thread.join(10)


async def test_a_message_longer_than_a_transcript_line_is_refused_naming_it() -> None:
    """Review finding: a million-character message was accepted, and its record then made
    every status reply too big to send. A message is at most 4,096 characters."""
    from voicecall_trio.events import MAX_TEXT_CHARS
    from voicecall_trio.rpc.protocol import RpcError

    async with running_daemon(FAST) as daemon:
        for method, params in (("voicecall.initiate", {"to": "+15555550123"}),
                               ("voicecall.speak", {"callId": "x"}),
                               ("voicecall.continue", {"callId": "x"})):
            try:
                await daemon.rpc(method, {**params, "message": "a" * (MAX_TEXT_CHARS + 1)})
            except RpcError as exc:
                assert exc.code == -32602 and "message" in exc.message, exc.message
            else:
                raise AssertionError(f"{method} took an over-long message")
        result = await daemon.rpc("voicecall.initiate",
                                   {"to": "+15555550123", "message": "a" * MAX_TEXT_CHARS})
        assert result["initiated"] is True
        assert (await daemon.rpc("voicecall.status", {}))["calls"]


async def test_a_client_that_leaves_stops_the_reading_of_what_it_sent() -> None:
    """Review finding: once a peer was gone, the server still answered every line of the
    batch it had read, each reply encoded and thrown away without a checkpoint: with big
    replies, seconds of a frozen event loop per client."""
    from voicecall_trio.rpc.server import RpcServer

    answered = 0

    async def big(params: dict[str, Any], conn: Any) -> Any:
        nonlocal answered
        answered += 1
        return "x" * 200_000

    server = RpcServer({"voicecall.status": big})
    client, served = trio.testing.memory_stream_pair()
    line = b'{"jsonrpc":"2.0","id":1,"method":"voicecall.status"}\n'
    await client.send_all(line * 1000)
    await client.aclose()  # gone without reading a byte
    with trio.fail_after(10):
        await server.handle_stream(served)
    assert answered <= 2, answered


async def test_connections_beyond_the_limit_are_closed_as_they_arrive(
        tmp_path: Any) -> None:
    """Review finding: control-socket connections were uncapped and could eat the
    descriptors the HTTP front keeps in reserve."""
    from voicecall_trio.rpc import server as server_module
    from voicecall_trio.rpc.server import RpcServer

    async def health(params: dict[str, Any], conn: Any) -> Any:
        return {"ok": True}

    path = tmp_path / "s.sock"
    server = RpcServer({"daemon.health": health})
    held: list[trio.SocketStream] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve, path)
        for _ in range(server_module.MAX_CONNECTIONS):
            held.append(await trio.open_unix_socket(str(path)))
        with trio.fail_after(10):
            await trio.testing.wait_all_tasks_blocked(0.05)  # every connection is served
            assert server.connections == server_module.MAX_CONNECTIONS
            extra = await trio.open_unix_socket(str(path))
            assert await extra.receive_some() == b""  # closed at once
            await held.pop().aclose()
            await trio.testing.wait_all_tasks_blocked(0.05)  # its task has ended
            assert server.connections == server_module.MAX_CONNECTIONS - 1
            again = await trio.open_unix_socket(str(path))
            await again.send_all(b'{"jsonrpc":"2.0","id":1,"method":"daemon.health"}\n')
            assert b'"ok":true' in await again.receive_some()
        for stream in [*held, extra, again]:
            await stream.aclose()
        nursery.cancel_scope.cancel()


async def test_a_daemon_request_refused_with_a_null_id_fails_instead_of_waiting() -> None:
    """The daemon asks its peer (as it asks a registered agent) and the peer cannot read
    the request, so it answers `id: null`: the daemon's request fails with that error (it
    used to match no request, and waited for ever)."""
    import json

    from voicecall_trio.rpc.protocol import RpcError
    from voicecall_trio.rpc.server import RpcServer

    async def ask(params: dict[str, Any], conn: Any) -> Any:
        try:
            return await conn.request("agent.respond", {"transcript": "hi"})
        except RpcError as exc:
            return {"refused": exc.code}

    server = RpcServer({"ask": ask})
    client, served = trio.testing.memory_stream_pair()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.handle_stream, served)
            await client.send_all(b'{"jsonrpc":"2.0","id":1,"method":"ask"}\n')
            asked = json.loads(await client.receive_some())
            assert asked["method"] == "agent.respond" and asked["id"] == "daemon-1"
            await client.send_all(b'{"jsonrpc":"2.0","id":null,"error":'
                                  b'{"code":-32700,"message":"Parse error"}}\n')
            reply = json.loads(await client.receive_some())
            assert reply == {"jsonrpc": "2.0", "id": 1, "result": {"refused": -32700}}
            await client.aclose()


async def test_a_trio_client_call_the_daemon_cannot_read_fails_instead_of_waiting() -> None:
    """Issue 9 item 5: the daemon answers a request line over 1 MiB with an error whose id
    is null; the trio client matched replies by id only, so that call waited for ever. The
    call it belongs to now fails with the daemon's error, and the others go on."""
    from voicecall_trio.rpc.aclient import TrioClient
    from voicecall_trio.rpc.protocol import INVALID_REQUEST, RpcError
    from voicecall_trio.rpc.server import RpcServer

    release = trio.Event()

    async def slow(params: dict[str, Any], conn: Any) -> Any:
        await release.wait()
        return {"success": True}

    async def health(params: dict[str, Any], conn: Any) -> Any:
        return {"ok": True}

    server = RpcServer({"voicecall.speak": slow, "daemon.health": health})
    client_end, server_end = trio.testing.memory_stream_pair()
    client = TrioClient(client_end)
    outcome: dict[str, Any] = {}

    async def pending_speak() -> None:
        outcome["speak"] = await client.call("voicecall.speak", {"message": "hi"})

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.handle_stream, server_end)
            await nursery.start(client.run)
            nursery.start_soon(pending_speak)
            await trio.testing.wait_all_tasks_blocked()
            try:
                await client.call("voicecall.speak", {"message": "x" * (1024 * 1024 + 1)})
            except RpcError as exc:
                assert exc.code == INVALID_REQUEST and "1 MiB" in exc.message
            else:
                raise AssertionError("a request over the line limit got a result")
            assert await client.call("daemon.health") == {"ok": True}
            release.set()
            await trio.testing.wait_all_tasks_blocked()
            assert outcome["speak"] == {"success": True}
            await client.aclose()


async def test_a_trio_client_call_answered_with_a_null_id_error_fails() -> None:
    """A peer that cannot read our request answers with `id: null`: the one call pending
    gets that error."""
    from voicecall_trio.rpc.aclient import TrioClient
    from voicecall_trio.rpc.protocol import RpcError

    client_end, daemon_end = trio.testing.memory_stream_pair()
    client = TrioClient(client_end)

    async def daemon() -> None:
        await daemon_end.receive_some()
        await daemon_end.send_all(b'{"jsonrpc":"2.0","id":null,"error":'
                                  b'{"code":-32700,"message":"Parse error"}}\n')

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(client.run)
            nursery.start_soon(daemon)
            try:
                await client.call("daemon.health")
            except RpcError as exc:
                assert exc.code == -32700
            else:
                raise AssertionError("no error")
            await client.aclose()


def test_the_sync_client_queues_notifications_drops_stale_replies_and_fails_on_a_refusal(
) -> None:
    """What the sync client's peer decides, through a real socket: a notification met
    while waiting is kept for ``notifications()``, a reply to an earlier id is dropped,
    and a null-id refusal ends the call it belongs to instead of leaving it waiting."""
    import tempfile

    import pytest

    from voicecall_trio.rpc.client import SyncClient
    from voicecall_trio.rpc.protocol import RpcError

    path = tempfile.mkdtemp(prefix="vcsync", dir="/tmp") + "/s.sock"
    thread = _one_shot_server(path, [
        b'{"jsonrpc":"2.0","method":"voicecall.event","params":{"type":"call.ended"}}\n'
        b'{"jsonrpc":"2.0","id":1,"result":"first"}\n',
        b'{"jsonrpc":"2.0","id":1,"result":"stale"}\n'
        b'{"jsonrpc":"2.0","id":2,"result":"second"}\n',
        b'{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"line exceeds"}}\n',
    ])
    with SyncClient(path) as client:
        assert client.call("a", timeout=10) == "first"
        assert client.call("b", timeout=10) == "second"
        with pytest.raises(RpcError) as refused:
            client.call("c", timeout=10)
        assert refused.value.code == -32600
        assert "could not read the request" in refused.value.message
        note = next(client.notifications())
        assert note.method == "voicecall.event" and note.params == {"type": "call.ended"}
    thread.join(10)


def test_watching_skips_a_notification_over_the_line_limit() -> None:
    """A call fails on a reply it cannot read, but `voicecall watch` just skips such a line
    and keeps watching (as it did before the peer was shared)."""
    import tempfile

    from voicecall_trio.rpc.client import SyncClient

    path = tempfile.mkdtemp(prefix="vcsync", dir="/tmp") + "/s.sock"
    huge = (b'{"jsonrpc":"2.0","method":"voicecall.event","params":{"t":"'
            + b"x" * (1024 * 1024 + 10) + b'"}}\n')
    small = b'{"jsonrpc":"2.0","method":"voicecall.event","params":{"type":"call.ended"}}\n'
    thread = _one_shot_server(path, [b'{"jsonrpc":"2.0","id":1,"result":{"subscribed":true}}\n'
                                     + huge + small, b""])
    with SyncClient(path) as client:
        assert client.call("voicecall.subscribe", timeout=10) == {"subscribed": True}
        first = next(iter(client.notifications()))
        assert first.params == {"type": "call.ended"}
    thread.join(10)
