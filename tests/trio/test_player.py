"""The player on the autojump clock: paced 160-byte frames, marks, echoes, clear, sink changes."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio
import trio.testing

from voicecall_trio.errors import SpeechError
from voicecall_trio.media.framer import FRAME_BYTES
from voicecall_trio.media.pacing import FRAME_S, LEAD_S
from voicecall_trio.media.player import MAX_QUEUED, SEND_TIMEOUT_S, Player, Utterance


class Sink:
    """A media stream that records what it was sent, and when (on the trio clock)."""

    def __init__(self, name: str = "s1") -> None:
        self.name = name
        self.sent: list[tuple[float, str, Any]] = []
        self.broken = False
        self.stuck = False
        self.on_send: Callable[[str, Any], None] | None = None

    async def _record(self, kind: str, value: Any) -> None:
        if self.broken:
            raise trio.BrokenResourceError("socket gone")
        if self.stuck:
            await trio.sleep_forever()  # a peer that stopped reading
        self.sent.append((trio.current_time(), kind, value))
        if self.on_send is not None:
            self.on_send(kind, value)

    async def send_audio(self, frame: bytes) -> None:
        await self._record("media", frame)

    async def send_mark(self, name: str) -> None:
        await self._record("mark", name)

    async def send_clear(self) -> None:
        await self._record("clear", None)

    def kinds(self) -> list[str]:
        return [kind for _, kind, _ in self.sent]

    def frames(self) -> list[tuple[float, bytes]]:
        return [(at, value) for at, kind, value in self.sent if kind == "media"]


@dataclass
class Rig:
    player: Player
    nursery: trio.Nursery
    started: list[tuple[float, str]] = field(default_factory=list)
    spoken: list[tuple[float, str]] = field(default_factory=list)
    count: int = 0

    def say(self, audio: bytes | None, *, chunk: int = 4000, gap: float = 0.0,
            text: str = "hello") -> tuple[Utterance, trio.MemorySendChannel[bytes]]:
        """Queue an utterance; ``audio`` is written by a producer task (None: the test writes)."""
        self.count += 1
        send, receive = trio.open_memory_channel[bytes](8)
        utterance = Utterance(id=f"bot:{self.count:032x}", text=text, audio=receive)
        self.player.enqueue(utterance)
        if audio is not None:
            self.nursery.start_soon(produce, send, audio, chunk, gap)
        return utterance, send


async def produce(send: trio.MemorySendChannel[bytes], audio: bytes, chunk: int,
                  gap: float) -> None:
    async with send:
        for i in range(0, len(audio), chunk):
            if gap and i:
                await trio.sleep(gap)
            try:
                await send.send(audio[i:i + chunk])
            except trio.BrokenResourceError:
                return


@asynccontextmanager
async def rig(sink: Sink | None = None, **kwargs: Any) -> AsyncIterator[Rig]:
    async with trio.open_nursery() as nursery:
        holder: list[Rig] = []
        player = Player(on_started=lambda u: holder[0].started.append((trio.current_time(), u.id)),
                        on_spoken=lambda u: holder[0].spoken.append((trio.current_time(), u.id)),
                        **kwargs)
        holder.append(Rig(player, nursery))
        await nursery.start(player.run)
        if sink is not None:
            player.attach(sink)
        yield holder[0]
        nursery.cancel_scope.cancel()


def audio(frames: float, byte: int = 0x55) -> bytes:
    return bytes([byte]) * round(frames * FRAME_BYTES)


async def test_frames_are_160_bytes_paced_with_a_padded_last_frame_then_a_mark(
        autojump_clock: trio.testing.MockClock) -> None:
    sink = Sink()
    async with rig(sink) as r:
        start = trio.current_time()
        u, _ = r.say(audio(49.5), chunk=333)  # odd chunking, 50 frames, the last half silence
        await trio.sleep(3)
        frames = sink.frames()
        assert len(frames) == 50 and all(len(f) == FRAME_BYTES for _, f in frames)
        assert frames[-1][1] == b"\x55" * 80 + b"\xff" * 80
        for n, (at, _) in enumerate(frames):  # due at start + n*20 ms, sent at most the lead early
            assert at == pytest.approx(start + max(0.0, n * FRAME_S - LEAD_S), abs=1e-9)
        assert sink.kinds() == ["media"] * 50 + ["mark"]
        assert sink.sent[-1][2] == u.id and sink.sent[-1][0] == pytest.approx(frames[-1][0])
        assert r.started == [(start, u.id)]
        assert r.spoken == [] or r.spoken[0][0] >= start + 1.0 + 2.0  # no echo: the grace


async def test_the_echo_counts_the_utterance_as_spoken_once(
        autojump_clock: trio.testing.MockClock) -> None:
    sink = Sink()
    async with rig(sink) as r:
        u, _ = r.say(audio(10))
        await trio.sleep(0.1)
        assert r.player.playing
        r.player.mark_echoed("bot:unknown")
        r.player.mark_echoed(u.id)  # early (mark not sent yet): not counted
        assert r.spoken == []
        await trio.sleep(0.2)
        assert sink.kinds()[-1] == "mark"
        r.player.mark_echoed(u.id)
        assert [name for _, name in r.spoken] == [u.id]
        r.player.mark_echoed(u.id)
        await trio.sleep(5)  # and the grace timer does not fire for it
        assert [name for _, name in r.spoken] == [u.id]
        assert not r.player.playing


async def test_a_missing_echo_counts_as_spoken_after_length_plus_grace_with_one_log_line(
        autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="voicecall.media.player")
    sink = Sink()
    async with rig(sink, mark_grace_s=2.0) as r:
        start = trio.current_time()
        first, _ = r.say(audio(25))  # 0.5 s
        second, _ = r.say(audio(25))
        await trio.sleep(10)
        assert [name for _, name in r.spoken] == [first.id, second.id]
        assert r.spoken[0][0] == pytest.approx(start + 0.5 + 2.0)
        assert r.spoken[1][0] == pytest.approx(start + 1.0 + 2.0)
    warnings = [rec for rec in caplog.records if rec.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "no mark echo" in warnings[0].getMessage()


async def test_utterances_play_in_order_back_to_back(
        autojump_clock: trio.testing.MockClock) -> None:
    sink = Sink()
    async with rig(sink) as r:
        start = trio.current_time()
        one, _ = r.say(audio(5))
        two, _ = r.say(audio(5, 0x66))
        await trio.sleep(1)
        assert sink.kinds() == ["media"] * 5 + ["mark"] + ["media"] * 5 + ["mark"]
        assert [s[2] for s in sink.sent if s[1] == "mark"] == [one.id, two.id]
        times = [at for at, _ in sink.frames()]
        assert times == pytest.approx([start + max(0.0, n * FRAME_S - LEAD_S) for n in range(10)])
        assert [name for _, name in r.started] == [one.id, two.id]


async def test_clear_sends_clear_drops_the_queue_and_reports_what_was_heard(
        autojump_clock: trio.testing.MockClock) -> None:
    sink = Sink()
    async with rig(sink) as r:
        start = trio.current_time()
        playing, _ = r.say(audio(50))  # 1 s
        _, queued_send = r.say(None)
        await trio.sleep(0.51)
        sent_before = len(sink.frames())
        assert sent_before == 29  # due by 0.51 s plus the 60 ms lead
        result = r.player.clear()
        assert result == (playing, 510)  # 29 frames = 580 ms sent, 70 ms still ahead
        with pytest.raises(trio.BrokenResourceError):
            queued_send.send_nowait(b"x")  # the queued one's producer is told to stop
        await trio.sleep(5)
        clears = [at for at, kind, _ in sink.sent if kind == "clear"]
        assert clears == [start + 0.51]  # at once, not after the frame's sleep
        assert len(sink.frames()) == sent_before and sink.kinds().count("mark") == 0
        assert r.spoken == [] and not r.player.playing
        assert [name for _, name in r.started] == [playing.id]
        assert r.player.clear() is None  # nothing playing: nothing happens
        assert sink.kinds().count("clear") == 1
        # the player goes on with what is queued next, on a new run
        after, _ = r.say(audio(3))
        await trio.sleep(0.1)
        assert [s[2] for s in sink.sent if s[1] == "mark"] == [after.id]
        assert sink.frames()[-3][0] == trio.current_time() - 0.1


async def test_a_cleared_utterance_s_echo_is_ignored(autojump_clock: trio.testing.MockClock
                                                      ) -> None:
    sink = Sink()
    async with rig(sink) as r:
        u, _ = r.say(audio(5))  # all five frames and the mark are out by 20 ms
        await trio.sleep(0.03)
        assert sink.kinds() == ["media"] * 5 + ["mark"] and r.player.playing
        utterance, heard = r.player.clear() or (None, -1)
        assert utterance is u and heard == 30  # 100 ms sent, 70 ms still ahead
        r.player.mark_echoed(u.id)
        await trio.sleep(5)
        assert r.spoken == []


async def test_clear_keeps_an_utterance_that_was_heard_whole(
        autojump_clock: trio.testing.MockClock) -> None:
    sink = Sink()
    async with rig(sink) as r:
        first, _ = r.say(audio(5))  # plays 0..0.1
        second, _ = r.say(audio(50))  # plays 0.1..1.1
        await trio.sleep(0.3)
        assert r.player.clear() == (second, 200)
        r.player.mark_echoed(first.id)  # its echo was on its way: still counts
        assert [name for _, name in r.spoken] == [first.id]


async def test_no_sink_waits_then_a_new_sink_continues(autojump_clock: trio.testing.MockClock
                                                       ) -> None:
    old, new = Sink("old"), Sink("new")
    async with rig(old) as r:
        u, _ = r.say(audio(20))
        await trio.sleep(0.1)
        r.player.attach(None)
        sent_on_old = len(old.frames())
        await trio.sleep(2)  # no stream: nothing is sent, the audio waits
        assert len(old.frames()) == sent_on_old < 20 and r.spoken == []
        assert r.player.playing  # half-way through: a barge-in would still clear it
        resumed = trio.current_time()
        r.player.attach(new)
        await trio.sleep(1)
        assert len(old.frames()) + len(new.frames()) == 20
        assert new.kinds()[-1] == "mark" and new.sent[-1][2] == u.id
        first_new = new.frames()[0][0]
        assert first_new == resumed  # a new run: no burst, from the lead on
        times = [at for at, _ in new.frames()]
        assert times == pytest.approx([resumed + max(0.0, n * FRAME_S - LEAD_S)
                                       for n in range(len(times))])


async def test_audio_before_any_sink_buffers(autojump_clock: trio.testing.MockClock) -> None:
    async with rig(None) as r:
        u, _ = r.say(audio(3))
        await trio.sleep(1)
        assert r.started == []
        sink = Sink()
        r.player.attach(sink)
        await trio.sleep(0.1)
        assert sink.kinds() == ["media"] * 3 + ["mark"] and r.started[0][1] == u.id


async def test_a_sink_that_raises_does_not_crash_the_player(
        autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture) -> None:
    broken, good = Sink("broken"), Sink("good")
    async with rig(broken) as r:
        u, _ = r.say(audio(10))
        await trio.sleep(0.05)
        broken.broken = True  # the socket goes away under the player
        await trio.sleep(1)
        assert len(broken.frames()) == 6 and r.spoken == []  # sent by 50 ms, then it waits
        r.player.attach(good)
        await trio.sleep(1)
        total = len(broken.frames()) + len(good.frames())
        assert total == 10 and good.kinds()[-1] == "mark"
        good.broken = True
        r.player.mark_echoed(u.id)
        assert [name for _, name in r.spoken] == [u.id]
        r.say(audio(2))  # fails on send again: waits, never raises
        await trio.sleep(1)
        assert r.started[-1][1] == u.id
    failures = [rec for rec in caplog.records if "send failed" in rec.getMessage()]
    assert len(failures) == 2  # one line per failing stream, not per frame


async def test_slow_audio_re_bases_instead_of_bursting(autojump_clock: trio.testing.MockClock
                                                       ) -> None:
    sink = Sink()
    async with rig(sink) as r:
        start = trio.current_time()
        r.say(audio(20), chunk=10 * FRAME_BYTES, gap=1.0)  # 200 ms of audio, then a 1 s wait
        await trio.sleep(2)
        times = [at for at, _ in sink.frames()]
        assert times[10] == start + 1.0  # the stall: a new run, not a catch-up burst
        assert times[10:14] == [start + 1.0] * 4 and times[14] == pytest.approx(start + 1.02)


async def test_an_empty_utterance_is_spoken_at_once_without_a_mark(
        autojump_clock: trio.testing.MockClock) -> None:
    sink = Sink()
    async with rig(sink) as r:
        u, _ = r.say(b"")
        await trio.sleep(0.1)
        assert sink.sent == [] and r.started == [] and [n for _, n in r.spoken] == [u.id]


async def test_the_queue_is_bounded(autojump_clock: trio.testing.MockClock) -> None:
    async with rig(None) as r:
        r.say(audio(1))  # this one is taken off the queue and waits for a sink
        await trio.testing.wait_all_tasks_blocked()
        sends = [r.say(None)[1] for _ in range(MAX_QUEUED)]
        send, receive = trio.open_memory_channel[bytes](1)
        with pytest.raises(SpeechError, match="queue full"):
            r.player.enqueue(Utterance(id="bot:x", text="x", audio=receive))
        with pytest.raises(trio.BrokenResourceError):
            send.send_nowait(b"x")
        assert all(s.statistics().open_receive_channels == 1 for s in sends)


async def test_cancelling_the_player_closes_the_producers_channels(
        autojump_clock: trio.testing.MockClock) -> None:
    async with rig(None) as r:
        _, playing = r.say(None)
        _, queued = r.say(None)
        await trio.testing.wait_all_tasks_blocked()
    with pytest.raises(trio.BrokenResourceError):
        playing.send_nowait(b"x")
    with pytest.raises(trio.BrokenResourceError):
        queued.send_nowait(b"x")


async def test_a_takeover_during_a_send_resends_the_frame_on_the_new_stream(
        autojump_clock: trio.testing.MockClock) -> None:
    old, new = Sink("old"), Sink("new")
    async with rig(old) as r:
        swapped: list[bool] = []

        def swap(kind: str, value: Any) -> None:
            if kind == "media" and not swapped:
                swapped.append(True)
                r.player.attach(new)

        old.on_send = swap
        r.say(audio(3))
        await trio.sleep(0.5)
        assert len(old.frames()) == 1 and len(new.frames()) == 3
        assert new.frames()[0][1] == old.frames()[0][1]



async def test_a_sink_that_stops_taking_messages_is_given_up_after_the_send_timeout(
        autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture) -> None:
    stuck, good = Sink("stuck"), Sink("good")
    async with rig(stuck) as r:
        start = trio.current_time()
        r.say(audio(10))
        await trio.sleep(0.05)
        stuck.stuck = True
        await trio.sleep(SEND_TIMEOUT_S + 1)
        assert len(stuck.frames()) == 6
        r.player.attach(good)
        await trio.sleep(1)
        assert len(good.frames()) == 4 and good.kinds()[-1] == "mark"
        assert good.frames()[0][0] == pytest.approx(start + 0.05 + SEND_TIMEOUT_S + 1)
    assert any("send failed (TooSlowError)" in rec.getMessage() for rec in caplog.records)


async def test_idle_means_nothing_playing_queued_or_awaiting_its_echo(
        autojump_clock: trio.testing.MockClock) -> None:
    """What ``continue`` waits for before it listens: the echo, or a clear."""
    sink = Sink()
    async with rig(sink) as r:
        assert r.player.idle
        u, _ = r.say(audio(10))
        r.say(audio(10))
        assert not r.player.idle  # queued
        await trio.sleep(0.5)  # both sent, marks out, no echo yet
        assert not r.player.idle and sink.kinds().count("mark") == 2
        r.player.mark_echoed(u.id)
        assert not r.player.idle
        r.player.mark_echoed(f"bot:{2:032x}")
        assert r.player.idle
        r.say(audio(100))
        await trio.sleep(0.2)
        assert r.player.clear() is not None
        assert r.player.idle  # cut: at once, not when the player task next runs
        no_sink = Player(on_started=lambda u: None, on_spoken=lambda u: None)
        send, receive = trio.open_memory_channel[bytes](1)
        no_sink.enqueue(Utterance(id="bot:x", text="x", audio=receive))
        assert not no_sink.idle
        send.close()


# -- review (R2): the caller talks in the gap between two utterances ---------------------------


async def test_clear_between_two_utterances_drops_the_next_one(
        autojump_clock: trio.testing.MockClock) -> None:
    """A reply spoken sentence by sentence has gaps (the next sentence's TTS has not answered
    yet). The caller talking in one is a barge-in too: the next sentence must not start."""
    sink = Sink()
    async with rig(sink) as r:
        one, _ = r.say(audio(5))  # plays 0..0.1
        _, two_send = r.say(None)  # its TTS has not answered yet
        await trio.sleep(0.3)
        assert not r.player.playing and r.player.speaking
        assert r.player.clear() is None  # nothing was cut: nothing to report
        with pytest.raises(trio.BrokenResourceError):
            two_send.send_nowait(b"x")  # its producer is told to stop
        assert not r.player.speaking
        await trio.sleep(1)
        assert [name for _, name in r.started] == [one.id]
        after, _ = r.say(audio(3))  # the player goes on with what comes next
        await trio.sleep(0.2)
        assert [name for _, name in r.started] == [one.id, after.id]


async def test_an_utterance_waiting_for_its_first_audio_alone_is_not_speaking(
        autojump_clock: trio.testing.MockClock) -> None:
    """The greeting synthesised while the phone rings: the callee's "Hello?" before any of it
    played is no barge-in (nothing of this run was heard)."""
    sink = Sink()
    async with rig(sink) as r:
        _, send = r.say(None)
        await trio.sleep(0.3)
        assert not r.player.playing and not r.player.speaking
        send.send_nowait(audio(5))
        await trio.sleep(0.05)
        assert r.player.speaking
        send.close()
        await trio.sleep(0.5)
        assert not r.player.speaking


async def test_clear_in_the_overlap_of_two_utterances_reports_the_one_started_last(
        autojump_clock: trio.testing.MockClock) -> None:
    """With the lead, the next utterance's first frames leave while the last ones of the one
    before still play; its line is then the transcript's latest. A barge-in in that window
    cuts it (heard: nothing yet), and that is the one to report."""
    sink = Sink()
    async with rig(sink) as r:
        first, _ = r.say(audio(5))  # plays 0..0.1
        second, _ = r.say(audio(50))  # its frames leave from 0.04 on
        await trio.sleep(0.07)
        assert [name for _, name in r.started] == [first.id, second.id]
        assert r.player.clear() == (second, 0)
        r.player.mark_echoed(first.id)  # its last 30 ms were cleared too: it is not spoken
        r.player.mark_echoed(second.id)
        await trio.sleep(5)
        assert r.spoken == []
