"""A trio JSON-RPC client over the Unix socket: for gateways written in Python, tests and
benchmarks. Replies are matched by id, so calls may run concurrently on one connection;
notifications go to a memory channel read with ``notifications()``."""

from __future__ import annotations

import itertools
import os
from typing import Any

import trio

from .protocol import (
    LineSplitter,
    LineTooLong,
    Notification,
    Response,
    RpcError,
    encode_request,
    parse_line,
)


class TrioClient:
    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream
        self._ids = itertools.count(1)
        self._waiting: dict[int | str, trio.MemorySendChannel[Response]] = {}
        self._send_lock = trio.Lock()
        self._notes_send, self._notes = trio.open_memory_channel[Notification](1024)

    @classmethod
    async def connect(cls, path: str | os.PathLike[str]) -> TrioClient:
        stream = await trio.open_unix_socket(os.fspath(path))
        return cls(stream)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Read replies and notifications until the connection closes."""
        splitter = LineSplitter()
        task_status.started()
        try:
            while True:
                data = await self._stream.receive_some(65536)
                if not data:
                    return
                for line in splitter.feed(data):
                    if isinstance(line, LineTooLong):
                        continue
                    message = parse_line(line)
                    if isinstance(message, Response) and message.id in self._waiting:
                        self._waiting.pop(message.id).send_nowait(message)
                    elif isinstance(message, Notification):
                        try:
                            self._notes_send.send_nowait(message)
                        except trio.WouldBlock:
                            pass
        finally:
            for waiter in self._waiting.values():
                waiter.close()
            self._notes_send.close()

    async def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        msg_id = next(self._ids)
        send, receive = trio.open_memory_channel[Response](1)
        self._waiting[msg_id] = send
        async with self._send_lock:
            await self._stream.send_all(encode_request(msg_id, method, params or {}))
        try:
            reply = await receive.receive()
        except trio.EndOfChannel:
            raise RpcError(-32000, "connection closed before the reply") from None
        if reply.error is not None:
            raise RpcError.from_reply(reply.error)
        return reply.result

    @property
    def notifications(self) -> trio.MemoryReceiveChannel[Notification]:
        return self._notes

    async def aclose(self) -> None:
        await self._stream.aclose()
