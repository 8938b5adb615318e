"""Run a whole daemon inside the caller's trio run: real socket, real HTTP server, port 0."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import trio

from ..config import VoiceCallConfig, build_config
from ..daemon import DaemonHandle, run_daemon
from ..rpc.aclient import TrioClient


@dataclass
class RunningDaemon:
    handle: DaemonHandle
    client: TrioClient
    store: Path

    @property
    def config(self) -> VoiceCallConfig:
        return self.handle.config

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` of the webhook server."""
        return self.handle.http_binds[0]

    @property
    def webhook_url(self) -> str:
        return self.base_url + self.handle.config.serve.path

    async def rpc(self, method: str, params: dict[str, Any] | None = None) -> Any:
        return await self.client.call(method, params)

    def stop(self) -> None:
        self.handle.stop()


def daemon_config(overrides: dict[str, Any] | None = None, *, store: Path) -> VoiceCallConfig:
    doc: dict[str, Any] = {"store": str(store), "serve": {"port": 0}}
    for key, value in (overrides or {}).items():
        if isinstance(value, dict) and isinstance(doc.get(key), dict):
            doc[key] = {**doc[key], **value}
        else:
            doc[key] = value
    return build_config(doc, {})


@asynccontextmanager
async def running_daemon(
    overrides: dict[str, Any] | None = None,
    *,
    store: Path | None = None,
    http_client: httpx.AsyncClient | None = None,
    environ: Mapping[str, str] | None = None,
) -> AsyncIterator[RunningDaemon]:
    """Start a daemon (config = defaults + ``overrides``), yield it, stop it gracefully.

    ``environ`` is the daemon's environment (default empty: nothing leaks in from the test's);
    a tunnel test passes one whose ``PATH`` holds its fake ``ngrok`` or ``tailscale``."""
    directory = store or Path(tempfile.mkdtemp(prefix="vc"))
    config = daemon_config(overrides, store=directory)
    async with trio.open_nursery() as nursery:
        handle: DaemonHandle = await nursery.start(
            lambda task_status: run_daemon(config, environ=dict(environ or {}),
                                           http_client=http_client, handle_signals=False,
                                           task_status=task_status)
        )
        client = await TrioClient.connect(handle.socket_path)
        nursery.start_soon(client.run)
        try:
            yield RunningDaemon(handle, client, directory)
        finally:
            await client.aclose()
            handle.stop()
