"""Review (R2) of the voice session: the call ending, or the caller talking, at awkward moments.

Same rig as ``test_voice.py`` (real supervisor and journal, stand-in stream and STT, FakeTTS in
memory), on the autojump clock.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import trio
from test_voice import StubStream, StubSTT, placed, voice_rig

from voicecall_trio.errors import VoiceCallError
from voicecall_trio.stt.realtime import SpeechStarted


async def test_a_call_ended_while_its_tts_has_not_answered_does_not_hold_speak(
        tmp_path: Path, autojump_clock: Any, caplog: pytest.LogCaptureFixture) -> None:
    """``speak`` waits for the TTS's first audio; if the call ends meanwhile, the request
    belongs to a dead call: ``speak`` answers at once and nothing fails later."""
    caplog.set_level(logging.DEBUG)
    async with voice_rig(tmp_path) as (r, tts):
        call = await placed(r)
        record = call.record
        await tts.wait_for_requests(1)  # the greeting's, answered at once
        r.sup.stream_sessions.attach(record.call_id, StubStream("MZ1"))  # type: ignore[arg-type]
        tts.first_byte_delay = 8.0
        outcome: list[object] = []

        async def speak() -> None:
            begin = trio.current_time()
            try:
                await r.sup.speak(record.call_id, "Are you still there?")
                outcome.append("spoken")
            except VoiceCallError as exc:
                outcome.append(exc)
            outcome.append(trio.current_time() - begin)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(speak)
            await tts.wait_for_requests(2)
            await trio.sleep(1.0)
            await r.sup.end(record.call_id)
            await trio.sleep(10.0)  # past the TTS's answer
        assert call.record.terminal
        assert len(outcome) == 2 and isinstance(outcome[0], VoiceCallError), outcome
        assert outcome[1] < 2.0
    failures = [rec for rec in caplog.records
                if rec.levelno >= logging.ERROR or rec.exc_info is not None]
    assert failures == []


async def test_the_caller_talking_between_two_sentences_stops_the_next_and_the_reply(
        tmp_path: Path, autojump_clock: Any) -> None:
    """Barge-in at an utterance boundary: the first sentence has played, the second waits for
    its TTS. The caller's speech then is a barge-in too: the second never plays, and the reply
    that is still making sentences is interrupted."""
    async with voice_rig(tmp_path) as (r, tts):
        call = await placed(r)
        stream = StubStream("MZ1")
        voice = r.sup.stream_sessions.attach(call.record.call_id, stream)  # type: ignore[arg-type]
        assert voice is not None
        await call.wait_until(lambda rec: rec.state.value == "speaking")  # its first frame
        interrupted: list[float] = []
        r.sup.interrupt_reply = lambda c: interrupted.append(trio.current_time())  # type: ignore[method-assign]
        tts.first_byte_delay = 3.0
        async with trio.open_nursery() as nursery:
            nursery.start_soon(r.sup.speak, call.record.call_id, "And the second sentence.")
            await trio.sleep(1.1)  # the greeting (1 s of tone) has played out
            # the second sentence waits for its audio
            assert not voice.player.playing and voice.player.speaking
            StubSTT.made[0].on_event(SpeechStarted("item_1", 1500))
            assert interrupted == [trio.current_time()]
            await trio.sleep(5.0)  # past the second sentence's TTS answer
        bots = [e.text for e in call.record.transcript if e.speaker == "bot"]
        assert bots == [call.record.metadata["initialMessage"]]
        frames = len(stream.frames)
        await trio.sleep(1.0)
        assert len(stream.frames) == frames


async def test_a_barge_in_in_the_overlap_of_two_lines_marks_the_later_one(
        tmp_path: Path, autojump_clock: Any) -> None:
    """The next line's first frames leave (the lead) while the last ones of the greeting still
    play, so the next line is the transcript's latest: a barge-in then marks it, cut with
    nothing heard, rather than nothing at all."""
    async with voice_rig(tmp_path) as (r, _):
        call = await placed(r)
        stream = StubStream("MZ1")
        voice = r.sup.stream_sessions.attach(call.record.call_id, stream)  # type: ignore[arg-type]
        assert voice is not None
        await call.wait_until(lambda rec: rec.state.value == "speaking")  # its first frame
        begin = trio.current_time()
        await r.sup.speak(call.record.call_id, "And the second line.")
        await trio.sleep(begin + 0.97 - trio.current_time())  # the greeting's last 30 ms
        StubSTT.made[0].on_event(SpeechStarted("item_1", 900))
        record = await call.wait_until(lambda rec: rec.state.value == "listening")
        bots = [(e.text, e.interrupted, e.heard_ms) for e in record.transcript
                if e.speaker == "bot"]
        greeting = record.metadata["initialMessage"]
        assert bots[0][0] == greeting and bots[0][1] is not True
        assert bots[1][0] == "And the second line." and bots[1][1:] == (True, 0)


async def test_a_speak_flood_is_refused_past_the_queue_with_one_log_line(
        tmp_path: Path, autojump_clock: Any, caplog: pytest.LogCaptureFixture) -> None:
    """80 ``speak`` at once while the TTS is slow: 64 wait behind the one being read, the
    rest are refused at once with an error naming why; the log gets one line, not sixteen."""
    from voicecall_trio.errors import SpeechError
    from voicecall_trio.media.player import MAX_QUEUED

    caplog.set_level(logging.DEBUG)
    async with voice_rig(tmp_path) as (r, tts):
        call = await placed(r)
        await tts.wait_for_requests(1)
        tts.first_byte_delay = 5.0
        refused: list[str] = []

        async def speak(n: int) -> None:
            try:
                await r.sup.speak(call.record.call_id, f"Sentence number {n}.")
            except SpeechError as exc:
                refused.append(str(exc))

        async with trio.open_nursery() as nursery:
            for n in range(80):
                nursery.start_soon(speak, n)
        # (64 queued, and one more if the player took the first before the rest came)
        assert 80 - MAX_QUEUED - 1 <= len(refused) <= 80 - MAX_QUEUED
        assert all("queue full" in text for text in refused)
        assert not call.record.terminal
    lines = [rec for rec in caplog.records
             if rec.name == "voicecall.voice" and "speech failed" in rec.getMessage()]
    assert len(lines) == 1


async def test_a_third_stream_racing_the_first_two_keeps_one_stt_and_closes_the_older(
        tmp_path: Path, autojump_clock: Any) -> None:
    async with voice_rig(tmp_path) as (r, _):
        call = await placed(r)
        first, second, third = StubStream("MZ1"), StubStream("MZ2"), StubStream("MZ3")
        for stream in (first, second, third):  # in one go, before any close went out
            assert r.sup.stream_sessions.attach(call.record.call_id, stream) is call.voice  # type: ignore[arg-type]
        voice = call.voice
        assert voice is not None
        voice.stopped(first)  # the older ones end in any order: the newest one stays
        await trio.sleep(0.1)
        voice.stopped(second)
        assert (first.closed, second.closed, third.closed) == (1000, 1000, None)
        for stream in (first, second, third):
            voice.media(stream, stream.stream_id.encode() * 40)  # type: ignore[arg-type]
        assert len(StubSTT.made) == 1 and bytes(StubSTT.made[0].audio) == b"MZ3" * 40
        await trio.sleep(2.0)
        assert third.frames  # the greeting plays on the newest one


async def test_a_start_whose_token_is_another_call_s_is_refused(
        tmp_path: Path, autojump_clock: Any) -> None:
    """The token names call A but the carrier says the stream is for another of its calls
    (``start.callSid``): a token lifted from one call's TwiML must not take over another's
    audio. Refused (the route closes with 1008); the call's own stream is taken."""
    async with voice_rig(tmp_path) as (r, _):
        call = await placed(r)
        own = call.record.provider_call_id
        assert own
        stranger = StubStream("MZ9")
        stranger.carrier_call_id = "CA" + "9" * 32
        assert r.sup.stream_sessions.attach(call.record.call_id, stranger) is None  # type: ignore[arg-type]
        assert StubSTT.made == []  # no STT session was opened for it
        mine = StubStream("MZ1")
        mine.carrier_call_id = own
        assert r.sup.stream_sessions.attach(call.record.call_id, mine) is call.voice  # type: ignore[arg-type]


async def test_a_call_ended_while_its_greeting_is_synthesised_ends_without_a_warning(
        tmp_path: Path, autojump_clock: Any, caplog: pytest.LogCaptureFixture) -> None:
    from test_voice import CALLEE, GREETING

    caplog.set_level(logging.DEBUG)
    async with voice_rig(tmp_path) as (r, tts):
        tts.first_byte_delay = 5.0
        record = await r.sup.initiate(CALLEE, GREETING, "conversation")
        await tts.wait_for_requests(1)
        await r.sup.end(record.call_id)
        await trio.sleep(6.0)
    noisy = [rec.getMessage() for rec in caplog.records if rec.levelno >= logging.WARNING]
    assert noisy == []
