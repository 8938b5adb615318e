"""The per-call voice session on the autojump clock: stream, STT and playback joined.

The supervisor and journal are real (the mock carrier places the call); the media stream and
the STT are stand-ins that record what the session does, and the TTS is ``FakeTTS`` in memory.
What is checked here is the joining: which events reach the supervisor, in what order, and
what goes out on the stream; the parts themselves have their own tests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from rigs import Rig, rig

from voicecall_trio.call import LiveCall
from voicecall_trio.errors import SpeechError
from voicecall_trio.model import CallState
from voicecall_trio.stt.realtime import Final, Interim, SpeechStarted, SttEvent
from voicecall_trio.supervisor import Supervisor
from voicecall_trio.testing.tts import FakeTTS
from voicecall_trio.tts.openai import OpenAISpeech
from voicecall_trio.voice import VoiceSession

CALLEE = "+15555550123"
GREETING = "Hello, this is your assistant calling about the table."


class StubStream:
    """A media stream that records what the session sends."""

    def __init__(self, sid: str) -> None:
        self.stream_id = sid
        self.carrier_call_id = ""  # (may be ""; a non-empty one must be the call's own)
        self.frames: list[tuple[float, bytes]] = []
        self.marks: list[str] = []
        self.clears: list[float] = []
        self.closed: int | None = None

    async def send_audio(self, frame: bytes) -> None:
        self.frames.append((trio.current_time(), frame))

    async def send_mark(self, name: str) -> None:
        self.marks.append(name)

    async def send_clear(self) -> None:
        self.clears.append(trio.current_time())

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.closed = code


class StubSTT:
    """A transcriber that keeps the audio and lets the test speak for the STT."""

    made: list[StubSTT] = []

    def __init__(self, on_event: Callable[[SttEvent], None], on_lost: Callable[[], None]) -> None:
        self.on_event = on_event
        self.on_lost = on_lost
        self.audio = bytearray()
        StubSTT.made.append(self)

    def send_audio(self, ulaw: bytes) -> None:
        self.audio += ulaw

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        task_status.started()
        await trio.sleep_forever()


@asynccontextmanager
async def voice_rig(tmp_path: Path) -> AsyncIterator[tuple[Rig, FakeTTS]]:
    StubSTT.made = []
    async with FakeTTS().in_memory("http://tts.test") as tts, \
            httpx.AsyncClient(transport=tts.transport()) as http:
        speech = OpenAISpeech(http, api_key="sk-test", base_url="http://tts.test/v1")

        def factory(sup: Supervisor, call: LiveCall) -> VoiceSession | None:
            return VoiceSession(sup, call, speech=speech, transcriber=StubSTT, barge_in=True)

        async with rig(tmp_path) as r:
            r.sup.voice_factory = factory
            yield r, tts


async def placed(r: Rig) -> LiveCall:
    record = await r.sup.initiate(CALLEE, GREETING, "conversation")
    call = r.sup.live[record.call_id]
    await call.wait_until(lambda rec: rec.state.connected)
    assert call.voice is not None
    return call


async def echo_marks(stream: StubStream, call: LiveCall, seen: int = 0) -> None:
    while True:
        await trio.sleep(0.01)
        assert call.voice is not None
        for name in stream.marks[seen:]:
            call.voice.mark(stream, name)  # type: ignore[arg-type]
        seen = len(stream.marks)


async def test_the_greeting_is_synthesised_while_ringing_and_played_on_the_stream(
        tmp_path: Path, autojump_clock: Any) -> None:
    async with voice_rig(tmp_path) as (r, tts):
        record = await r.sup.initiate(CALLEE, GREETING, "conversation")
        requests = await tts.wait_for_requests(1)  # asked for before the callee answered
        assert requests[0].json["input"] == GREETING
        call = r.sup.live[record.call_id]
        await call.wait_until(lambda rec: rec.state.connected)
        assert call.voice is not None
        stream = StubStream("MZ1")
        t0 = trio.current_time()
        assert r.sup.stream_sessions.attach(record.call_id, stream) is call.voice  # type: ignore[arg-type]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(echo_marks, stream, call)
            done = await call.wait_until(lambda rec: rec.spoken >= 1)
            nursery.cancel_scope.cancel()
        assert stream.frames[0][0] - t0 < 0.1  # the first frame left at once
        assert {len(frame) for _, frame in stream.frames} == {160}
        gaps = [b[0] - a[0] for a, b in zip(stream.frames[3:], stream.frames[4:], strict=False)]
        assert gaps and max(gaps) == pytest.approx(0.02, abs=0.002)
        assert stream.marks and stream.marks[0].startswith("bot:")
        assert [e.text for e in done.transcript if e.speaker == "bot"] == [GREETING]
        assert done.state is CallState.LISTENING
        assert len(StubSTT.made) == 1  # one STT session, opened by the stream


async def test_transcripts_reach_continue_and_interims_are_not_journaled(
        tmp_path: Path, autojump_clock: Any) -> None:
    async with voice_rig(tmp_path) as (r, _):
        call = await placed(r)
        stream = StubStream("MZ1")
        voice = r.sup.stream_sessions.attach(call.record.call_id, stream)  # type: ignore[arg-type]
        assert voice is not None
        voice.media(stream, b"\x7f" * 160)  # type: ignore[arg-type]
        assert bytes(StubSTT.made[0].audio) == b"\x7f" * 160
        events = r.sup.subscribe()

        async def caller_speaks() -> None:
            await trio.sleep(0.5)
            StubSTT.made[0].on_event(Interim("item_1", "Yes,"))
            StubSTT.made[0].on_event(Final("item_1", "Yes, eight works."))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(echo_marks, stream, call)
            nursery.start_soon(caller_speaks)
            answer = await r.sup.continue_call(call.record.call_id, "Is eight fine?")
            nursery.cancel_scope.cancel()
        assert answer == "Yes, eight works."
        interims = []
        while True:
            try:
                note = events.receive_nowait()
            except trio.WouldBlock:
                break
            if note["type"] == "call.speech" and note.get("isFinal") is False:
                interims.append(note["text"])
        assert interims == ["Yes,"]
        lines = (r.path).read_text()
        assert '"Yes,"' not in lines.replace('"Yes, eight works."', "")


async def test_barge_in_clears_and_marks_what_was_heard(tmp_path: Path,
                                                        autojump_clock: Any) -> None:
    async with voice_rig(tmp_path) as (r, _):
        call = await placed(r)
        stream = StubStream("MZ1")
        voice = r.sup.stream_sessions.attach(call.record.call_id, stream)  # type: ignore[arg-type]
        assert voice is not None
        await call.wait_until(lambda rec: rec.state is CallState.SPEAKING)
        await trio.sleep(0.5)
        StubSTT.made[0].on_event(SpeechStarted("item_1", 500))
        record = await call.wait_until(lambda rec: rec.state is CallState.LISTENING)
        await trio.sleep(0.02)  # the player sends `clear` from its own task
        assert len(stream.clears) == 1 and stream.clears[0] - trio.current_time() < 0.021
        (bot,) = [e for e in record.transcript if e.speaker == "bot"]
        assert bot.text == GREETING and bot.interrupted is True
        assert isinstance(bot.heard_ms, int) and 380 <= bot.heard_ms <= 520
        frames = len(stream.frames)
        await trio.sleep(1)
        assert len(stream.frames) == frames  # nothing more of the cut utterance
        for name in stream.marks:  # the cleared utterance's echo does not count it spoken
            voice.mark(stream, name)  # type: ignore[arg-type]
        await trio.sleep(0.1)
        assert call.record.spoken == 0


async def test_a_tts_failure_is_an_error_for_speak_and_the_call_goes_on(
        tmp_path: Path, autojump_clock: Any) -> None:
    async with voice_rig(tmp_path) as (r, tts):
        call = await placed(r)
        events = r.sup.subscribe()
        tts.fail_with(500)
        with pytest.raises(SpeechError):
            await r.sup.speak(call.record.call_id, "This will not be heard.")
        assert not call.record.terminal
        seen = []
        while True:
            try:
                seen.append(events.receive_nowait())
            except trio.WouldBlock:
                break
        errors = [e for e in seen if e["type"] == "call.error"]
        assert errors and errors[0]["retryable"] is True and "500" in errors[0]["error"]
        tts.fail_with(None)
        await r.sup.speak(call.record.call_id, "This one is.")
        assert not call.record.terminal


async def test_a_second_stream_takes_over_and_the_stt_session_carries_on(
        tmp_path: Path, autojump_clock: Any) -> None:
    async with voice_rig(tmp_path) as (r, _):
        call = await placed(r)
        first, second = StubStream("MZ1"), StubStream("MZ2")
        voice = r.sup.stream_sessions.attach(call.record.call_id, first)  # type: ignore[arg-type]
        assert voice is not None
        assert r.sup.stream_sessions.attach(call.record.call_id, second) is voice  # type: ignore[arg-type]
        await trio.sleep(0.1)
        assert first.closed == 1000 and second.closed is None
        voice.media(first, b"\x01" * 160)  # type: ignore[arg-type]
        voice.media(second, b"\x02" * 160)  # type: ignore[arg-type]
        assert len(StubSTT.made) == 1 and bytes(StubSTT.made[0].audio) == b"\x02" * 160
        await r.sup.end(call.record.call_id)
        assert second.closed == 1000
        assert r.sup.stream_sessions.attach(call.record.call_id, StubStream("MZ3")) is None  # type: ignore[arg-type]
