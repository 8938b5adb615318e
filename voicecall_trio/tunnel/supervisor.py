"""The tunnel supervisor: one task in the daemon's nursery that owns the tunnel.

It starts the tunnel, reports the first public URL through ``task_status.started(url)``
(after ``on_url`` told the carrier, so no callback is ever built on a stale URL), and when
the tunnel dies it logs why and starts it again after a backoff (``backoff.py``). Each new
URL goes to ``on_url`` (the provider's ``set_public_url``: Twilio signatures are then checked
against it and new callbacks carry it). A tunnel that fails before its first URL is a
start-up failure: ``TunnelError`` naming the config key and the cause, and ``serve`` exits 1.
Cancellation stops it: each tunnel cleans up after itself (process stopped, funnel off).

While a restart is pending the last URL stays in force: webhooks cannot arrive through a
dead tunnel anyway, and checking signatures against a URL no tunnel has is the safe side.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

import trio

from ..errors import TunnelError
from .backoff import failures_after, restart_delay

log = logging.getLogger("voicecall.tunnel")


class Tunnel(Protocol):
    async def open(self, report: Callable[[str], None]) -> None:
        """Bring the tunnel up, ``report`` its URL, keep it up; raise ``TunnelError`` when it
        is gone (or cannot start). Stops whatever it started when cancelled."""
        ...


class TunnelSupervisor:
    """Keeps one ``Tunnel`` up; ``setting`` names it in messages (``tunnel.provider "ngrok"``)."""

    def __init__(self, tunnel: Tunnel, *, setting: str, on_url: Callable[[str], None]) -> None:
        self.tunnel = tunnel
        self.setting = setting
        self._on_url = on_url
        self.url: str | None = None
        self.restarts = 0
        self._changed = trio.Event()

    async def wait_url_change(self, old: str | None) -> str:
        """The URL in force once it is no longer ``old`` (tests and tools wait on this)."""
        while self.url is None or self.url == old:
            await self._changed.wait()
        return self.url

    async def run(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        reported = False
        failures = 0

        def report(url: str) -> None:
            nonlocal reported
            if url != self.url:
                self.url = url
                self._on_url(url)
                self._changed.set()
                self._changed = trio.Event()
                log.info("tunnel up (%s): public URL %s", self.setting, url)
            if not reported:
                reported = True
                task_status.started(url)

        while True:
            began = trio.current_time()
            try:
                await self.tunnel.open(report)
                cause = "the tunnel ended"
            except TunnelError as exc:
                cause = exc.message
            if not reported:
                raise TunnelError(f"{self.setting}: {cause}")
            failures = failures_after(failures, trio.current_time() - began)
            delay = restart_delay(failures)
            self.restarts += 1
            log.warning("tunnel down (%s): %s; restarting in %g s", self.setting, cause, delay)
            await trio.sleep(delay)
