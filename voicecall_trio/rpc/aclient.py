"""A trio JSON-RPC client over the Unix socket: for gateways written in Python, tests and
benchmarks. Replies are matched by id, so calls may run concurrently on one connection;
notifications go to a memory channel read with ``notifications()``."""

from __future__ import annotations

import itertools
import os
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from .protocol import (
    INTERNAL_ERROR,
    METHOD_NOT_FOUND,
    LineSplitter,
    LineTooLong,
    Notification,
    Request,
    Response,
    RpcError,
    encode_error,
    encode_request,
    encode_result,
    parse_line,
)

RequestHandler = Callable[[dict[str, Any]], Awaitable[Any]]


class TrioClient:
    """``handlers`` answer requests the daemon sends (``agent.respond`` after agent.register)."""

    def __init__(self, stream: trio.abc.Stream,
                 handlers: dict[str, RequestHandler] | None = None) -> None:
        self._stream = stream
        self.handlers = dict(handlers or {})
        self._ids = itertools.count(1)
        self._waiting: dict[int | str, trio.MemorySendChannel[Response]] = {}
        self._send_lock = trio.Lock()
        self._notes_send, self._notes = trio.open_memory_channel[Notification](1024)

    @classmethod
    async def connect(cls, path: str | os.PathLike[str],
                      handlers: dict[str, RequestHandler] | None = None) -> TrioClient:
        stream = await trio.open_unix_socket(os.fspath(path))
        return cls(stream, handlers)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Read replies and notifications until the connection closes."""
        splitter = LineSplitter()
        task_status.started()
        try:
            async with trio.open_nursery() as nursery:
                await self._read(splitter, nursery)
        finally:
            for waiter in self._waiting.values():
                waiter.close()
            self._notes_send.close()

    async def _read(self, splitter: LineSplitter, nursery: trio.Nursery) -> None:
        while True:
            try:
                data = await self._stream.receive_some(65536)
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                return  # closed by aclose() or by the daemon
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
                elif isinstance(message, Request):
                    nursery.start_soon(self._answer, message)

    async def _answer(self, request: Request) -> None:
        handler = self.handlers.get(request.method)
        if handler is None:
            reply = encode_error(request.id, METHOD_NOT_FOUND,
                                 f"Method not found: {request.method}")
        else:
            try:
                reply = encode_result(request.id, await handler(request.params))
            except Exception as exc:  # includes a result that cannot be encoded
                reply = encode_error(request.id, INTERNAL_ERROR, str(exc))
        try:
            async with self._send_lock:
                await self._stream.send_all(reply)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass  # we (or the daemon) closed the connection meanwhile: nobody to answer

    async def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        msg_id = next(self._ids)
        line = encode_request(msg_id, method, params or {})  # RpcError for invalid text
        send, receive = trio.open_memory_channel[Response](1)
        self._waiting[msg_id] = send
        async with self._send_lock:
            await self._stream.send_all(line)
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
