"""The speech clients against FakeTTS (in memory on the autojump clock, and once on loopback):
the SDKs' requests, the audio they yield, the timeouts, failures before and after the start."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import trio
import trio.testing

from voicecall_trio.config import build_config
from voicecall_trio.errors import ConfigError, SpeechError
from voicecall_trio.media import mulaw
from voicecall_trio.testing import FakeTTS
from voicecall_trio.tts import FIRST_BYTE_S, IDLE_S, SpeechClient, make_speech
from voicecall_trio.tts.elevenlabs import ElevenLabsSpeech
from voicecall_trio.tts.openai import MAX_TEXT_CHARS, OpenAISpeech
from voicecall_trio.tts.stream import error_text, scrub

VECTORS = Path(__file__).resolve().parents[3] / "shared" / "vectors"
if not (VECTORS / "tts_reply.json").exists():
    pytest.skip(f"TTS vectors not found in {VECTORS}", allow_module_level=True)
SPEC = json.loads((VECTORS / "tts_reply.json").read_text())
PCM = (VECTORS / "tts_reply_24k_s16le.pcm").read_bytes()
ULAW = (VECTORS / "tts_reply_8k.ulaw").read_bytes()
TEXT = SPEC["text"]
INSTRUCTIONS = SPEC["openai_speech"]["body"]["instructions"]
VOICE_ID = "JBFqnCBsd6RMkjVDRZzb"
KEY = "sk-test-FAKE-tts-key-0000000000000000000000001234"


@pytest.fixture(autouse=True)
def no_key_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.DEBUG)
    yield
    assert all(KEY not in record.getMessage() for record in caplog.records)


def openai(http: httpx.AsyncClient, base_url: str, **kwargs: Any) -> OpenAISpeech:
    return OpenAISpeech(http, api_key=KEY, base_url=base_url, instructions=INSTRUCTIONS,
                        **kwargs)


def elevenlabs(http: httpx.AsyncClient, base_url: str) -> ElevenLabsSpeech:
    return ElevenLabsSpeech(http, api_key=KEY, voice_id=VOICE_ID, base_url=base_url)


@asynccontextmanager
async def in_memory(**kwargs: Any) -> AsyncIterator[tuple[FakeTTS, httpx.AsyncClient]]:
    async with FakeTTS(pcm=PCM, ulaw=ULAW, **kwargs).in_memory("http://tts.test") as fake, \
            httpx.AsyncClient(transport=fake.transport()) as http:
        yield fake, http


async def speak(client: SpeechClient, text: str = TEXT) -> tuple[list[bytes], float]:
    """Synthesize; (the chunks, the time ``started()`` came)."""
    send, receive = trio.open_memory_channel[bytes](math.inf)
    failure: SpeechError | None = None
    async with trio.open_nursery() as nursery:
        try:
            await nursery.start(client.synthesize, text, send)
        except SpeechError as exc:  # raised by start() itself: the caller's, not a group
            failure = exc
        started = trio.current_time()
        chunks = [chunk async for chunk in receive]
    if failure is not None:
        raise failure
    return chunks, started


def correlation(a: bytes, b: bytes) -> float:
    x, y = mulaw.decode(a).astype(np.float64), mulaw.decode(b).astype(np.float64)
    n = min(len(x), len(y))
    return float(np.dot(x[:n], y[:n]) / np.sqrt(np.dot(x[:n], x[:n]) * np.dot(y[:n], y[:n])))


# -- the requests are the SDKs' ------------------------------------------------------------


def test_the_openai_request_is_the_sdk_s() -> None:
    spec = SPEC["openai_speech"]
    request = openai(httpx.AsyncClient(), "https://api.openai.com/v1").request(TEXT)
    assert request.url == spec["url"]
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert request.headers["Accept"] == spec["headers"]["Accept"]
    assert request.body == spec["body"] and list(request.body) == list(spec["body"])
    assert KEY not in repr(request)
    plain = OpenAISpeech(httpx.AsyncClient(), api_key=KEY).request(TEXT)
    assert "instructions" not in plain.body and plain.body["response_format"] == "pcm"


def test_the_elevenlabs_request_is_the_sdk_s() -> None:
    spec = SPEC["elevenlabs_stream"]
    request = elevenlabs(httpx.AsyncClient(), "https://api.elevenlabs.io/").request(TEXT)
    url = httpx.URL(request.url, params=request.params)
    assert str(url) == spec["url"]
    assert request.headers == {"xi-api-key": KEY} and request.body == spec["body"]


async def test_over_the_wire_the_requests_carry_the_sdk_s_headers_and_bodies(
        autojump_clock: trio.testing.MockClock) -> None:
    async with in_memory() as (fake, http):
        await speak(openai(http, fake.base_url))
        await speak(elevenlabs(http, fake.elevenlabs_base_url))
    first, second = fake.requests
    assert (first.api, first.method, first.path) == ("openai", "POST", "/v1/audio/speech")
    assert first.headers["authorization"] == f"Bearer {KEY}"
    assert first.headers["content-type"] == "application/json"
    assert first.headers["accept"] == "application/octet-stream"
    assert first.json == SPEC["openai_speech"]["body"]
    assert second.path == f"/v1/text-to-speech/{VOICE_ID}/stream"
    assert second.query == {"output_format": "ulaw_8000"}
    assert second.headers["xi-api-key"] == KEY and "authorization" not in second.headers
    assert second.headers["content-type"] == "application/json"
    assert second.json == SPEC["elevenlabs_stream"]["body"]


# -- the audio -------------------------------------------------------------------------------


async def test_openai_pcm_becomes_8k_mulaw_like_sox_s(autojump_clock: trio.testing.MockClock
                                                     ) -> None:
    async with in_memory(chunk_size=4001) as (fake, http):  # odd-sized pieces, as the SDK saw
        chunks, _ = await speak(openai(http, fake.base_url))
    audio = b"".join(chunks)
    assert abs(len(audio) - len(ULAW)) <= 2
    assert correlation(audio, ULAW) >= 0.99


async def test_a_huge_network_chunk_is_converted_in_small_steps(
        autojump_clock: trio.testing.MockClock) -> None:
    async with in_memory(chunk_size=1 << 20) as (fake, http):  # the whole reply at once
        chunks, _ = await speak(openai(http, fake.base_url))
    assert len(chunks) > 15 and max(len(c) for c in chunks) <= 1600  # <= 100 ms a step
    assert abs(len(b"".join(chunks)) - len(ULAW)) <= 2


async def test_elevenlabs_mulaw_is_handed_on_as_is(autojump_clock: trio.testing.MockClock
                                                  ) -> None:
    async with in_memory(chunk_size=1000) as (fake, http):
        chunks, _ = await speak(elevenlabs(http, fake.elevenlabs_base_url))
    assert b"".join(chunks) == ULAW and len(chunks) == 17


async def test_started_comes_with_the_first_audio_not_before(
        autojump_clock: trio.testing.MockClock) -> None:
    async with in_memory(first_byte_delay=3.0, chunk_delay=0.5) as (fake, http):
        begin = trio.current_time()
        _, started = await speak(openai(http, fake.base_url))
        assert started - begin == pytest.approx(3.0)
        assert trio.current_time() - begin == pytest.approx(3.0 + 0.5 * 24)  # 25 chunks


# -- failures before the first byte: SpeechError ----------------------------------------------


async def test_no_first_byte_within_the_limit_is_a_speech_error(
        autojump_clock: trio.testing.MockClock) -> None:
    async with in_memory(first_byte_delay=FIRST_BYTE_S + 5) as (fake, http):
        begin = trio.current_time()
        send, receive = trio.open_memory_channel[bytes](math.inf)
        with pytest.raises(SpeechError, match=r"OpenAI speech: no audio within 10 s"):
            await openai(http, fake.base_url).synthesize(TEXT, send)
        assert trio.current_time() - begin == pytest.approx(FIRST_BYTE_S)
        with pytest.raises(trio.EndOfChannel):
            receive.receive_nowait()  # closed, empty


@pytest.mark.parametrize(("api", "status", "expected"), [
    ("openai", 500, "OpenAI speech: HTTP 500: the fake TTS failed"),
    ("openai", 429, "OpenAI speech: HTTP 429: the fake TTS failed"),
    ("elevenlabs", 401, "ElevenLabs: HTTP 401: the fake TTS failed"),
])
async def test_an_error_status_is_a_speech_error_naming_it(
        autojump_clock: trio.testing.MockClock, api: str, status: int, expected: str) -> None:
    async with in_memory() as (fake, http):
        fake.fail_with(status, times=1)
        client = (openai(http, fake.base_url) if api == "openai"
                  else elevenlabs(http, fake.elevenlabs_base_url))
        with pytest.raises(SpeechError) as caught:
            await speak(client)
        assert caught.value.message == expected and caught.value.rpc_code == -32004
        chunks, _ = await speak(client)  # times=1: the next one works
        assert chunks


async def test_an_error_body_that_echoes_the_key_is_scrubbed(
        autojump_clock: trio.testing.MockClock) -> None:
    async with in_memory() as (fake, http):
        fake.fail_with(401, message=f"Incorrect API key provided: {KEY}.\nSee the docs")
        with pytest.raises(SpeechError) as caught:
            await speak(openai(http, fake.base_url))
    assert KEY not in str(caught.value)
    assert str(caught.value) == (
        "OpenAI speech: HTTP 401: Incorrect API key provided: ***. See the docs")


async def test_a_wrong_key_is_refused_by_the_fake(autojump_clock: trio.testing.MockClock) -> None:
    async with in_memory(openai_key="sk-other", elevenlabs_key="xi-other") as (fake, http):
        with pytest.raises(SpeechError, match="HTTP 401: Incorrect API key"):
            await speak(openai(http, fake.base_url))
        with pytest.raises(SpeechError, match="HTTP 401: Invalid API key"):
            await speak(elevenlabs(http, fake.elevenlabs_base_url))


@pytest.mark.parametrize(("error", "expected"), [
    (httpx.ConnectError("[Errno 111] Connection refused"),
     "OpenAI speech: could not connect (ConnectError: [Errno 111] Connection refused)"),
    (httpx.ReadTimeout("timed out"), "OpenAI speech: timed out (ReadTimeout: timed out)"),
    (httpx.RemoteProtocolError(f"bad header {KEY}"),
     "OpenAI speech: request failed (RemoteProtocolError: bad header ***)"),
])
async def test_transport_failures_are_speech_errors(error: Exception, expected: str) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise error

    async with httpx.AsyncClient(transport=httpx.MockTransport(refuse)) as http:
        with pytest.raises(SpeechError) as caught:
            await speak(openai(http, "http://tts.invalid/v1"))
    assert str(caught.value) == expected


async def test_an_empty_reply_is_a_speech_error() -> None:
    async with httpx.AsyncClient(transport=httpx.MockTransport(
            lambda request: httpx.Response(200, content=b""))) as http:
        with pytest.raises(SpeechError, match="the reply had no audio"):
            await speak(elevenlabs(http, "http://tts.invalid"))


@pytest.mark.parametrize("text", ["", "   \n", "x" * (MAX_TEXT_CHARS + 1)])
async def test_text_the_api_would_refuse_is_refused_before_any_request(text: str) -> None:
    calls: list[httpx.Request] = []
    async with httpx.AsyncClient(transport=httpx.MockTransport(
            lambda request: calls.append(request) or httpx.Response(200))) as http:
        for client in (openai(http, "http://tts.invalid/v1"),
                       elevenlabs(http, "http://tts.invalid")):
            send, receive = trio.open_memory_channel[bytes](1)
            with pytest.raises(SpeechError, match=r"empty text|too long"):
                await client.synthesize(text, send)
            with pytest.raises(trio.EndOfChannel):
                receive.receive_nowait()
    assert calls == []


# -- failures after the start: the utterance just ends ------------------------------------------


async def test_a_stall_after_the_start_ends_the_utterance_with_one_line(
        autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture) -> None:
    async with in_memory(chunk_size=4000) as (fake, http):
        fake.stall_after = 12000
        begin = trio.current_time()
        chunks, _ = await speak(openai(http, fake.base_url))
        assert trio.current_time() - begin == pytest.approx(IDLE_S)
    assert 0 < len(b"".join(chunks)) < len(ULAW) // 2
    lines = [r.getMessage() for r in caplog.records if r.name == "voicecall.tts"]
    assert lines == ["OpenAI speech: no audio for 10 s after 12000 bytes; the utterance ends there"]


async def test_a_dropped_connection_after_the_start_ends_the_utterance_with_one_line(
        autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture) -> None:
    async with in_memory(chunk_size=1000) as (fake, http):
        fake.break_after = 5500
        chunks, _ = await speak(elevenlabs(http, fake.elevenlabs_base_url))
    assert b"".join(chunks) == ULAW[:5500]
    lines = [r.getMessage() for r in caplog.records if r.name == "voicecall.tts"]
    assert len(lines) == 1 and "the audio stream broke after 5500 bytes (ReadError" in lines[0]


async def test_a_consumer_that_goes_away_stops_the_request_quietly(
        autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture) -> None:
    async with in_memory(chunk_size=1000, chunk_delay=0.1) as (fake, http):
        send, receive = trio.open_memory_channel[bytes](0)
        async with trio.open_nursery() as nursery:
            await nursery.start(elevenlabs(http, fake.elevenlabs_base_url).synthesize, TEXT,
                                send)
            assert await receive.receive() == ULAW[:1000]
            receive.close()  # a barge-in dropped the utterance
        assert trio.current_time() < 1.0
    assert [r for r in caplog.records if r.name == "voicecall.tts"] == []


# -- speech into the player: what a streamed call does ---------------------------------------


class FrameSink:
    def __init__(self) -> None:
        self.sent: list[tuple[float, str, Any]] = []

    async def send_audio(self, frame: bytes) -> None:
        self.sent.append((trio.current_time(), "media", frame))

    async def send_mark(self, name: str) -> None:
        self.sent.append((trio.current_time(), "mark", name))

    async def send_clear(self) -> None:
        self.sent.append((trio.current_time(), "clear", None))


async def test_speech_plays_as_paced_frames_then_a_mark(autojump_clock: trio.testing.MockClock
                                                       ) -> None:
    from voicecall_trio.media.pacing import FRAME_S, LEAD_S
    from voicecall_trio.media.player import Player, Utterance

    spoken: list[float] = []
    sink = FrameSink()
    player = Player(on_started=lambda u: None, on_spoken=lambda u: spoken.append(
        trio.current_time()))
    # 24000 B = 500 ms of audio a chunk, 50 ms apart: the TTS runs ahead of real time
    async with in_memory(chunk_size=24000, chunk_delay=0.05, first_byte_delay=0.3) as (
            fake, http), trio.open_nursery() as nursery:
        await nursery.start(player.run)
        player.attach(sink)
        begin = trio.current_time()
        send, receive = trio.open_memory_channel[bytes](4)
        await nursery.start(openai(http, fake.base_url).synthesize, TEXT, send)
        player.enqueue(Utterance(id="bot:" + "a" * 32, text=TEXT, audio=receive))
        await trio.sleep(5)
        assert spoken and sink.sent[-1] == (sink.sent[-2][0], "mark", "bot:" + "a" * 32)
        nursery.cancel_scope.cancel()
    frames = [(at, f) for at, kind, f in sink.sent if kind == "media"]
    assert len(frames) == 104 and {len(f) for _, f in frames} == {160}  # 16557 B: 103 + 77
    assert frames[-1][1].endswith(b"\xff" * 83)
    assert frames[0][0] == pytest.approx(begin + 0.3)  # the first audio leaves at once
    audio = b"".join(f for _, f in frames)[:len(ULAW)]
    assert correlation(audio, ULAW) >= 0.99
    # frames go at the pace, from the first one on
    for n, (at, _) in enumerate(frames):
        assert at == pytest.approx(begin + 0.3 + max(0.0, n * FRAME_S - LEAD_S), abs=1e-6)
    assert spoken == [pytest.approx(begin + 0.3 + 104 * FRAME_S + 2.0)]  # no echo here


# -- the real thing, once: loopback HTTP ------------------------------------------------------


async def test_on_loopback_both_apis_stream() -> None:
    with trio.fail_after(20):
        async with FakeTTS(pcm=PCM, ulaw=ULAW, chunk_size=3001) as fake, httpx.AsyncClient(
                timeout=5) as http:
            assert fake.base_url.startswith("http://127.0.0.1:") and fake.base_url.endswith("/v1")
            pcm_chunks, _ = await speak(openai(http, fake.base_url))
            ulaw_chunks, _ = await speak(elevenlabs(http, fake.elevenlabs_base_url))
            fake.fail_with(503)
            with pytest.raises(SpeechError, match="HTTP 503"):
                await speak(openai(http, fake.base_url))
    assert correlation(b"".join(pcm_chunks), ULAW) >= 0.99
    assert b"".join(ulaw_chunks) == ULAW
    assert [r.api for r in fake.requests] == ["openai", "elevenlabs", "openai"]


# -- the helpers -------------------------------------------------------------------------------


def test_make_speech_needs_a_key_and_follows_the_fallbacks() -> None:
    http = httpx.AsyncClient()
    assert make_speech(build_config({}, {}), http) is None
    by_env = make_speech(build_config({}, {"OPENAI_API_KEY": "sk-env"}), http)
    assert isinstance(by_env, OpenAISpeech) and by_env.request("hi").secret == "sk-env"
    by_streaming = make_speech(build_config({"streaming": {"openaiApiKey": "sk-st"}}, {}), http)
    assert isinstance(by_streaming, OpenAISpeech) and by_streaming.request("hi").secret == "sk-st"
    own = make_speech(build_config({"tts": {"apiKey": "sk-tts", "baseUrl": "http://x/v1/",
                                            "voice": "ash", "model": "m"}},
                                   {"OPENAI_API_KEY": "sk-env"}), http)
    assert isinstance(own, OpenAISpeech)
    request = own.request("hi")
    assert request.secret == "sk-tts" and request.url == "http://x/v1/audio/speech"
    assert request.body == {"model": "m", "input": "hi", "voice": "ash",
                            "response_format": "pcm"}


def test_make_speech_for_elevenlabs() -> None:
    http = httpx.AsyncClient()
    doc: dict[str, Any] = {"tts": {"provider": "elevenlabs"}}
    assert make_speech(build_config(doc, {"OPENAI_API_KEY": "sk"}), http) is None
    env = make_speech(build_config(doc, {"ELEVENLABS_API_KEY": "xi-env"}), http)
    assert isinstance(env, ElevenLabsSpeech) and env.request("hi").secret == "xi-env"
    assert env.voice_id == VOICE_ID and env.model_id == "eleven_flash_v2_5"
    filed = build_config({"tts": {"provider": "elevenlabs", "elevenlabs": {
        "apiKey": "xi-file", "voiceId": "v/1", "baseUrl": "http://el"}}},
        {"ELEVENLABS_API_KEY": "xi-env"})
    client = make_speech(filed, http)
    assert isinstance(client, ElevenLabsSpeech)
    assert client.request("hi").url == "http://el/v1/text-to-speech/v%2F1/stream"
    assert client.request("hi").secret == "xi-file"  # the file wins over the environment
    with pytest.raises(ConfigError, match=r"tts\.provider"):  # only the two providers
        build_config({"tts": {"provider": "polly"}}, {})


def test_config_keys_and_helpers() -> None:
    config = build_config({}, {})
    assert config.tts.base_url == "https://api.openai.com/v1"
    assert config.tts.elevenlabs.base_url == "https://api.elevenlabs.io"
    assert config.openai_key() is None and config.tts_key() is None
    config = build_config({"streaming": {"openaiApiKey": "sk-a"}}, {})
    assert config.openai_key() == "sk-a" and config.tts_key() == "sk-a"
    with pytest.raises(Exception, match=r"tts.elevenlabs.bogus: unknown key"):
        build_config({"tts": {"elevenlabs": {"bogus": 1}}}, {})
    with pytest.raises(Exception, match=r"tts.elevenlabs"):
        build_config({"tts": {"elevenlabs": "nope"}}, {"ELEVENLABS_API_KEY": "xi"})
    with pytest.raises(Exception, match=r"^tts\.baseUrl: .* is not a http or https URL"):
        build_config({"tts": {"baseUrl": "api.openai.com/v1"}}, {})
    with pytest.raises(Exception, match=r"^tts\.elevenlabs\.baseUrl: .* not a http"):
        build_config({"tts": {"elevenlabs": {"baseUrl": "ftp://x"}}}, {})


def test_error_text_and_scrub() -> None:
    assert error_text(b'{"error": {"message": "quota"}}') == "quota"
    assert error_text(b'{"detail": {"status": "x", "message": "bad voice"}}') == "bad voice"
    assert error_text(b'{"detail": "Not Found"}') == "Not Found"
    assert error_text(b"\xff<html>") == "\ufffd<html>"
    assert error_text(b"[1, 2]") == "[1, 2]"
    assert scrub("a\r\nb\x00 key=SECRET", "SECRET") == "a b key=***"
    assert scrub("x" * 500, "").endswith("...") and len(scrub("x" * 500, "")) == 203


async def test_a_reply_that_never_ends_is_cut_at_the_cap(
        autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from voicecall_trio.tts import stream

    monkeypatch.setattr(stream, "MAX_AUDIO_S", 1)  # 8000 bytes of mu-law
    async with in_memory(chunk_size=3000) as (fake, http):
        chunks, _ = await speak(elevenlabs(http, fake.elevenlabs_base_url))
    assert b"".join(chunks) == ULAW[:8000]
    assert [r.getMessage() for r in caplog.records if r.name == "voicecall.tts"] == [
        "ElevenLabs: more than 1 s of audio; the utterance is cut there"]


@pytest.mark.parametrize("key", ["", "sk-with space", "sk-new\nline", "sk-\u00e9"])
async def test_a_key_that_cannot_be_a_header_is_refused_without_showing_it(key: str) -> None:
    async with httpx.AsyncClient(transport=httpx.MockTransport(
            lambda request: httpx.Response(200, content=b"\xff"))) as http:
        for client in (OpenAISpeech(http, api_key=key),
                       ElevenLabsSpeech(http, api_key=key, voice_id="v")):
            with pytest.raises(SpeechError, match="the API key is empty or has") as caught:
                await speak(client)
            assert not key or key not in str(caught.value)


def test_deeply_nested_error_bodies_and_escaped_keys() -> None:
    assert error_text(b"[" * 5000) == "[" * 5000  # not a RecursionError
    assert scrub("Illegal header value b'Bearer sk-a\\nb'", "sk-a\nb") == (
        "Illegal header value b'Bearer ***'")


# -- the fake and its in-memory transport ------------------------------------------------------


async def test_the_fake_refuses_what_the_real_apis_would(autojump_clock: trio.testing.MockClock
                                                        ) -> None:
    async with in_memory() as (fake, http):
        base = "http://tts.test"
        good = {"model": "m", "input": "hi", "voice": "coral", "response_format": "pcm"}
        cases = [
            (await http.post(f"{base}/v1/nothing", json=good), 404),
            (await http.get(f"{base}/v1/audio/speech"), 405),
            (await http.post(f"{base}/v1/audio/speech", json={**good, "response_format": "mp3"}),
             400),
            (await http.post(f"{base}/v1/audio/speech", content=b"not json"), 400),
            (await http.post(f"{base}/v1/text-to-speech/v/stream", json={"text": "hi"}), 400),
            (await http.post(f"{base}/v1/text-to-speech/v/stream?output_format=ulaw_8000",
                             json={"text": ""}), 422),
        ]
        assert [r.status_code for r, _ in cases] == [want for _, want in cases]
        assert cases[2][0].json()["error"]["type"] == "invalid_request_error"
        assert "message" in cases[5][0].json()["detail"]
        assert [r.api for r in fake.requests] == [
            "other", "openai", "openai", "openai", "elevenlabs", "elevenlabs"]
        fake.fail_with(503)
        assert (await http.post(f"{base}/v1/audio/speech", json=good)).status_code == 503
        assert (await http.post(f"{base}/v1/audio/speech", json=good)).status_code == 503
        fake.fail_with(None)
        ok = await http.post(f"{base}/v1/audio/speech", json=good)
        assert ok.status_code == 200 and ok.content == PCM
        assert len(await fake.wait_for_requests(9)) == 9


async def test_the_transport_streams_as_the_app_sends(autojump_clock: trio.testing.MockClock
                                                     ) -> None:
    async with in_memory(chunk_size=10000, chunk_delay=1.0) as (fake, http):
        begin = trio.current_time()
        async with http.stream("POST", f"{fake.base_url}/audio/speech", json={
                "model": "m", "input": "hi", "voice": "v", "response_format": "pcm"}) as reply:
            arrivals = [(trio.current_time() - begin, len(chunk))
                        async for chunk in reply.aiter_raw()]
    assert arrivals[:3] == [(0.0, 10000), (1.0, 10000), (2.0, 10000)]
    assert sum(n for _, n in arrivals) == len(PCM)


async def test_the_transport_reports_an_app_that_fails(autojump_clock: trio.testing.MockClock
                                                      ) -> None:
    from voicecall_trio.testing.asgi_stream import StreamingASGITransport

    async def before(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("boom")

    async def after(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"abc", "more_body": True})
        raise RuntimeError("boom")

    async with trio.open_nursery() as nursery:
        async with httpx.AsyncClient(transport=StreamingASGITransport(before, nursery)) as http:
            with pytest.raises(httpx.RemoteProtocolError, match="RuntimeError"):
                await http.get("http://app.test/")
        async with httpx.AsyncClient(transport=StreamingASGITransport(after, nursery)) as http:
            async with http.stream("GET", "http://app.test/") as reply:
                got = b""
                with pytest.raises(httpx.ReadError, match="connection lost"):
                    async for chunk in reply.aiter_raw():
                        got += chunk
            assert got == b"abc"


async def test_the_fake_needs_to_run_for_its_transport() -> None:
    with pytest.raises(RuntimeError, match="not running"):
        FakeTTS().transport()
    tone = FakeTTS()  # no files: a one-second tone, and that tone as mu-law
    assert len(tone.pcm) == 48000 and abs(len(tone.ulaw) - 8000) <= 2
    section = tone.config("elevenlabs", api_key="k")
    assert section["provider"] == "elevenlabs" and section["elevenlabs"]["apiKey"] == "k"


@pytest.mark.parametrize("provider", ["openai", "elevenlabs"])
async def test_make_speech_from_the_fake_s_config_section(
        autojump_clock: trio.testing.MockClock, provider: str) -> None:
    async with in_memory() as (fake, http):
        client = make_speech(build_config({"tts": fake.config(provider)}, {}), http)
        assert client is not None
        chunks, _ = await speak(client)
    assert correlation(b"".join(chunks), ULAW) >= 0.99


# -- review (R2): a 200 that is not audio -------------------------------------------------------


@pytest.mark.parametrize("content_type", ["text/html; charset=utf-8", "application/json",
                                          "text/plain", "application/xhtml+xml"])
async def test_a_200_that_is_not_audio_is_a_speech_error_not_noise(content_type: str) -> None:
    """A captive portal, a proxy's login page or a JSON error with status 200: played as PCM
    it is a burst of noise on the phone. It is refused before the utterance starts."""
    page = b"<html><body>Please log in to the hotel Wi-Fi</body></html>" * 20
    async with httpx.AsyncClient(transport=httpx.MockTransport(
            lambda request: httpx.Response(200, content=page,
                                           headers={"content-type": content_type}))) as http:
        for client in (openai(http, "http://tts.invalid/v1"),
                       elevenlabs(http, "http://tts.invalid")):
            with pytest.raises(SpeechError, match=r"not audio") as caught:
                await speak(client)
            assert "hotel" not in str(caught.value)


async def test_audio_without_a_content_type_or_as_octets_still_plays() -> None:
    for headers in ({}, {"content-type": "application/octet-stream"},
                    {"content-type": "audio/basic"}):
        async with httpx.AsyncClient(transport=httpx.MockTransport(
                lambda request, h=headers: httpx.Response(200, content=ULAW, headers=h))) as http:
            chunks, _ = await speak(elevenlabs(http, "http://tts.invalid"))
        assert b"".join(chunks) == ULAW
