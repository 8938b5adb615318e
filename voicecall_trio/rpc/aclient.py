"""A trio JSON-RPC client over the Unix socket: for gateways written in Python, tests and
benchmarks. Replies are matched by id, so calls may run concurrently on one connection;
notifications go to a memory channel read with ``notifications()``. The books (ids, pending
calls, what each line read asks for) are kept by ``peer.Peer``, as in the daemon.

An error reply with a null id (the daemon could not read one of our lines: one over its line
limit) is the answer to the call that sent that line, or, if the line was an answer of ours
to the daemon, to no one; it used to match no call, which then waited for ever."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from ..errors import RpcError
from .peer import Peer, Reply
from .protocol import (
    INTERNAL_ERROR,
    METHOD_NOT_FOUND,
    Notification,
    Request,
    Response,
)

RequestHandler = Callable[[dict[str, Any]], Awaitable[Any]]


class TrioClient:
    """``handlers`` answer requests the daemon sends (``agent.respond`` after agent.register)."""

    def __init__(self, stream: trio.abc.Stream,
                 handlers: dict[str, RequestHandler] | None = None) -> None:
        self._stream = stream
        self.handlers = dict(handlers or {})
        self._peer = Peer[trio.MemorySendChannel[Response]]()
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
        task_status.started()
        try:
            async with trio.open_nursery() as nursery:
                await self._read(nursery)
        finally:
            for waiter in self._peer.close():
                waiter.close()
            self._notes_send.close()

    async def _read(self, nursery: trio.Nursery) -> None:
        while True:
            try:
                data = await self._stream.receive_some(65536)
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                return  # closed by aclose() or by the daemon
            if not data:
                return
            for action in self._peer.receive_data(data):
                if isinstance(action, Reply):
                    action.waiter.send_nowait(action.response)
                elif isinstance(action, Notification):
                    try:
                        self._notes_send.send_nowait(action)
                    except trio.WouldBlock:
                        pass
                elif isinstance(action, Request):
                    nursery.start_soon(self._answer, action)
                # Refuse (a line we cannot read) and Unmatched (a late reply): dropped

    async def _answer(self, request: Request) -> None:
        handler = self.handlers.get(request.method)
        if handler is None:
            reply = self._peer.send_error(request.id, METHOD_NOT_FOUND,
                                          f"Method not found: {request.method}")
        else:
            try:
                reply = self._peer.send_result(request.id, await handler(request.params))
            except Exception as exc:  # includes a result that cannot be encoded
                reply = self._peer.send_error(request.id, INTERNAL_ERROR, str(exc))
        try:
            async with self._send_lock:
                await self._stream.send_all(reply)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass  # we (or the daemon) closed the connection meanwhile: nobody to answer

    async def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        send, receive = trio.open_memory_channel[Response](1)
        # RpcError for invalid text, before anything is recorded
        msg_id, line = self._peer.send_request(method, params or {}, send)
        try:
            async with self._send_lock:
                await self._stream.send_all(line)
            try:
                reply = await receive.receive()
            except trio.EndOfChannel:
                raise RpcError(-32000, "connection closed before the reply") from None
        finally:
            self._peer.forget(msg_id)  # a call given up (cancelled) leaves nothing behind
        if reply.error is not None:
            raise RpcError.from_reply(reply.error)
        return reply.result

    @property
    def notifications(self) -> trio.MemoryReceiveChannel[Notification]:
        return self._notes

    async def aclose(self) -> None:
        await self._stream.aclose()
