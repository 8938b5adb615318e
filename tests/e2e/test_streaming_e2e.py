"""Streamed Twilio calls end to end: a real daemon, its real HTTP port and socket, and the
shipped simulators (``FakeTwilio`` following ``<Connect><Stream>``, ``FakeRealtimeSTT``,
``FakeTTS``), all on loopback.

Twilio reaches the daemon's public URL through the fake's tunnel, signs the stream upgrade
over the ``wss://`` URL of the TwiML and streams the callee's mu-law (the vectors' "Hello, I
would like to book a table for two") in 20 ms frames; the fake STT "recognises" its script
after so much audio. Every wait is on a condition under a ``fail_after`` bound.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio

from voicecall_trio.rpc.protocol import RpcError
from voicecall_trio.testing import RunningDaemon, running_daemon
from voicecall_trio.testing.chat import FakeChatCompletions, Reply
from voicecall_trio.testing.fake_twilio import (
    Callee,
    FakeCall,
    FakeStream,
    FakeTwilio,
    hello_ulaw,
)
from voicecall_trio.testing.realtime_stt import FAKE_API_KEY, FakeRealtimeSTT
from voicecall_trio.testing.tts import FakeTTS

ACCOUNT = "AC" + "7" * 32
TOKEN = "e2e-stream-auth-token-0123456789"
FROM = "+15550001234"
CALLEE = "+15555550123"
CALLER = "+14155551234"
PUBLIC = "https://voice.example.com/voice/webhook"
STREAM_URL = "wss://voice.example.com/voice/stream"
WAIT_S = 15.0
VECTORS = Path(__file__).resolve().parents[3] / "shared" / "vectors"
HELLO = "Hello, I would like to book a table for two."
GREETING = "Hello Sam, this is your assistant calling about dinner tonight."
REPLY = "Noted."  # the built-in replies' answer, unless a test scripts its own


@dataclass
class Rig:
    daemon: RunningDaemon
    fake: FakeTwilio
    stt: FakeRealtimeSTT
    tts: FakeTTS

    async def rpc(self, method: str, params: dict[str, Any] | None = None) -> Any:
        return await self.daemon.rpc(method, params or {})


@asynccontextmanager
async def streaming_rig(script: list[tuple[str, int, int]], *, callee: Callee | None = None,
                        tts_pcm: bytes | None = None, **extra: Any) -> AsyncIterator[Rig]:
    """The daemon on the simulators. The STT's key also keys built-in replies (issue #11), so
    ``responseBaseUrl`` always points at a local fake: no test reaches the internet."""
    async with AsyncExitStack() as stack:
        if "responseBaseUrl" not in extra:
            chat = await stack.enter_async_context(FakeChatCompletions(default=Reply(REPLY)))
            extra["responseBaseUrl"] = chat.url
        fake = await stack.enter_async_context(FakeTwilio(
            account_sid=ACCOUNT, auth_token=TOKEN, phone_number=FROM, voice_url=PUBLIC,
            default_callee=callee or Callee(stream_audio=hello_ulaw())))
        stt = await stack.enter_async_context(FakeRealtimeSTT(script=script))
        tts = await stack.enter_async_context(FakeTTS(pcm=tts_pcm))
        config: dict[str, Any] = {
            "provider": "twilio", "fromNumber": FROM,
            "twilio": {"accountSid": ACCOUNT, "authToken": TOKEN, "apiBaseUrl": fake.url},
            "publicUrl": PUBLIC, "maxConcurrentCalls": 4, "inboundPolicy": "open",
            "transcriptTimeoutMs": 10_000, "shutdownGraceSeconds": 2,
            "streaming": {"enabled": True, "openaiApiKey": FAKE_API_KEY,
                          "realtimeUrl": stt.url, "preStartTimeoutMs": 1000},
            "tts": tts.config(),
        }
        for key, value in extra.items():
            if isinstance(value, dict) and isinstance(config.get(key), dict):
                config[key] = {**config[key], **value}
            else:
                config[key] = value
        daemon = await stack.enter_async_context(running_daemon(config))
        fake.tunnel(PUBLIC, daemon.base_url)
        yield Rig(daemon, fake, stt, tts)


async def until(fake: FakeTwilio, predicate: Callable[[], bool]) -> None:
    with trio.fail_after(WAIT_S):
        await fake.wait_for(predicate)


async def until_daemon(rig: Rig, call_id: str, predicate: Callable[[dict[str, Any]], bool]
                       ) -> dict[str, Any]:
    with trio.fail_after(WAIT_S):
        while True:
            call = (await rig.rpc("voicecall.status", {"callId": call_id}))["call"]
            if predicate(call):
                return call  # type: ignore[no-any-return]
            await trio.sleep(0.02)


def the_call(fake: FakeTwilio) -> FakeCall:
    (call,) = fake.calls.values()
    return call


def streams(call: FakeCall) -> list[FakeStream]:
    return list(call.media)


def lines(call: dict[str, Any], speaker: str) -> list[dict[str, Any]]:
    return [e for e in call["transcript"] if e["speaker"] == speaker]


async def placed(rig: Rig, message: str = GREETING) -> tuple[str, FakeCall]:
    result = await rig.rpc("voicecall.initiate", {"to": CALLEE, "message": message,
                                                  "mode": "conversation"})
    await until(rig.fake, lambda: len(rig.fake.calls) == 1)
    twilio = the_call(rig.fake)
    await until(rig.fake, lambda: any(s.open for s in streams(twilio)))
    return result["callId"], twilio


def forwarded_exactly(rig: Rig, stream: FakeStream) -> bool:
    """Everything the callee sent so far reached the STT in order (a few frames may be in
    flight), from the stream's first frame."""
    heard = bytes(rig.stt.sessions[0].audio)
    sent = bytes(stream.sent)
    return len(heard) >= 160 and sent.startswith(heard) and len(sent) - len(heard) <= 160 * 10


# -- the two kinds of streamed call ---------------------------------------------------------------


async def test_streamed_outbound_call_transcribes_the_callee_and_answers_continue() -> None:
    script = [(HELLO, 200, 2800), ("Yes, eight o'clock is perfect.", 6000, 1500)]
    async with streaming_rig(script) as rig:
        call_id, twilio = await placed(rig)
        (stream,) = streams(twilio)
        assert stream.url == STREAM_URL and stream.signature
        assert stream.parameters["token"].startswith(call_id + ".")
        # the TwiML connected the stream and said nothing itself: the greeting is streamed
        assert "<Say" not in twilio.documents[0] and "<Connect>" in twilio.documents[0]
        call = await until_daemon(rig, call_id, lambda c: bool(lines(c, "user")))
        assert lines(call, "user")[0]["text"] == HELLO
        session = rig.stt.sessions[0]
        assert session.headers["authorization"] == f"Bearer {FAKE_API_KEY}"
        assert session.query.get("intent") == "transcription"
        update = session.updates[0]["session"]
        assert update["type"] == "transcription"
        assert update["audio"]["input"]["format"]["type"] == "audio/pcmu"
        assert update["audio"]["input"]["transcription"]["model"] == "gpt-4o-transcribe"
        vad = update["audio"]["input"]["turn_detection"]
        assert vad["type"] == "server_vad" and vad["silence_duration_ms"] == 800
        assert forwarded_exactly(rig, stream)
        await until(rig.fake, lambda: hello_ulaw() in bytes(session.audio))  # byte for byte
        assert forwarded_exactly(rig, stream)
        rig.fake.play_audio(twilio.sid, hello_ulaw())
        answer = await rig.rpc("voicecall.continue", {"callId": call_id,
                                                      "message": "Shall we say eight?"})
        assert answer["transcript"] == "Yes, eight o'clock is perfect."
        await rig.rpc("voicecall.end", {"callId": call_id})
        assert len(rig.stt.sessions) == 1  # one STT session for the call's life


async def test_the_greeting_is_paced_160_byte_frames_then_a_mark_whose_echo_is_spoken() -> None:
    async with streaming_rig([]) as rig:
        await rig.rpc("voicecall.subscribe")
        call_id, twilio = await placed(rig)
        (stream,) = streams(twilio)
        await until(rig.fake, lambda: bool(stream.echoed))
        call = await until_daemon(rig, call_id, lambda c: c["state"] == "listening")
        assert [line["text"] for line in lines(call, "bot")] == [GREETING]
        assert {len(frame) for _, frame in stream.arrivals} == {160}
        times = [t for t, _ in stream.arrivals]
        assert times[0] - stream.opened_at < 0.5  # type: ignore[operator]
        steady = [b - a for a, b in itertools.pairwise(times[5:])]
        assert steady and sum(steady) / len(steady) == pytest.approx(0.02, abs=0.003)
        ahead = times[-1] - times[0] - 0.02 * (len(times) - 1)
        assert abs(ahead) < 0.2  # paced in real time, not sent in a burst
        assert stream.marks and stream.echoed_names[0] == stream.marks[0]
        assert stream.audio[-1:] == b"\xff" or len(stream.audio) % 160 == 0


async def test_streamed_inbound_call_is_greeted_and_transcribed() -> None:
    async with streaming_rig([(HELLO, 300, 2800)],
                             inboundGreeting="Thanks for calling, how can I help?") as rig:
        twilio = rig.fake.start_inbound(CALLER)
        await until(rig.fake, lambda: any(s.open for s in streams(twilio)))
        await until(rig.fake, lambda: bool(streams(twilio)[0].echoed))
        listed = (await rig.rpc("voicecall.status"))["calls"]
        (call_id,) = [c["callId"] for c in listed]
        call = await until_daemon(rig, call_id, lambda c: bool(lines(c, "user")))
        assert lines(call, "bot")[0]["text"] == "Thanks for calling, how can I help?"
        assert lines(call, "user")[0]["text"] == HELLO
        assert forwarded_exactly(rig, streams(twilio)[0])


# -- barge-in -------------------------------------------------------------------------------------


async def test_barge_in_sends_clear_and_records_what_was_heard() -> None:
    long_reply = (VECTORS / "tts_reply_24k_s16le.pcm").read_bytes() * 3  # about 6 s
    async with streaming_rig([(HELLO, 1000, 2000)], tts_pcm=long_reply) as rig:
        call_id, twilio = await placed(rig)
        (stream,) = streams(twilio)
        await until(rig.fake, lambda: bool(stream.clears))
        call = await until_daemon(rig, call_id,
                                  lambda c: any(x.get("interrupted") for x in lines(c, "bot")))
        bot = lines(call, "bot")[0]
        assert bot["text"] == GREETING and bot["interrupted"] is True
        assert 500 <= bot["heardMs"] <= 2500
        sent_ms = len(stream.audio) / 8
        assert bot["heardMs"] <= sent_ms and sent_ms < 6000  # the rest was never sent
        assert call["state"] in ("listening", "active")


# -- refusals -------------------------------------------------------------------------------------


async def test_unsigned_bad_token_and_silent_streams_are_refused_without_an_stt_session() -> None:
    async with streaming_rig([], callee=Callee(stream_audio=b"")) as rig:
        call_id, twilio = await placed(rig)
        await until(rig.fake, lambda: len(rig.stt.sessions) == 1)  # the real stream's
        opened = len(rig.stt.connections)
        unsigned = await rig.fake.open_stream(twilio.sid, signature="missing")
        wrong = await rig.fake.open_stream(twilio.sid, signature="wrong")
        assert unsigned.refused == 403 and wrong.refused == 403
        forged = await rig.fake.open_stream(twilio.sid, parameters={"token": call_id + ".AAAA"})
        silent = await rig.fake.open_stream(twilio.sid, start=False)
        await until(rig.fake, lambda: forged.close_code is not None
                    and silent.close_code is not None)
        assert forged.close_code == 1008 and silent.close_code == 1008
        assert len(rig.stt.connections) == opened  # none of them reached the STT
        assert any(s.open for s in streams(twilio))  # the real stream carries on


async def test_a_token_of_an_ended_call_is_refused() -> None:
    async with streaming_rig([]) as rig:
        call_id, twilio = await placed(rig)
        token = streams(twilio)[0].parameters["token"]
        await rig.rpc("voicecall.end", {"callId": call_id})
        await until(rig.fake, lambda: twilio.done.is_set())
        opened = len(rig.stt.connections)
        late = await rig.fake.open_stream(twilio.sid, parameters={"token": token})
        await until(rig.fake, lambda: late.close_code is not None or late.refused is not None)
        assert late.close_code == 1008 or late.refused is not None
        assert len(rig.stt.connections) == opened


# -- takeover, STT drop, TTS failure, shutdown ----------------------------------------------------


async def test_a_second_stream_takes_over_and_the_call_carries_on() -> None:
    script = [(HELLO, 4000, 2000)]
    async with streaming_rig(script) as rig:
        call_id, twilio = await placed(rig)
        (first,) = streams(twilio)
        second = await rig.fake.second_stream(twilio.sid)
        await until(rig.fake, lambda: first.close_code is not None)
        assert first.close_code == 1000 and second.open
        rig.fake.play_audio(twilio.sid, hello_ulaw())
        call = await until_daemon(rig, call_id, lambda c: bool(lines(c, "user")))
        assert lines(call, "user")[0]["text"] == HELLO
        assert len(rig.stt.sessions) == 1  # the same STT session


async def test_an_stt_drop_reconnects_and_transcription_goes_on() -> None:
    script = [(HELLO, 3000, 2000)]
    async with streaming_rig(script) as rig:
        call_id, _ = await placed(rig)
        await until(rig.fake, lambda: len(rig.stt.sessions) == 1
                    and len(rig.stt.sessions[0].audio) > 8 * 500)
        rig.stt.drop()
        await until(rig.fake, lambda: len(rig.stt.sessions) == 2)
        call = await until_daemon(rig, call_id, lambda c: bool(lines(c, "user")))
        assert lines(call, "user")[0]["text"] == HELLO
        assert call["state"] not in ("error", "failed")


async def test_a_tts_500_is_an_error_for_speak_and_leaves_the_call_up() -> None:
    async with streaming_rig([]) as rig:
        call_id, _ = await placed(rig)
        rig.tts.fail_with(500)
        with pytest.raises(RpcError) as failure:
            await rig.rpc("voicecall.speak", {"callId": call_id, "message": "Unheard."})
        assert failure.value.code == -32004 and "500" in failure.value.message
        rig.tts.fail_with(None)
        await rig.rpc("voicecall.speak", {"callId": call_id, "message": "Heard this time."})
        call = await until_daemon(rig, call_id, lambda c: any(
            x["text"] == "Heard this time." for x in lines(c, "bot")))
        assert call["state"] not in ("error", "failed", "completed")
        assert call["metadata"].get("lastError", "").startswith("speech failed")


async def test_shutdown_closes_streams_with_1001() -> None:
    async with streaming_rig([]) as rig:
        _, twilio = await placed(rig)
        (stream,) = streams(twilio)
        rig.daemon.handle.stop()
        await until(rig.fake, lambda: stream.close_code is not None)
        assert stream.close_code == 1001


# -- no key: Gather -------------------------------------------------------------------------------


async def test_streaming_without_an_openai_key_keeps_conversations_on_gather() -> None:
    async with AsyncExitStack() as stack:
        fake = await stack.enter_async_context(FakeTwilio(
            account_sid=ACCOUNT, auth_token=TOKEN, phone_number=FROM, voice_url=PUBLIC,
            default_callee=Callee(script=["Hello?", "Sounds good."])))
        config = {"provider": "twilio", "fromNumber": FROM,
                  "twilio": {"accountSid": ACCOUNT, "authToken": TOKEN, "apiBaseUrl": fake.url},
                  "publicUrl": PUBLIC, "streaming": {"enabled": True},
                  "transcriptTimeoutMs": 10_000, "shutdownGraceSeconds": 2}
        daemon = await stack.enter_async_context(
            running_daemon(config))  # (its environment is empty: no OPENAI_API_KEY)
        fake.tunnel(PUBLIC, daemon.base_url)
        result = await daemon.rpc("voicecall.initiate", {"to": CALLEE, "message": "Hi there",
                                                         "mode": "conversation"})
        # the callee's first words, on <Gather>
        await until_daemon(Rig(daemon, fake, None, None), result["callId"],  # type: ignore[arg-type]
                           lambda c: bool(lines(c, "user")))
        answer = await daemon.rpc("voicecall.continue", {"callId": result["callId"],
                                                         "message": "Eight o'clock?"})
        assert answer["transcript"] == "Sounds good."
        twilio = the_call(fake)
        assert "<Gather" in twilio.documents[0] and not twilio.media


# -- built-in replies on a stream (issue #11) ---------------------------------------------------


async def test_a_builtin_reply_speaks_its_first_sentence_before_the_completion_ends() -> None:
    long_text = ("Sure, eight works. " + "I will book the table for two people at eight "
                 "tonight and send you a confirmation by message shortly.")
    async with FakeChatCompletions([Reply(long_text, token_s=0.15)]) as chat, \
            streaming_rig([(HELLO, 200, 2800)], responseBaseUrl=chat.url,
                          responseApiKey="sk-test-chat") as rig:
        call_id, _ = await placed(rig)
        call = await until_daemon(rig, call_id, lambda c: any(
            x["text"] == "Sure, eight works." for x in lines(c, "bot")))
        assert chat.completed == 0  # its audio is out while the completion still streams
        (request,) = chat.requests
        assert request.body["model"] == "gpt-4o-mini" and request.body["stream"] is True
        assert request.messages[-1] == {"role": "user", "content": HELLO}
        assert lines(call, "user")[0]["text"] == HELLO
        # the turn's waterfall, on the stream: from the STT's speech_stopped to the audio out
        call = await until_daemon(rig, call_id, lambda c: any(
            "firstAudioOut" in t for t in c["metadata"].get("turns", [])))
        turn = next(t for t in call["metadata"]["turns"] if "firstAudioOut" in t)
        assert turn["callerStopped"] == 0
        for stage in ("finalTranscript", "replyRequested", "firstToken", "firstSentence",
                      "ttsFirstByte"):
            assert 0 <= turn[stage] <= turn["firstAudioOut"], stage


async def test_a_barge_in_cancels_the_completion_in_flight() -> None:
    long_reply = (VECTORS / "tts_reply_24k_s16le.pcm").read_bytes() * 3  # about 6 s a sentence
    long_text = "Sure. " + " ".join(["and then some more words"] * 12) + "."
    script = [(HELLO, 200, 2800), ("Wait, one thing.", 6500, 800)]
    async with FakeChatCompletions([Reply(long_text, token_s=0.2)]) as chat, \
            streaming_rig(script, tts_pcm=long_reply, responseBaseUrl=chat.url,
                          responseApiKey="sk-test-chat") as rig:
        call_id, twilio = await placed(rig)
        await until(rig.fake, lambda: chat.abandoned >= 1)
        assert chat.completed == 0
        (stream,) = streams(twilio)
        assert stream.clears  # the bot fell silent
        call = await until_daemon(rig, call_id, lambda c: any(
            x.get("interrupted") for x in lines(c, "bot")))
        assert "Sure." in [x["text"] for x in lines(call, "bot")]
