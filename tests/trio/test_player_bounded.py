"""The player's timer per frame: only for sinks that do not bound their own sends."""

from __future__ import annotations

import math
from typing import Any

import pytest
import trio

from voicecall_trio.media.player import SEND_TIMEOUT_S, Player, Utterance


class Sink:
    def __init__(self, bounded: bool) -> None:
        self.send_bounded = bounded
        self.deadlines: list[float] = []  # the effective deadline each frame was sent under
        self.at: list[float] = []

    async def send_audio(self, frame: bytes) -> None:
        self.deadlines.append(trio.current_effective_deadline() - trio.current_time())
        self.at.append(trio.current_time())

    async def send_mark(self, name: str) -> None:
        pass

    async def send_clear(self) -> None:
        pass


@pytest.mark.parametrize("bounded", [True, False])
async def test_frames_get_a_timer_only_from_an_unbounded_sink(autojump_clock: Any,
                                                              bounded: bool) -> None:
    sink = Sink(bounded)
    player = Player(on_started=lambda u: None, on_spoken=lambda u: None)
    player.attach(sink)
    send, receive = trio.open_memory_channel[bytes](10)
    send.send_nowait(b"\xff" * 160 * 10)
    send.close()
    async with trio.open_nursery() as nursery:
        await nursery.start(player.run)
        start = trio.current_time()
        player.enqueue(Utterance("bot:1", "hello", receive))
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    expected = math.inf if bounded else SEND_TIMEOUT_S
    assert sink.deadlines == [pytest.approx(expected)] * 10
    # the pacing is the same either way: three frames of lead at once, then one per 20 ms
    assert sink.at == [pytest.approx(start + max(0, n - 3) * 0.02) for n in range(10)]
