"""Pieces for JSON-RPC tests: a raw peer, the server over memory streams against a rig, and a
real-time bound for tests on the autojump clock.

``real_deadline`` exists because ``trio.fail_after`` counts virtual time: on
``MockClock(autojump_threshold=0)`` the clock jumps straight to the nearest deadline whenever
every task waits, including while the journal's worker thread writes, so a virtual deadline
fires at the first write with no other timer pending. A hang is bounded in real seconds
instead, by a timer thread that cancels the scope through the trio token.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import trio
import trio.testing
from rigs import Rig

from voicecall_trio.errors import LineTooLong
from voicecall_trio.rpc.methods import build_methods
from voicecall_trio.rpc.protocol import LineSplitter
from voicecall_trio.rpc.server import RpcServer


@contextmanager
def real_deadline(seconds: float) -> Iterator[trio.CancelScope]:
    """Like ``trio.fail_after``, in real seconds whatever the run's clock."""
    token = trio.lowlevel.current_trio_token()
    with trio.CancelScope() as scope:
        timer = threading.Timer(seconds, lambda: token.run_sync_soon(scope.cancel))
        timer.daemon = True
        timer.start()
        try:
            yield scope
        finally:
            timer.cancel()
    if scope.cancelled_caught:
        raise AssertionError(f"still running after {seconds} s of real time: a hang")


class RawPeer:
    """A JSON-RPC peer that writes exactly the lines it is given (``json.dumps`` escapes a
    lone surrogate as ``\\ud83d``, as a gateway would) and reads replies by id."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self._splitter = LineSplitter()
        self._lines: deque[bytes] = deque()
        self.others: list[dict[str, Any]] = []  # notifications and daemon requests seen

    async def send(self, obj: Any) -> None:
        await self.stream.send_all(json.dumps(obj).encode() + b"\n")

    async def receive(self) -> dict[str, Any] | None:
        while not self._lines:
            data = await self.stream.receive_some(65536)
            if not data:
                return None
            for item in self._splitter.feed(data):
                assert not isinstance(item, LineTooLong)
                self._lines.append(item)
        message: dict[str, Any] = json.loads(self._lines.popleft().decode("utf-8"))
        return message

    async def reply(self, msg_id: Any) -> dict[str, Any]:
        while True:
            message = await self.receive()
            assert message is not None, f"connection closed before the reply to {msg_id!r}"
            if message.get("id") == msg_id and ("result" in message or "error" in message):
                return message
            self.others.append(message)

    async def call(self, msg_id: Any, method: str, params: dict[str, Any] | None = None
                   ) -> dict[str, Any]:
        await self.send({"jsonrpc": "2.0", "id": msg_id, "method": method,
                         "params": params or {}})
        return await self.reply(msg_id)


@asynccontextmanager
async def rpc_over_memory(r: Rig, server: RpcServer | None = None
                          ) -> AsyncIterator[tuple[RawPeer, RpcServer]]:
    """A connection to ``server`` (default: every method, bound to the rig's supervisor)."""
    server = server or RpcServer(build_methods(r.sup))
    client_end, server_end = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.handle_stream, server_end)
        yield RawPeer(client_end), server
        nursery.cancel_scope.cancel()


async def answered_call(peer: RawPeer, r: Rig) -> str:
    """Place a conversation call over ``peer`` and wait until the mock callee answers."""
    reply = await peer.call("init", "voicecall.initiate",
                            {"to": "+15555550123", "message": "Hello", "mode": "conversation"})
    call_id: str = reply["result"]["callId"]
    await r.sup.live[call_id].wait_until(lambda rec: rec.state.connected)
    return call_id
