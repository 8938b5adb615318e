"""An in-memory httpx transport to an ASGI app that streams the response as the app sends it.

``httpx.ASGITransport`` runs the app to the end and buffers the whole body before the client
sees a byte, so a simulator that sends audio in timed chunks (``FakeTTS``) would look, in
memory, like one that waits and then answers everything at once: first-byte and idle timeouts
could not be tested on the autojump clock. This transport runs the app in a nursery the caller
owns and hands each body chunk over a memory channel as it is sent (with no buffer: the app
waits for the client to read, as on a socket). Closing the response tells the app the client
disconnected; an app that fails after it started answering breaks the body with
``httpx.ReadError``, as a dropped connection does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

import httpx
import trio

ASGIApp = Callable[[MutableMapping[str, Any], Callable[[], Awaitable[MutableMapping[str, Any]]],
                    Callable[[MutableMapping[str, Any]], Awaitable[None]]], Awaitable[None]]
CLIENT = ("127.0.0.1", 50000)


class _Body(httpx.AsyncByteStream):
    def __init__(self, chunks: trio.MemoryReceiveChannel[bytes], gone: trio.Event,
                 head: dict[str, Any]) -> None:
        self._chunks = chunks
        self._gone = gone
        self._head = head

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._chunks:
            yield chunk
        broken = self._head.get("broken")
        if broken is not None:
            raise httpx.ReadError(f"connection lost ({type(broken).__name__})")

    async def aclose(self) -> None:
        self._gone.set()
        self._chunks.close()


class StreamingASGITransport(httpx.ASGITransport):
    """``httpx.AsyncClient(transport=StreamingASGITransport(app, nursery))``; an
    ``httpx.ASGITransport`` (so it fits where one is expected) that streams."""

    def __init__(self, app: ASGIApp, nursery: trio.Nursery, *,
                 client: tuple[str, int] = CLIENT) -> None:
        super().__init__(app=app, client=client)
        self._app = app
        self._nursery = nursery
        self._client = client

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        scope: dict[str, Any] = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": request.method, "scheme": request.url.scheme,
            "path": request.url.path, "raw_path": request.url.raw_path.split(b"?")[0],
            "query_string": request.url.query, "root_path": "",
            "headers": [(k.lower(), v) for k, v in request.headers.raw],
            "client": self._client, "server": (request.url.host, request.url.port or 80),
        }
        out, chunks = trio.open_memory_channel[bytes](0)
        started = trio.Event()
        gone = trio.Event()
        head: dict[str, Any] = {}
        sent_request = False

        async def receive() -> MutableMapping[str, Any]:
            nonlocal sent_request
            if not sent_request:
                sent_request = True
                return {"type": "http.request", "body": body, "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                head["status"] = message["status"]
                head["headers"] = list(message.get("headers", []))
                started.set()
            elif message["type"] == "http.response.body" and not gone.is_set():
                data = message.get("body", b"")
                try:
                    if data:
                        await out.send(data)
                    if not message.get("more_body", False):
                        await out.aclose()
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    gone.set()  # the client closed the response: later sends go nowhere

        async def run() -> None:
            try:
                await self._app(scope, receive, send)
            except Exception as exc:  # as a server would: the connection just drops
                head["broken" if started.is_set() else "error"] = exc
            finally:
                out.close()
                started.set()

        self._nursery.start_soon(run)
        await started.wait()
        if "status" not in head:
            error = head.get("error")
            raise httpx.RemoteProtocolError(
                f"the app answered nothing ({type(error).__name__ if error else 'no response'})",
                request=request)
        return httpx.Response(head["status"], headers=head["headers"],
                              stream=_Body(chunks, gone, head), request=request)


__all__ = ["StreamingASGITransport"]
