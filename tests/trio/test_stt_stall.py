"""The pump's stall watch (``stt/pump.py``): no timeout scope per send, the keepalive sees it.

On the autojump clock with hand-made sockets: a send that starts while the watch sleeps is
still caught ``SEND_STALL_S`` after it began, and a slow but finishing send is not a stall.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
import trio.testing

from voicecall_trio.stt import pump
from voicecall_trio.stt.pump import RealtimeTranscriber


class _Socket:
    """session.update goes through; later sends take ``delays[i]`` seconds (inf: forever)."""

    def __init__(self, delays: list[float]) -> None:
        self.delays = delays
        self.sent: list[str] = []

    async def send_message(self, message: str) -> None:
        if self.sent:
            delay = self.delays.pop(0) if self.delays else 0.0
            await trio.sleep(delay) if delay != float("inf") else await trio.sleep_forever()
        self.sent.append(message)

    async def get_message(self) -> str:
        await trio.sleep_forever()
        raise AssertionError

    async def ping(self) -> None:
        pass


def transcriber(sockets: list[_Socket], opened: list[float]) -> RealtimeTranscriber:
    @asynccontextmanager
    async def connect(url: str, headers: dict[str, str]) -> AsyncIterator[Any]:
        opened.append(trio.current_time())
        yield sockets.pop(0)

    return RealtimeTranscriber(url="ws://stt.invalid/v1/realtime", api_key="k", model="m",
                               vad_threshold=0.5, silence_duration_ms=800,
                               on_event=lambda e: None, on_lost=lambda: None,
                               connect=connect, max_retries=1)


async def test_a_send_stalling_between_two_looks_is_caught_stall_s_after_it_began(
        autojump_clock: trio.testing.MockClock) -> None:
    opened: list[float] = []
    t = transcriber([_Socket([float("inf")])], opened)
    async with trio.open_nursery() as nursery:
        await nursery.start(t.run)
        await trio.sleep(3.0)  # the watch looked at t=0 and sleeps until 5
        start = trio.current_time()
        t.send_audio(b"\x01" * 160)
    # run returned by itself (max_retries=1): the stall ended the only session
    assert trio.current_time() - start == pump.SEND_STALL_S
    assert t.phase == "lost" and len(opened) == 1
    assert t.bytes_sent == 0 and t.bytes_dropped == 160  # kept for a gap, dropped on giving up


async def test_slow_sends_that_finish_are_not_stalls(
        autojump_clock: trio.testing.MockClock) -> None:
    opened: list[float] = []
    socket = _Socket([pump.SEND_STALL_S * 0.9] * 20)
    t = transcriber([socket], opened)
    async with trio.open_nursery() as nursery:
        await nursery.start(t.run)
        for _ in range(20):
            t.send_audio(b"\x02" * 160)
            await trio.sleep(pump.SEND_STALL_S * 0.9)
        await trio.sleep(pump.SEND_STALL_S)
        assert t.phase == "open" and t.sessions_opened == 1
        assert t.appends_sent == 20 and t.bytes_sent == 20 * 160
        nursery.cancel_scope.cancel()
