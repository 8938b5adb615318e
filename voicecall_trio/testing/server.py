"""Serve an ASGI app on loopback with an ephemeral port, for simulators and tests."""

from __future__ import annotations

import logging
from typing import Any

import trio


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
