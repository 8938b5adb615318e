"""Abuse of the control socket (issue 8, items 3, 5 and 6): each test asserts that the daemon
keeps answering ``daemon.health`` and ``voicecall.status`` while the abuse runs.

- trio tests on the autojump clock drive ``RpcServer.handle_stream`` over memory streams,
  against a supervisor on the mock carrier (``rigs.rig``);
- the flood test uses a real Unix socket and the real clock (backpressure is the kernel's
  socket buffer filling up), bounded in count and time;
- the end-to-end test runs a whole daemon in-process (``running_daemon``).
"""

from __future__ import annotations

import errno
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from rigs import rig
from rpc_kit import RawPeer, answered_call, real_deadline, rpc_over_memory

from voicecall_trio.rpc.accept import FailureLog
from voicecall_trio.rpc.methods import build_methods
from voicecall_trio.rpc.protocol import INTERNAL_ERROR, INVALID_PARAMS
from voicecall_trio.rpc.server import (
    MAX_PENDING_PER_CONNECTION,
    SEND_STALL_TIMEOUT_S,
    RpcServer,
)
from voicecall_trio.rpc.unix import open_unix_listener
from voicecall_trio.testing import running_daemon

LONE = "Hi there \ud83d"  # a UTF-16 string cut inside an emoji, as a gateway sends it


# -- item 5: invalid Unicode at the RPC boundary -----------------------------------------------

async def test_a_lone_surrogate_in_speak_is_refused_and_the_call_still_works(
    tmp_path: Path, autojump_clock: Any
) -> None:
    with real_deadline(30):
        async with rig(tmp_path) as r, rpc_over_memory(r) as (peer, _):
            call_id = await answered_call(peer, r)
            bad = await peer.call(1, "voicecall.speak", {"callId": call_id, "message": LONE})
            assert bad["error"]["code"] == INVALID_PARAMS
            assert "`message`" in bad["error"]["message"]
            status = await peer.call(2, "voicecall.status", {"callId": call_id})
            assert status["result"]["found"] and not status["result"]["call"].get("endedAt")
            listing = await peer.call(3, "voicecall.status")
            assert [c["callId"] for c in listing["result"]["calls"]] == [call_id]
            spoke = await peer.call(4, "voicecall.speak", {"callId": call_id,
                                                          "message": "Still here 😀"})
            assert spoke == {"jsonrpc": "2.0", "id": 4, "result": {"success": True}}
            ended = await peer.call(5, "voicecall.end", {"callId": call_id})
            assert ended["result"] == {"success": True}
            final = await peer.call(6, "voicecall.status", {"callId": call_id})
            assert final["result"]["call"]["state"] == "hangup-bot"
            assert (await r.journal_states(call_id))[-1] == "hangup-bot"
            texts = [e["text"] for e in final["result"]["call"]["transcript"]]
            assert LONE not in texts and "Still here 😀" in texts


async def test_invalid_unicode_anywhere_in_a_request_gets_an_error_naming_it(
    tmp_path: Path, autojump_clock: Any
) -> None:
    with real_deadline(30):
        async with rig(tmp_path) as r, rpc_over_memory(r) as (peer, _):
            initiate = await peer.call(1, "voicecall.initiate",
                                       {"to": "+1555\udc00", "message": "hi"})
            assert initiate["error"]["code"] == INVALID_PARAMS
            assert "`to`" in initiate["error"]["message"]
            nested = await peer.call(2, "voicecall.status",
                                     {"callId": "x", "extra": [{"k\ud800": 1}]})
            assert nested["error"]["code"] == INVALID_PARAMS
            method = await peer.call(3, "voicecall.\ud83d")
            assert method["error"]["code"] == -32600
            await peer.send({"jsonrpc": "2.0", "id": "\udfff", "method": "daemon.health"})
            assert (await peer.reply(None))["error"]["code"] == -32600
            # raw UTF-8 bytes of a surrogate (not an escape) are not UTF-8: a parse error
            await peer.stream.send_all(b'{"jsonrpc":"2.0","id":4,"method":"\xed\xa0\xbd"}\n')
            assert (await peer.reply(None))["error"]["code"] == -32700
            assert (await peer.call(5, "daemon.health"))["result"]["ok"]
            assert r.sup.list_calls() == []


async def test_a_result_that_cannot_be_encoded_is_an_error_reply_not_a_hang_up(
    autojump_clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    async def poisoned(params: dict[str, Any], conn: Any) -> Any:
        return {"text": "\ud83d"}

    async def health(params: dict[str, Any], conn: Any) -> Any:
        return {"ok": True}

    server = RpcServer({"poisoned": poisoned, "daemon.health": health},
                       inline=frozenset({"poisoned"}))
    client_end, server_end = trio.testing.memory_stream_pair()
    peer = RawPeer(client_end)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.handle_stream, server_end)
            reply = await peer.call(1, "poisoned")
            assert reply["error"] == {"code": INTERNAL_ERROR, "message":
                                      "Internal error: the result could not be encoded"}
            assert (await peer.call(2, "daemon.health"))["result"] == {"ok": True}
            nursery.cancel_scope.cancel()
    lines = [rec for rec in caplog.records if rec.name == "voicecall.rpc"]
    assert len(lines) == 1 and lines[0].exc_info is None


async def test_an_agent_reply_with_a_lone_surrogate_is_repaired_before_it_is_spoken(
    tmp_path: Path, autojump_clock: Any
) -> None:
    with real_deadline(30):
        async with rig(tmp_path, mock={"callerScript": ["What time is it?", "Bye"]}) as r, \
                rpc_over_memory(r) as (agent, _):
            assert (await agent.call(1, "agent.register"))["result"] == {"registered": True}
            async with rpc_over_memory(r) as (user, _):
                call_id = await answered_call(user, r)
                while True:  # the daemon asks the agent: answer with a cut emoji
                    request = await agent.receive()
                    assert request is not None
                    if request.get("method") == "agent.respond":
                        break
                await agent.send({"jsonrpc": "2.0", "id": request["id"],
                                  "result": {"text": "It is noon \ud83d"}})
                call = r.sup.live[call_id]
                await call.wait_until(
                    lambda rec: any(e.text.startswith("It is noon") for e in rec.transcript))
                status = await user.call(2, "voicecall.status", {"callId": call_id})
                texts = [e["text"] for e in status["result"]["call"]["transcript"]]
                assert "It is noon \ufffd" in texts
                assert (await user.call(3, "voicecall.end", {"callId": call_id}))["result"]
            assert (await r.journal_states(call_id))[-1] == "hangup-bot"


async def test_a_lone_surrogate_through_the_daemons_socket() -> None:
    """End to end: the whole daemon, its real socket, its journal."""
    fast = {"mock": {"answerDelayMs": 5, "replyDelayMs": 5, "speakMsPerChar": 0}}
    with trio.fail_after(30):
        async with running_daemon(fast) as daemon:
            stream = await trio.open_unix_socket(str(daemon.handle.socket_path))
            peer = RawPeer(stream)
            reply = await peer.call(1, "voicecall.initiate",
                                    {"to": "+15555550123", "message": "Hello",
                                     "mode": "conversation"})
            call_id = reply["result"]["callId"]
            bad = await peer.call(2, "voicecall.speak", {"callId": call_id, "message": LONE})
            assert bad["error"]["code"] == INVALID_PARAMS
            assert (await peer.call(3, "voicecall.status"))["result"]["calls"]
            found = await peer.call(4, "voicecall.status", {"callId": call_id})
            assert found["result"]["found"]
            assert (await peer.call(5, "voicecall.end", {"callId": call_id}))["result"]
            await stream.aclose()
            journal = daemon.config.journal_path
        lines = [json.loads(line) for line in journal.read_text().splitlines()]
        assert [rec["state"] for rec in lines if rec["callId"] == call_id][-1] == "hangup-bot"


# -- item 6: a client that never reads -----------------------------------------------------------

async def test_a_flood_that_is_never_read_is_held_back_and_others_still_answer(
    tmp_path: Path,
) -> None:
    """100k one-line requests on a real Unix socket, no reply read: the server stops reading
    at the per-connection cap (the kernel buffers fill; the writer blocks), and a second
    connection's health and status answer within 1 s."""
    sock_dir = Path(tempfile.mkdtemp(prefix="vcrpc", dir="/tmp"))
    path = sock_dir / "rpc.sock"
    line = b'{"jsonrpc":"2.0","id":1,"method":"voicecall.end","params":{"callId":"nope"}}\n'
    flood = line * 100_000
    written = 0
    with trio.fail_after(30):
        async with rig(tmp_path) as r, trio.open_nursery() as nursery:
            server = RpcServer(build_methods(r.sup))
            await nursery.start(server.serve, path, open_unix_listener(path))
            flooder = await trio.open_unix_socket(str(path))

            async def write_without_reading() -> None:
                nonlocal written
                for start in range(0, len(flood), 65536):
                    await flooder.send_all(flood[start:start + 65536])
                    written = start + 65536

            nursery.start_soon(write_without_reading)
            # everyone blocked: the writer on a full socket, the server on its reply sends
            await trio.testing.wait_all_tasks_blocked(cushion=0.2)
            assert written < len(flood) // 2  # backpressure reached the writer
            assert server.in_flight <= MAX_PENDING_PER_CONNECTION
            assert server.peak_in_flight <= MAX_PENDING_PER_CONNECTION
            probe = RawPeer(await trio.open_unix_socket(str(path)))
            for i in range(3):
                with trio.fail_after(1):
                    assert (await probe.call(i, "daemon.health"))["result"]["ok"]
                    assert (await probe.call(f"s{i}", "voicecall.status"))["result"] == {
                        "calls": []}
            assert server.peak_in_flight <= MAX_PENDING_PER_CONNECTION + 1
            nursery.cancel_scope.cancel()
        await flooder.aclose()
        await probe.stream.aclose()
    assert not path.exists()


async def test_a_peer_that_never_reads_is_dropped_after_the_stall_timeout(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """A lockstep stream: every send blocks until the peer reads, and this one never does
    (it subscribed, so events queue for it too)."""
    async with rig(tmp_path) as r:
        server = RpcServer(build_methods(r.sup))
        client_end, server_end = trio.testing.lockstep_stream_pair()

        async def write_and_never_read() -> None:
            await client_end.send_all(b'{"jsonrpc":"2.0","id":1,"method":"voicecall.subscribe"}\n'
                                      b'{"jsonrpc":"2.0","id":2,"method":"daemon.health"}\n')
            await r.sup.initiate("+15555550123", "Hi", "notify")

        started = trio.current_time()
        with real_deadline(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(write_and_never_read)
                await server.handle_stream(server_end)  # returns once the peer is dropped
                nursery.cancel_scope.cancel()
        assert trio.current_time() - started >= SEND_STALL_TIMEOUT_S
        assert server.in_flight == 0 and server.connections == 0


async def test_a_subscriber_that_reads_is_never_dropped(
    tmp_path: Path, autojump_clock: Any
) -> None:
    async with rig(tmp_path) as r, rpc_over_memory(r) as (peer, server):
        assert (await peer.call(1, "voicecall.subscribe"))["result"] == {"subscribed": True}
        with real_deadline(30):
            for _ in range(3):
                await r.sup.initiate("+15555550123", "Hi", "notify")
                await trio.sleep(SEND_STALL_TIMEOUT_S * 2)  # virtual: long quiet spells
                while (await peer.receive() or {}).get("params", {}).get("type") != "call.ended":
                    pass
        assert server.connections == 1
        assert (await peer.call(2, "daemon.health"))["result"]["ok"]


def _count_tasks() -> int:
    count, stack = 0, [trio.lowlevel.current_root_task()]
    while stack:
        task = stack.pop()
        count += 1
        stack.extend(child for nursery in task.child_nurseries for child in nursery.child_tasks)
    return count


async def test_subscribing_or_registering_again_and_again_adds_nothing(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """Each subscribe used to add a channel and a task, each register a watcher task: one
    connection repeating them grew memory without bound."""
    with real_deadline(30):
        async with rig(tmp_path) as r, rpc_over_memory(r) as (peer, _):
            assert (await peer.call(0, "voicecall.subscribe"))["result"]["subscribed"]
            assert (await peer.call(1, "agent.register"))["result"]["registered"]
            await trio.testing.wait_all_tasks_blocked()
            before = _count_tasks()
            for i in range(200):
                assert (await peer.call(f"s{i}", "voicecall.subscribe"))["result"]
                assert (await peer.call(f"r{i}", "agent.register"))["result"]
            await trio.testing.wait_all_tasks_blocked()
            assert _count_tasks() == before
            assert len(r.sup.bus) == 1
            assert r.sup.responder is not None
        assert r.sup.responder is None  # unregistered when its connection closed


# -- item 3: the RPC listener under fd exhaustion --------------------------------------------------

class _FlakyListener(trio.abc.Listener[trio.abc.Stream]):
    """Fails ``failures`` accepts with EMFILE, then hands over ``stream``, then waits."""

    def __init__(self, failures: int, stream: trio.abc.Stream) -> None:
        self.failures = failures
        self.stream: trio.abc.Stream | None = stream
        self.accepts = 0

    async def accept(self) -> trio.abc.Stream:
        await trio.lowlevel.checkpoint()
        self.accepts += 1
        if self.failures:
            self.failures -= 1
            raise OSError(errno.EMFILE, "Too many open files")
        if self.stream is not None:
            stream, self.stream = self.stream, None
            return stream
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


async def test_accept_failures_from_fd_exhaustion_log_one_line_and_the_loop_goes_on(
    tmp_path: Path, autojump_clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)

    async def health(params: dict[str, Any], conn: Any) -> Any:
        return {"ok": True}

    client_end, server_end = trio.testing.memory_stream_pair()
    listener = _FlakyListener(300, server_end)  # 300 failures, ~30 s at one retry per 0.1 s
    server = RpcServer({"daemon.health": health})
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve, tmp_path / "none.sock", listener)
            reply = await RawPeer(client_end).call(1, "daemon.health")
            assert reply["result"] == {"ok": True}
            nursery.cancel_scope.cancel()
    assert listener.accepts == 301 or listener.accepts == 302
    assert not [rec for rec in caplog.records if rec.exc_info]  # no traceback, ever
    failed = [rec for rec in caplog.records if "accept" in rec.getMessage()]
    assert len(failed) == 1 and "EMFILE" in failed[0].getMessage()


def test_accept_failure_log_lets_one_line_out_per_minute_with_a_count() -> None:
    log = FailureLog(60)
    assert log.record(0.0) == 1
    assert [log.record(t) for t in (0.1, 10.0, 59.9)] == [None, None, None]
    assert log.record(60.0) == 4  # three held back, and this one
    assert log.record(60.5) is None
    assert log.record(200.0) == 2
    assert log.total == 7


async def test_a_trio_client_agent_whose_reply_cannot_be_encoded_answers_an_error(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """The agent's handler returns text with a lone surrogate: the trio client answers the
    daemon with an error (it used to crash its reader), and the call gets its fallback."""
    from voicecall_trio.replies import FALLBACK_REPLY
    from voicecall_trio.rpc.aclient import TrioClient

    async def respond(params: dict[str, Any]) -> Any:
        return {"text": "cut \ud83d"}

    with real_deadline(30):
        async with rig(tmp_path, mock={"callerScript": ["Hello?", "Bye"]}) as r:
            server = RpcServer(build_methods(r.sup))
            client_end, server_end = trio.testing.memory_stream_pair()
            agent = TrioClient(client_end, {"agent.respond": respond})
            async with trio.open_nursery() as nursery:
                nursery.start_soon(server.handle_stream, server_end)
                await nursery.start(agent.run)
                assert await agent.call("agent.register") == {"registered": True}
                record = await r.sup.initiate("+15555550123", "Hi", "conversation")
                final = await r.sup.live[record.call_id].wait_until(
                    lambda rec: any(e.text == FALLBACK_REPLY for e in rec.transcript))
                assert not final.terminal
                assert (await agent.call("daemon.health"))["ok"]  # the client still runs
                nursery.cancel_scope.cancel()
