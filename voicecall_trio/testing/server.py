"""Run a carrier simulator: its ASGI app on loopback with an ephemeral port, or in memory."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from types import TracebackType
from typing import Any, Self

import httpx
import trio

MEMORY_PEER = ("203.0.113.10", 443)  # the carrier's address as an in-memory webhook shows it


async def serve_asgi(
    app: Any,
    stop: trio.Event,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run ``app`` until ``stop`` is set; reports its base URL (``http://127.0.0.1:PORT``)."""
    from hypercorn.config import Config
    from hypercorn.trio import serve

    config = Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("voicecall.testing.http")
    config.graceful_timeout = 0.5

    class _Ready:
        def started(self, binds: list[str]) -> None:
            task_status.started(binds[0])

    await serve(app, config, shutdown_trigger=stop.wait, task_status=_Ready())  # type: ignore[arg-type]


class BackgroundService:
    """A carrier simulator's life: serve ``self._asgi`` on loopback until ``stop()``.

    ``async with service:`` (or ``await nursery.start(service.run)``) runs it in a nursery of
    its own, so tests and benchmarks hold it like any resource. ``async with
    service.in_memory():`` runs it without a socket: the REST API is reached through
    ``service.transport()`` and webhooks go out through the injected client (give it a
    transport into the daemon's ASGI app), so nothing waits on the network and a test can run
    on the autojump clock. Subclasses set ``_asgi``,
    ``_host``, ``_port``, ``_stop`` and ``_http`` (an injected client, or None), and say how to
    make their own client and what to record once listening.
    """

    _asgi: Any
    _host: str
    _port: int
    _stop: trio.Event
    _http: httpx.AsyncClient | None
    _nursery: trio.Nursery | None
    _stack: AsyncExitStack | None = None

    def _new_http_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(timeout=10.0)

    def _listening(self, base_url: str) -> None:
        """Called with ``http://127.0.0.1:PORT`` once the server accepts connections."""

    async def run(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Serve until ``stop()``; reports the service itself once it listens."""
        own_http = self._http is None
        http = self._http or self._new_http_client()
        self._http = http
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                base_url: str = await nursery.start(
                    lambda task_status: serve_asgi(self._asgi, self._stop, host=self._host,
                                                   port=self._port, task_status=task_status)
                )
                self._listening(base_url)
                task_status.started(self)
                await self._stop.wait()
                nursery.cancel_scope.cancel()
        finally:
            self._nursery = None
            if own_http:
                with trio.CancelScope(shield=True):
                    await http.aclose()
                self._http = None

    def stop(self) -> None:
        self._stop.set()

    def transport(self) -> httpx.ASGITransport:
        """The REST API in memory, for the daemon's ``httpx.AsyncClient(transport=...)``."""
        return httpx.ASGITransport(app=self._asgi)

    @asynccontextmanager
    async def in_memory(self, base_url: str = "http://carrier.test", *, deliver_to: Any = None
                        ) -> AsyncIterator[Self]:
        """Run without listening; ``base_url`` stands for the server's address (any URL works
        through ``transport()``). ``deliver_to``: an ASGI app (the daemon's webhook endpoint)
        that every webhook is handed to in memory, whatever its URL; without it webhooks go
        out through the injected or a default client. Stops, as ``stop()`` does, when the
        block ends."""
        own_http = self._http is None
        http = self._http or (
            self._new_http_client() if deliver_to is None else httpx.AsyncClient(
                transport=httpx.ASGITransport(app=deliver_to, client=MEMORY_PEER), timeout=10.0))
        self._http = http
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self._listening(base_url)
                try:
                    yield self
                finally:
                    self._stop.set()
                    nursery.cancel_scope.cancel()
        finally:
            self._nursery = None
            if own_http:
                with trio.CancelScope(shield=True):
                    await http.aclose()
                self._http = None

    async def __aenter__(self) -> Self:
        stack = AsyncExitStack()
        nursery = await stack.enter_async_context(trio.open_nursery())
        try:
            await nursery.start(self.run)
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        self.stop()
        stack, self._stack = self._stack, None
        assert stack is not None
        return await stack.__aexit__(exc_type, exc, tb)
