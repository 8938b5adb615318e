"""The tunnel supervisor on the autojump clock, with scripted tunnels (no processes)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import trio

from voicecall_trio.errors import TunnelError
from voicecall_trio.tunnel.supervisor import TunnelSupervisor


class ScriptedTunnel:
    """Run N: report ``urls[N]`` (None: fail before a URL), stay up ``lasts[N]`` seconds,
    then die with ``TunnelError``. Records when each run started."""

    def __init__(self, urls: list[str | None], lasts: list[float]) -> None:
        self.urls, self.lasts = urls, lasts
        self.started_at: list[float] = []

    async def open(self, report: Callable[[str], None]) -> None:
        run = len(self.started_at)
        self.started_at.append(trio.current_time())
        url = self.urls[min(run, len(self.urls) - 1)]
        if url is None:
            raise TunnelError(f"run {run} failed")
        report(url)
        await trio.sleep(self.lasts[min(run, len(self.lasts) - 1)])
        raise TunnelError(f"run {run} died")


async def test_restarts_with_backoff_and_reports_each_new_url(autojump_clock: Any) -> None:
    tunnel = ScriptedTunnel(["https://a", None, None, "https://b", "https://b", "https://c"],
                            [5, 0, 0, 100, 5, 1000])
    seen: list[str] = []
    supervisor = TunnelSupervisor(tunnel, setting='tunnel.provider "ngrok"', on_url=seen.append)
    async with trio.open_nursery() as nursery:
        t0 = trio.current_time()
        assert await nursery.start(supervisor.run) == "https://a"
        assert seen == ["https://a"]
        assert await supervisor.wait_url_change("https://a") == "https://b"
        assert await supervisor.wait_url_change("https://b") == "https://c"
        nursery.cancel_scope.cancel()
    offsets = [round(t - t0, 3) for t in tunnel.started_at]
    # a: up 5 s, dies -> 1 s; two failures -> 2 s, 4 s; b up 100 s (healthy) -> 1 s again;
    # b again (same URL: not reported twice) up 5 s -> 2 s; then c
    assert offsets == [0, 6, 8, 12, 113, 120]
    assert seen == ["https://a", "https://b", "https://c"]
    assert supervisor.restarts == 5


async def test_a_failure_before_the_first_url_is_a_start_up_error(autojump_clock: Any) -> None:
    supervisor = TunnelSupervisor(ScriptedTunnel([None], [0]),
                                  setting='tunnel.provider "ngrok"', on_url=lambda url: None)
    with pytest.raises(TunnelError) as caught:
        await supervisor.run()
    assert caught.value.message == 'tunnel.provider "ngrok": run 0 failed'


async def test_the_delay_is_capped(autojump_clock: Any) -> None:
    tunnel = ScriptedTunnel(["https://a"] + [None] * 12 + ["https://z"], [0])
    supervisor = TunnelSupervisor(tunnel, setting="x", on_url=lambda url: None)
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        await supervisor.wait_url_change("https://a")
        nursery.cancel_scope.cancel()
    gaps = [round(b - a) for a, b in zip(tunnel.started_at, tunnel.started_at[1:], strict=False)]
    assert gaps == [1, 2, 4, 8, 16, 32, 60, 60, 60, 60, 60, 60, 60]
