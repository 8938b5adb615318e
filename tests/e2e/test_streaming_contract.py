"""Issue #10's contract, item by item, as a black-box tester checks it: a real daemon, its real
HTTP port and socket, and a Twilio of this file's own making (a signer written as the Twilio
SDK's ``RequestValidator`` computes it: HMAC-SHA1 over the URL and the sorted parameters,
base64; a raw trio-websocket client for the media stream) rather than the shipped
``FakeTwilio``. The STT and TTS are the shipped simulators (speaking the vectors' shapes).

Each test bounds its waits with ``fail_after``; the only sleeps pace the caller's 20 ms frames,
as a phone would, and never stand in for a condition.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    WebSocketConnection,
    open_websocket_url,
)

from voicecall_trio.config import build_config
from voicecall_trio.errors import ConfigError
from voicecall_trio.rpc.protocol import RpcError
from voicecall_trio.testing import RunningDaemon, running_daemon
from voicecall_trio.testing.chat import FakeChatCompletions, Reply
from voicecall_trio.testing.realtime_stt import FAKE_API_KEY, FakeRealtimeSTT
from voicecall_trio.testing.tts import FakeTTS, tone_pcm

VECTORS = Path(__file__).resolve().parents[3] / "shared" / "vectors"
HELLO_ULAW = (VECTORS / "hello_table_for_two_8k.ulaw").read_bytes()
ACCOUNT = "AC" + "3" * 32
AUTH_TOKEN = "contract-auth-token-0123456789ab"
FROM = "+15550001234"
CALLER = "+14155551234"
PUBLIC = "https://voice.example.com/voice/webhook"
STREAM_URL = "wss://voice.example.com/voice/stream"
WAIT_S = 15.0


def twilio_signature(url: str, params: dict[str, str] | None = None,
                     token: str = AUTH_TOKEN) -> str:
    """What Twilio's SDK computes: base64(HMAC-SHA1(token, url + k1v1k2v2... sorted))."""
    data = url + "".join(k + v for k, v in sorted((params or {}).items()))
    digest = hmac.new(token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


# -- a Twilio of our own ---------------------------------------------------------------------


@dataclass
class Stream:
    """One media WebSocket as our Twilio sees it."""

    ws: WebSocketConnection
    sid: str
    received: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    sent_audio: bytearray = field(default_factory=bytearray)
    echo_marks: bool = True
    close_code: int | None = None
    changed: trio.Event = field(default_factory=trio.Event)

    def poke(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    def of(self, event: str) -> list[dict[str, Any]]:
        return [m for _, m in self.received if m.get("event") == event]

    @property
    def frames(self) -> list[bytes]:
        return [base64.b64decode(m["media"]["payload"]) for m in self.of("media")]

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send_message(json.dumps(message))

    async def start(self, token: str | None, call_sid: str) -> None:
        await self.send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        params = {} if token is None else {"token": token}
        await self.send({"event": "start", "sequenceNumber": "1", "streamSid": self.sid,
                         "start": {"accountSid": ACCOUNT, "streamSid": self.sid,
                                   "callSid": call_sid, "tracks": ["inbound"],
                                   "mediaFormat": {"encoding": "audio/x-mulaw",
                                                   "sampleRate": 8000, "channels": 1},
                                   "customParameters": params}})

    async def media(self, audio: bytes, *, paced: bool = True) -> None:
        for n, at in enumerate(range(0, len(audio), 160)):
            frame = audio[at:at + 160]
            await self.send({"event": "media", "sequenceNumber": str(n + 2),
                             "streamSid": self.sid,
                             "media": {"track": "inbound", "chunk": str(n + 1),
                                       "timestamp": str(20 * n),
                                       "payload": base64.b64encode(frame).decode()}})
            self.sent_audio += frame
            if paced:
                await trio.sleep(0.02)  # a phone's pace, not a synchronisation

    async def read(self) -> None:
        """Record what the daemon sends; echo marks at once (Twilio would after playback)."""
        try:
            while True:
                message = json.loads(await self.ws.get_message())
                self.received.append((trio.current_time(), message))
                if message.get("event") == "mark" and self.echo_marks:
                    await self.send({"event": "mark", "streamSid": self.sid,
                                     "mark": {"name": message["mark"]["name"]}})
                self.poke()
        except ConnectionClosed as exc:
            self.close_code = exc.reason.code if exc.reason is not None else None
            self.poke()

    async def until(self, predicate: Callable[[], bool]) -> None:
        with trio.fail_after(WAIT_S):
            while not predicate():
                await self.changed.wait()


@dataclass
class Rig:
    daemon: RunningDaemon
    stt: FakeRealtimeSTT
    tts: FakeTTS
    http: httpx.AsyncClient
    nursery: trio.Nursery
    notes: list[dict[str, Any]] = field(default_factory=list)
    sids: int = 0
    changed: trio.Event = field(default_factory=trio.Event)

    @property
    def port(self) -> int:
        return int(self.daemon.base_url.rsplit(":", 1)[1])

    async def rpc(self, method: str, params: dict[str, Any] | None = None) -> Any:
        return await self.daemon.rpc(method, params or {})

    async def inbound(self, call_sid: str, caller: str = CALLER) -> str:
        """Twilio offers an inbound call: a signed webhook; returns the TwiML."""
        params = {"AccountSid": ACCOUNT, "ApiVersion": "2010-04-01", "CallSid": call_sid,
                  "CallStatus": "ringing", "Direction": "inbound", "From": caller, "To": FROM}
        response = await self.http.post(
            self.daemon.webhook_url, data=params,
            headers={"X-Twilio-Signature": twilio_signature(PUBLIC, params)})
        assert response.status_code == 200, response.text
        return response.text

    @asynccontextmanager
    async def stream(self, *, signature: str | None = "good", url: str = STREAM_URL,
                     headers: dict[str, str] | None = None) -> AsyncIterator[Stream]:
        """A media WebSocket to the daemon's port, signed over ``url`` (the TwiML's)."""
        extra = dict(headers or {})
        if signature == "good":
            extra["X-Twilio-Signature"] = twilio_signature(url)
        elif signature is not None:
            extra["X-Twilio-Signature"] = signature
        self.sids += 1
        async with open_websocket_url(
                f"ws://127.0.0.1:{self.port}/voice/stream",
                extra_headers=[(k.encode(), v.encode()) for k, v in extra.items()]) as ws:
            stream = Stream(ws, f"MZ{self.sids:032d}")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(stream.read)
                yield stream
                nursery.cancel_scope.cancel()

    async def collect(self) -> None:
        async for note in self.daemon.client.notifications:
            self.notes.append(note.params)
            self.changed.set()
            self.changed = trio.Event()

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [n for n in self.notes if n.get("type") == kind]

    async def status(self, call_id: str) -> dict[str, Any]:
        return (await self.rpc("voicecall.status", {"callId": call_id}))["call"]  # type: ignore[no-any-return]

    async def until(self, predicate: Callable[[], bool]) -> None:
        """Until ``predicate()``: re-checked on each notification, and every 20 ms for the
        simulators' state (they run in this process and change without telling us)."""
        with trio.fail_after(WAIT_S):
            while not predicate():
                with trio.move_on_after(0.02):
                    await self.changed.wait()

    async def only_call(self) -> str:
        calls = (await self.rpc("voicecall.status"))["calls"]
        (call,) = calls
        return call["callId"]  # type: ignore[no-any-return]


@asynccontextmanager
async def rig(script: list[tuple[str, int, int]] | None = None, *, tts_pcm: bytes | None = None,
              tts: dict[str, Any] | None = None, **extra: Any) -> AsyncIterator[Rig]:
    async with AsyncExitStack() as stack:
        chat = await stack.enter_async_context(FakeChatCompletions(default=Reply("Noted.")))
        stt = await stack.enter_async_context(FakeRealtimeSTT(script=script or []))
        fake_tts = await stack.enter_async_context(FakeTTS(pcm=tts_pcm))
        config: dict[str, Any] = {
            "provider": "twilio", "fromNumber": FROM, "publicUrl": PUBLIC,
            # hang-ups go to a closed port: refused at once, logged, the call still ends
            "twilio": {"accountSid": ACCOUNT, "authToken": AUTH_TOKEN,
                       "apiBaseUrl": "http://127.0.0.1:9"},
            "inboundPolicy": "open", "maxConcurrentCalls": 4, "shutdownGraceSeconds": 2,
            "transcriptTimeoutMs": 10_000, "responseBaseUrl": chat.url,
            "inboundGreeting": "Thanks for calling.",
            "streaming": {"enabled": True, "openaiApiKey": FAKE_API_KEY,
                          "realtimeUrl": stt.url, "preStartTimeoutMs": 1000},
            "tts": {**fake_tts.config(), **(tts or {})},
        }
        for key, value in extra.items():
            if isinstance(value, dict) and isinstance(config.get(key), dict):
                config[key] = {**config[key], **value}
            else:
                config[key] = value
        daemon = await stack.enter_async_context(running_daemon(config))
        http = await stack.enter_async_context(httpx.AsyncClient(timeout=10))
        nursery = await stack.enter_async_context(trio.open_nursery())
        r = Rig(daemon, stt, fake_tts, http, nursery)
        await r.rpc("voicecall.subscribe")
        nursery.start_soon(r.collect)
        try:
            yield r
        finally:
            nursery.cancel_scope.cancel()


def stream_of(twiml: str) -> tuple[str, dict[str, str], ET.Element]:
    root = ET.fromstring(twiml)
    stream = root.find("./Connect/Stream")
    assert stream is not None, twiml
    params = {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")}
    return stream.get("url", ""), params, root


# -- 1. config -------------------------------------------------------------------------------


def test_every_streaming_and_tts_key_has_the_issues_default() -> None:
    c = build_config({}, {})
    s, t = c.streaming, c.tts
    assert (s.enabled, s.stt_provider, s.openai_api_key, s.stt_model, s.silence_duration_ms,
            s.vad_threshold, s.stream_path) == (False, "openai-realtime", None,
                                                "gpt-4o-transcribe", 800, 0.5, "/voice/stream")
    assert (s.pre_start_timeout_ms, s.max_pending_connections,
            s.max_pending_connections_per_ip, s.max_connections) == (5000, 32, 4, 128)
    assert (s.realtime_url, s.barge_in) == ("wss://api.openai.com/v1/realtime", True)
    assert (t.provider, t.model, t.voice, t.base_url) == (
        "openai", "gpt-4o-mini-tts", "coral", "https://api.openai.com/v1")
    assert t.elevenlabs.base_url == "https://api.elevenlabs.io"


def test_key_fallbacks() -> None:
    env = {"OPENAI_API_KEY": "sk-env", "ELEVENLABS_API_KEY": "xi-env"}
    c = build_config({}, env)
    assert c.openai_key() == "sk-env" and c.tts_key() == "sk-env"
    c = build_config({"streaming": {"openaiApiKey": "sk-file"}}, env)
    assert c.openai_key() == "sk-file" and c.tts_key() == "sk-file"
    c = build_config({"tts": {"apiKey": "sk-tts"}, "streaming": {"openaiApiKey": "sk-f"}}, {})
    assert c.tts_key() == "sk-tts"
    c = build_config({"tts": {"provider": "elevenlabs"}}, env)
    assert c.tts.elevenlabs.api_key == "xi-env" and c.tts_key() == "xi-env"


@pytest.mark.parametrize(("doc", "path"), [
    ({"streaming": {"sttProvider": "whisper"}}, "streaming.sttProvider"),
    ({"streaming": {"vadThreshold": 2}}, "streaming.vadThreshold"),
    ({"streaming": {"silenceDurationMs": "long"}}, "streaming.silenceDurationMs"),
    ({"streaming": {"streamPath": "voice/stream"}}, "streaming.streamPath"),
    ({"streaming": {"preStartTimeoutMs": 0}}, "streaming.preStartTimeoutMs"),
    ({"streaming": {"maxPendingConnections": 0}}, "streaming.maxPendingConnections"),
    ({"streaming": {"maxPendingConnectionsPerIp": -1}}, "streaming.maxPendingConnectionsPerIp"),
    ({"streaming": {"maxConnections": 0}}, "streaming.maxConnections"),
    ({"streaming": {"realtimeUrl": "http://x"}}, "streaming.realtimeUrl"),
    ({"streaming": {"bargeIn": "yes"}}, "streaming.bargeIn"),
    ({"tts": {"provider": "polly"}}, "tts.provider"),
    ({"tts": {"baseUrl": "ftp://x"}}, "tts.baseUrl"),
    ({"tts": {"elevenlabs": {"baseUrl": "nope"}}}, "tts.elevenlabs.baseUrl"),
    ({"tts": {"elevenlabs": {"voice": "x"}}}, "tts.elevenlabs.voice"),
])
def test_a_bad_value_names_its_key_path(doc: dict[str, Any], path: str) -> None:
    with pytest.raises(ConfigError) as failure:
        build_config(doc, {})
    assert str(failure.value).startswith(path), str(failure.value)


# -- 2, 3, 4, 5: one streamed inbound call, literally ---------------------------------------


async def test_a_streamed_inbound_call_end_to_end() -> None:
    script = [("Hello, I would like to book a table for two.", 300, 2500)]
    async with rig(script, streaming={"sttModel": "gpt-4o-mini-transcribe",
                                      "vadThreshold": 0.7, "silenceDurationMs": 650},
                   tts={"instructions": "Speak warmly."}) as r:
        twiml = await r.inbound("CA" + "1" * 32)
        url, params, root = stream_of(twiml)
        assert url == STREAM_URL
        assert root.find(".//Say") is None and root.find(".//Gather") is None
        call_id = await r.only_call()
        token = params["token"]
        assert call_id in token and token != call_id and len(token) >= len(call_id) + 16
        # another call's token differs beyond its call id: unguessable, not derived
        other = stream_of(await r.inbound("CA" + "2" * 32))[1]["token"]
        assert other.split(".")[-1] != token.split(".")[-1]
        async with r.stream() as stream:
            await stream.start(token, "CA" + "1" * 32)
            r.nursery.start_soon(stream.media, HELLO_ULAW)
            # the greeting: 160-byte frames, then a mark naming it; the echo = call.spoken
            await stream.until(lambda: bool(stream.of("mark")))
            assert stream.frames and {len(f) for f in stream.frames} == {160}
            times = [t for t, m in stream.received if m["event"] == "media"]
            played = 0.02 * len(times)
            assert times[-1] - times[0] >= played - 0.1  # paced, not a burst
            assert stream.received[-1][1]["event"] == "mark"
            assert all(m["streamSid"] == stream.sid for _, m in stream.received)
            await r.until(lambda: any(e["callId"] == call_id for e in r.events("call.spoken")))
            # the STT: GA session.update with our settings, Bearer, ?intent=transcription
            session = await r.stt.wait_sessions(1)
            assert session.headers["authorization"] == f"Bearer {FAKE_API_KEY}"
            assert session.query["intent"] == "transcription"
            update = session.updates[0]
            assert update["type"] == "session.update"
            audio_in = update["session"]["audio"]["input"]
            assert update["session"]["type"] == "transcription"
            assert audio_in["format"] == {"type": "audio/pcmu"}
            assert audio_in["transcription"]["model"] == "gpt-4o-mini-transcribe"
            vad = audio_in["turn_detection"]
            assert vad["type"] == "server_vad" and vad["threshold"] == 0.7
            assert vad["silence_duration_ms"] == 650
            # the caller's audio, byte for byte from the first frame
            await r.until(lambda: len(session.audio) >= len(HELLO_ULAW))
            assert bytes(session.audio[:len(HELLO_ULAW)]) == HELLO_ULAW
            # interims published as call.speech isFinal false; the final in the transcript
            call = await until_call(r, call_id, lambda c: any(
                x["speaker"] == "user" for x in c["transcript"]))
        user = [x for x in call["transcript"] if x["speaker"] == "user"]
        assert [x["text"] for x in user] == [script[0][0]] and user[0]["isFinal"] is True
        interims = [e for e in r.events("call.speech") if e.get("isFinal") is False]
        assert interims and all(e["callId"] == call_id for e in interims)
        finals = [e for e in r.events("call.speech") if e.get("isFinal") is True]
        assert [e["text"] for e in finals] == [script[0][0]]
        journal = [json.loads(line) for line in
                   (r.daemon.store / "calls.jsonl").read_text().splitlines()]
        mine = [rec for rec in journal if rec["callId"] == call_id]
        assert all(x.get("isFinal", True) for rec in mine for x in rec["transcript"])
        stt_ids = [i for i in mine[-1]["processedEventIds"] if i.startswith("stt:")]
        assert len(stt_ids) == 1  # the final only: no interim was journaled
        # the greeting's TTS request, as the OpenAI speech API takes it
        request = next(x for x in r.tts.requests if x.method == "POST")
        assert (request.method, request.path) == ("POST", "/v1/audio/speech")
        assert request.headers["authorization"] == "Bearer sk-test-fake-tts"
        assert request.json == {"model": "gpt-4o-mini-tts", "voice": "coral",
                                "input": "Thanks for calling.", "response_format": "pcm",
                                "instructions": "Speak warmly."}


async def until_call(r: Rig, call_id: str, predicate: Callable[[dict[str, Any]], bool]
                     ) -> dict[str, Any]:
    with trio.fail_after(WAIT_S):
        while True:
            call = await r.status(call_id)
            if predicate(call):
                return call
            await trio.sleep(0.02)  # bounded poll of the daemon's state over its socket


async def inbound_call(r: Rig, n: int = 1) -> tuple[str, str, str]:
    """An accepted inbound call: (call id, its stream token, its CallSid)."""
    sid = "CA" + str(n) * 32
    token = stream_of(await r.inbound(sid))[1]["token"]
    calls = (await r.rpc("voicecall.status"))["calls"]
    call_id = next(c["callId"] for c in calls if c.get("providerCallId") == sid)
    return call_id, token, sid


def stt_open(r: Rig) -> Callable[[], bool]:
    """The STT session is open and has its session.update (events can be pushed)."""
    return lambda: r.stt.current is not None and bool(r.stt.current.updates)


async def refused(r: Rig, **kwargs: Any) -> int:
    with pytest.raises(ConnectionRejected) as rejection:
        async with r.stream(**kwargs):
            pass
    return rejection.value.status_code


# -- 3. the upgrade signature ------------------------------------------------------------------


async def test_the_upgrade_is_signed_over_the_twiml_url_with_port_variants() -> None:
    async with rig() as r:
        call_id, token, sid = await inbound_call(r)
        # Twilio signs the URL as given, or with the scheme's default port
        for url in (STREAM_URL, "wss://voice.example.com:443/voice/stream"):
            async with r.stream(url=url) as stream:
                await stream.start(token, sid)
                await stream.until(lambda: bool(stream.of("media")))
        sessions = len(r.stt.connections)
        for kwargs in ({"signature": None}, {"signature": "AAAA"},
                       {"url": PUBLIC},  # the webhook's URL is not the stream's
                       {"url": STREAM_URL + "?token=" + token},  # no parameters in it
                       {"url": "wss://evil.example.com/voice/stream"}):
            assert await refused(r, **kwargs) == 403, kwargs
        assert len(r.stt.connections) == sessions  # a refused upgrade opens no STT session
        assert (await r.status(call_id))["state"] not in ("error", "failed")


async def test_behind_a_trusted_proxy_the_stream_url_follows_the_forwarded_host() -> None:
    """No publicUrl: the webhook's URL comes from a trusted proxy's X-Forwarded-* headers;
    the TwiML's stream URL is on that host, and the upgrade through the proxy verifies."""
    async with rig(publicUrl=None, webhookSecurity={
            "trustForwardingHeaders": True, "trustedProxyIPs": ["127.0.0.1"]}) as r:
        public = "https://proxy.example.net/voice/webhook"
        forwarded = {"X-Forwarded-Host": "proxy.example.net", "X-Forwarded-Proto": "https"}
        params = {"AccountSid": ACCOUNT, "ApiVersion": "2010-04-01", "CallSid": "CA" + "5" * 32,
                  "CallStatus": "ringing", "Direction": "inbound", "From": CALLER, "To": FROM}
        response = await r.http.post(r.daemon.webhook_url, data=params, headers={
            **forwarded, "X-Twilio-Signature": twilio_signature(public, params)})
        assert response.status_code == 200, response.text
        url, values, _ = stream_of(response.text)
        assert url == "wss://proxy.example.net/voice/stream"
        async with r.stream(url=url, headers=forwarded) as stream:
            await stream.start(values["token"], params["CallSid"])
            await stream.until(lambda: bool(stream.of("media")))


# -- 3. 1008, pre-start timeout, 503 ----------------------------------------------------------


async def test_bad_missing_and_ended_tokens_close_with_1008_without_an_stt_session() -> None:
    async with rig() as r:
        call_id, token, sid = await inbound_call(r)
        for bad in (None, "nonsense", call_id + ".AAAAAAAAAAAAAAAAAAAAAAAA",
                    token[:-1] + ("A" if token[-1] != "A" else "B")):
            async with r.stream() as stream:
                await stream.start(bad, sid)
                await stream.until(lambda: stream.close_code is not None)
                assert stream.close_code == 1008, bad
        assert not r.stt.connections
        await r.rpc("voicecall.end", {"callId": call_id})
        async with r.stream() as stream:  # reused after the call ended
            await stream.start(token, sid)
            await stream.until(lambda: stream.close_code is not None)
            assert stream.close_code == 1008
        assert not r.stt.connections


async def test_no_start_within_pre_start_timeout_closes_the_stream() -> None:
    async with rig(streaming={"preStartTimeoutMs": 400}) as r:
        await inbound_call(r)
        async with r.stream() as stream:
            opened = trio.current_time()
            await stream.send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
            await stream.until(lambda: stream.close_code is not None)
            waited = trio.current_time() - opened
        assert stream.close_code == 1008 and 0.35 <= waited < 3.0
        assert not r.stt.connections


async def test_a_flood_of_pending_upgrades_gets_503_and_the_daemon_serves_on() -> None:
    async with rig(streaming={"maxPendingConnectionsPerIp": 2, "maxPendingConnections": 3,
                              "preStartTimeoutMs": 5000}) as r:
        _, token, sid = await inbound_call(r)
        async with r.stream() as live:  # a live stream before the flood
            await live.start(token, sid)
            await live.until(lambda: bool(live.of("media")))
            async with r.stream() as p1, r.stream() as p2:
                del p1, p2  # pending: no start
                assert await refused(r) == 503
                assert await refused(r, signature=None) == 503  # before any verification
                # webhooks are still served, and so is the live stream
                other = stream_of(await r.inbound("CA" + "8" * 32))[0]
                assert other == STREAM_URL
                await live.media(HELLO_ULAW[:1600], paced=False)
                await r.until(lambda: bytes(r.stt.sessions[0].audio).endswith(HELLO_ULAW[:1600]))
                assert live.close_code is None
            # once they are gone, upgrades are admitted again
            async with r.stream() as again:
                await again.start(token, sid)
                await again.until(lambda: again.close_code is not None or bool(again.of("media")))


# -- 3. takeover, malformed messages, shutdown -------------------------------------------------


async def test_a_second_stream_takes_over_closing_the_first_with_1000() -> None:
    async with rig([("Second stream words.", 300, 1200)]) as r:
        call_id, token, sid = await inbound_call(r)
        async with r.stream() as first:
            await first.start(token, sid)
            await first.media(HELLO_ULAW[:1600])
            await r.until(lambda: len(r.stt.sessions) == 1)
            async with r.stream() as second:
                await second.start(token, sid)
                await first.until(lambda: first.close_code is not None)
                assert first.close_code == 1000
                said = HELLO_ULAW[:8 * 1600]  # with the first's 200 ms, past the utterance
                await second.media(said)
                call = await until_call(r, call_id, lambda c: any(
                    x["speaker"] == "user" for x in c["transcript"]))
        assert len(r.stt.sessions) == 1  # the call's one STT session carried on
        assert bytes(r.stt.sessions[0].audio).endswith(said)
        assert call["state"] not in ("error", "failed")


async def test_malformed_messages_are_skipped_and_the_stream_carries_on(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="voicecall.media")
    async with rig() as r:
        _, token, sid = await inbound_call(r)
        async with r.stream() as stream:
            await stream.start(token, sid)
            await stream.media(HELLO_ULAW[:800], paced=False)
            for junk in ("not json", "{}", '{"event":"bogus"}', '{"event":"media"}',
                         '{"event":"media","media":{"payload":"***"}}', "[1,2,3]",
                         '{"event":"start","start":7}', "\u0000" * 100):
                await stream.ws.send_message(junk)
            await stream.media(HELLO_ULAW[800:1600], paced=False)
            await r.until(lambda: len(r.stt.sessions) == 1
                          and len(r.stt.sessions[0].audio) >= 1600)
            assert bytes(r.stt.sessions[0].audio[:1600]) == HELLO_ULAW[:1600]
            assert stream.close_code is None
    skipped = [x for x in caplog.records if "skipped" in x.getMessage()]
    assert len(skipped) == 1  # once for the stream, however many it sent


async def test_shutdown_closes_every_stream_with_1001() -> None:
    async with rig() as r:
        (_, t1, s1), (_, t2, s2) = await inbound_call(r, 1), await inbound_call(r, 2)
        async with r.stream() as a, r.stream() as b:
            await a.start(t1, s1)
            await b.start(t2, s2)
            await a.until(lambda: bool(a.of("media")))
            await b.until(lambda: bool(b.of("media")))
            r.daemon.handle.stop()
            await a.until(lambda: a.close_code is not None)
            await b.until(lambda: b.close_code is not None)
            assert (a.close_code, b.close_code) == (1001, 1001)


# -- 4. finals in committed order -----------------------------------------------------------


async def test_finals_are_ordered_by_previous_item_id() -> None:
    async with rig() as r:
        call_id, token, sid = await inbound_call(r)
        async with r.stream() as stream:
            await stream.start(token, sid)
            await stream.media(HELLO_ULAW[:800], paced=False)
            await r.until(stt_open(r))
            for event in (
                {"type": "input_audio_buffer.committed", "item_id": "it_a",
                 "previous_item_id": None},
                {"type": "input_audio_buffer.committed", "item_id": "it_b",
                 "previous_item_id": "it_a"},
                {"type": "conversation.item.input_audio_transcription.completed",
                 "item_id": "it_b", "content_index": 0, "transcript": "Second."},
                {"type": "error", "error": {"type": "server_error", "message": "hiccup"}},
                {"type": "conversation.item.input_audio_transcription.completed",
                 "item_id": "it_a", "content_index": 0, "transcript": "First."},
            ):
                await r.stt.send_event(event)
            call = await until_call(r, call_id, lambda c: len(
                [x for x in c["transcript"] if x["speaker"] == "user"]) == 2)
        assert [x["text"] for x in call["transcript"] if x["speaker"] == "user"] == [
            "First.", "Second."]


# -- 5. TTS shapes, barge-in, failure, mark timeout ------------------------------------------


async def test_elevenlabs_speech_is_requested_as_ulaw_8000() -> None:
    async with rig(tts={"provider": "elevenlabs"}) as r:
        _, token, sid = await inbound_call(r)
        async with r.stream() as stream:
            await stream.start(token, sid)
            await stream.until(lambda: bool(stream.of("mark")))
        (request,) = [x for x in r.tts.requests if x.method == "POST"]
        assert request.path == "/v1/text-to-speech/JBFqnCBsd6RMkjVDRZzb/stream"
        assert request.query == {"output_format": "ulaw_8000"}
        assert request.headers["xi-api-key"] == "sk-test-fake-tts"
        assert "authorization" not in request.headers
        assert request.json == {"text": "Thanks for calling.", "model_id": "eleven_flash_v2_5"}
        assert bytes(b"".join(stream.frames)).startswith(r.tts.ulaw[:len(r.tts.ulaw) // 160 * 160])


async def test_barge_in_clears_drops_the_queue_and_records_what_was_heard() -> None:
    long = tone_pcm(3.0)
    async with rig(tts_pcm=long, inboundGreeting="A long greeting.") as r:
        call_id, token, sid = await inbound_call(r)
        async with r.stream() as stream:
            await stream.start(token, sid)
            await stream.until(lambda: len(stream.frames) >= 40)  # ~0.8 s of the greeting
            await r.rpc("voicecall.speak", {"callId": call_id, "message": "Queued behind."})
            await r.until(stt_open(r))
            await r.stt.send_event({"type": "input_audio_buffer.speech_started",
                                    "item_id": "it_1", "audio_start_ms": 100})
            await stream.until(lambda: bool(stream.of("clear")))
            sent_before_clear = len(stream.frames)
            call = await until_call(r, call_id, lambda c: any(
                x.get("interrupted") for x in c["transcript"]))
            with trio.move_on_after(0.5):  # nothing more may come: the queue was dropped
                await stream.until(lambda: len(stream.frames) > sent_before_clear)
            assert len(stream.frames) == sent_before_clear
        bots = [x for x in call["transcript"] if x["speaker"] == "bot"]
        assert [x["text"] for x in bots] == ["A long greeting."]  # full text kept
        assert bots[0]["interrupted"] is True
        assert 0 < bots[0]["heardMs"] <= sent_before_clear * 20
        assert sent_before_clear * 20 - bots[0]["heardMs"] <= 100  # the lead, at most
        assert not any(e.get("callId") == call_id for e in r.events("call.spoken"))


async def test_a_tts_failure_is_a_retryable_call_error_and_the_call_goes_on() -> None:
    async with rig() as r:
        call_id, token, sid = await inbound_call(r)
        async with r.stream() as stream:
            await stream.start(token, sid)
            await stream.until(lambda: bool(stream.of("mark")))
            r.tts.fail_with(500)
            with pytest.raises(RpcError) as speak:
                await r.rpc("voicecall.speak", {"callId": call_id, "message": "Lost."})
            assert "500" in speak.value.message
            with pytest.raises(RpcError) as cont:
                await r.rpc("voicecall.continue", {"callId": call_id, "message": "Lost too."})
            assert "500" in cont.value.message
            errors = [e for e in r.events("call.error") if e["callId"] == call_id]
            assert errors and all(e["retryable"] is True for e in errors)
            r.tts.fail_with(None)
            await r.rpc("voicecall.speak", {"callId": call_id, "message": "Back."})
            assert (await r.status(call_id))["state"] not in (
                "error", "failed", "completed", "hangup-bot")


async def test_a_mark_never_echoed_counts_as_spoken_after_length_plus_2_s() -> None:
    async with rig(tts_pcm=tone_pcm(0.4)) as r:
        call_id, token, sid = await inbound_call(r)
        async with r.stream() as stream:
            stream.echo_marks = False
            await stream.start(token, sid)
            await stream.until(lambda: bool(stream.of("mark")))
            first = next(t for t, m in stream.received if m["event"] == "media")
            await r.until(lambda: any(e["callId"] == call_id for e in r.events("call.spoken")))
            waited = trio.current_time() - first
        assert 2.3 <= waited <= 3.5, waited


# -- 4. STT reconnects: the gap's last 2 s first, at most 5 tries, then the call goes on ----


async def test_an_stt_drop_reconnects_and_sends_the_gaps_last_2_s_first() -> None:
    async with rig() as r:
        _, token, sid = await inbound_call(r)
        async with r.stream() as stream:
            await stream.start(token, sid)
            await stream.media(HELLO_ULAW[:1600], paced=False)
            await r.until(lambda: len(r.stt.sessions) == 1
                          and len(r.stt.sessions[0].audio) == 1600)
            r.stt.refuse_next(1, 503)
            r.stt.drop()
            await r.until(lambda: len(r.stt.connections) == 2)  # refused: in the gap now
            gap = (HELLO_ULAW * 2)[:3 * 8000]  # 3 s while the STT is away
            await stream.media(gap, paced=False)
            await r.until(lambda: len(r.stt.sessions) == 2
                          and len(r.stt.sessions[1].audio) >= 2 * 8000)
            assert bytes(r.stt.sessions[1].audio) == gap[-2 * 8000:]
            assert r.stt.sessions[1].updates[0]["type"] == "session.update"


async def test_an_stt_that_stays_away_is_given_up_after_5_tries_and_the_call_goes_on() -> None:
    async with rig(transcriptTimeoutMs=800) as r:
        call_id, token, sid = await inbound_call(r)
        async with r.stream() as stream:
            await stream.start(token, sid)
            await r.until(stt_open(r))
            r.stt.refuse_next(100, 503)
            r.stt.drop()
            call = await until_call(r, call_id, lambda c: bool(
                c["metadata"].get("transcriptionLost")))
            tries = len(r.stt.connections) - 1
            assert 1 <= tries <= 5
            errors = [e for e in r.events("call.error") if e["callId"] == call_id]
            assert any(e["retryable"] is True and "transcription" in e["error"] for e in errors)
            assert call["state"] not in ("error", "failed", "completed")
            with pytest.raises(RpcError) as timeout:
                await r.rpc("voicecall.continue", {"callId": call_id, "message": "Hello?"})
            assert timeout.value.code == -32005
            assert len(r.stt.connections) - 1 == tries  # no more tries after giving up
        journal = [json.loads(line) for line in
                   (r.daemon.store / "calls.jsonl").read_text().splitlines()]
        assert any(rec["metadata"].get("transcriptionLost") for rec in journal
                   if rec["callId"] == call_id)


# -- 1, 2: no OpenAI key ---------------------------------------------------------------------


async def test_no_openai_key_one_warning_naming_both_keys_and_gather(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    config = {"provider": "twilio", "fromNumber": FROM, "publicUrl": PUBLIC,
              "twilio": {"accountSid": ACCOUNT, "authToken": AUTH_TOKEN,
                         "apiBaseUrl": "http://127.0.0.1:9"},
              "inboundPolicy": "open", "shutdownGraceSeconds": 1,
              "responseBaseUrl": "http://127.0.0.1:9/v1",
              "streaming": {"enabled": True}}
    async with running_daemon(config) as daemon, httpx.AsyncClient(timeout=10) as http:
        params = {"AccountSid": ACCOUNT, "ApiVersion": "2010-04-01", "CallSid": "CA" + "4" * 32,
                  "CallStatus": "ringing", "Direction": "inbound", "From": CALLER, "To": FROM}
        response = await http.post(daemon.webhook_url, data=params, headers={
            "X-Twilio-Signature": twilio_signature(PUBLIC, params)})
        root = ET.fromstring(response.text)
        assert root.find(".//Gather") is not None and root.find(".//Connect") is None
    naming = [rec for rec in caplog.records if rec.levelno == logging.WARNING
              and "streaming.openaiApiKey" in rec.getMessage()
              and "OPENAI_API_KEY" in rec.getMessage()]
    assert len(naming) == 1, [r.getMessage() for r in naming]
    from voicecall_trio.cli.doctor import local

    check = local.check_keys(build_config(config, {}), {})
    assert "streaming.openaiApiKey" in check.detail and "OPENAI_API_KEY" in check.detail


# -- 2, 5: outbound calls (the shipped FakeTwilio dials them) --------------------------------


@asynccontextmanager
async def outbound_rig() -> AsyncIterator[tuple[RunningDaemon, Any]]:
    from voicecall_trio.testing.fake_twilio import Callee, FakeTwilio

    async with AsyncExitStack() as stack:
        fake = await stack.enter_async_context(FakeTwilio(
            account_sid=ACCOUNT, auth_token=AUTH_TOKEN, phone_number=FROM, voice_url=PUBLIC,
            default_callee=Callee(stream_audio=HELLO_ULAW)))
        stt = await stack.enter_async_context(FakeRealtimeSTT())
        tts = await stack.enter_async_context(FakeTTS())
        daemon = await stack.enter_async_context(running_daemon({
            "provider": "twilio", "fromNumber": FROM, "publicUrl": PUBLIC,
            "twilio": {"accountSid": ACCOUNT, "authToken": AUTH_TOKEN, "apiBaseUrl": fake.url},
            "maxConcurrentCalls": 4, "shutdownGraceSeconds": 2,
            "outbound": {"notifyHangupDelaySec": 0.1},
            "responseBaseUrl": "http://127.0.0.1:9/v1",
            "streaming": {"enabled": True, "openaiApiKey": FAKE_API_KEY,
                          "realtimeUrl": stt.url},
            "tts": tts.config()}))
        fake.tunnel(PUBLIC, daemon.base_url)
        yield daemon, fake


async def test_notify_calls_keep_say_and_hangup_while_streaming_runs() -> None:
    async with outbound_rig() as (daemon, fake):
        await daemon.rpc("voicecall.initiate", {"to": "+15555550123", "message": "Your order "
                                                "is ready.", "mode": "notify"})
        with trio.fail_after(WAIT_S):
            await fake.wait_for(lambda: any(c.documents for c in fake.calls.values()))
        (call,) = fake.calls.values()
        root = ET.fromstring(call.documents[0])
        assert root.find("./Say") is not None and root.find("./Hangup") is not None
        assert root.find(".//Connect") is None and not call.media


async def test_an_outbound_greeting_is_ready_when_the_stream_starts() -> None:
    async with outbound_rig() as (daemon, fake):
        await daemon.rpc("voicecall.initiate", {"to": "+15555550123", "message": "Hello "
                                                "there, a quick question.",
                                                "mode": "conversation"})
        with trio.fail_after(WAIT_S):
            await fake.wait_for(lambda: any(s.arrivals for c in fake.calls.values()
                                            for s in c.media))
        (call,) = fake.calls.values()
        url, params, root = stream_of(call.documents[0])
        assert url == STREAM_URL and "token" in params and root.find(".//Say") is None
        (stream,) = call.media
        # synthesised while the phone rang: out at once (the issue's budget is 100 ms)
        assert stream.arrivals[0][0] - stream.opened_at < 0.25


# -- more of 3, 4, 5: audio held while connecting, maxConnections, bargeIn off ---------------


async def test_audio_that_arrives_while_the_stt_connects_is_held_and_sent_first() -> None:
    async with rig() as r:
        _, token, sid = await inbound_call(r)
        r.stt.refuse_next(2, 503)  # the first session opens only after two tries (~0.6 s)
        async with r.stream() as stream:
            await stream.start(token, sid)
            await stream.media(HELLO_ULAW[:8000])  # 1 s, paced, while it connects
            await r.until(lambda: len(r.stt.sessions) == 1
                          and len(r.stt.sessions[0].audio) >= 8000)
            assert bytes(r.stt.sessions[0].audio) == HELLO_ULAW[:8000]
            assert len(r.stt.connections) == 3


async def test_max_connections_refuses_more_streams_with_503() -> None:
    async with rig(streaming={"maxConnections": 1}) as r:
        _, token, sid = await inbound_call(r)
        async with r.stream() as live:
            await live.start(token, sid)
            await live.until(lambda: bool(live.of("media")))
            assert await refused(r) == 503
            assert live.close_code is None


async def test_with_barge_in_off_the_bot_is_not_cleared() -> None:
    async with rig(tts_pcm=tone_pcm(2.0), streaming={"bargeIn": False}) as r:
        call_id, token, sid = await inbound_call(r)
        async with r.stream() as stream:
            await stream.start(token, sid)
            await stream.until(lambda: len(stream.frames) >= 10)
            await r.until(stt_open(r))
            await r.stt.send_event({"type": "input_audio_buffer.speech_started",
                                    "item_id": "it_1", "audio_start_ms": 100})
            await stream.until(lambda: bool(stream.of("mark")))  # played to its end
            assert not stream.of("clear")
        call = await r.status(call_id)
        assert not any(x.get("interrupted") for x in call["transcript"])


async def test_continue_listens_from_when_its_words_were_heard() -> None:
    """The mark's echo (call.spoken) starts continue's listening: a reply that takes longer
    to say than transcriptTimeoutMs still gets the caller's answer after it."""
    async with rig([("Yes, eight works.", 2500, 300)], tts_pcm=tone_pcm(2.0),
                   transcriptTimeoutMs=1500) as r:
        call_id, token, sid = await inbound_call(r)
        async with r.stream() as stream:
            await stream.start(token, sid)
            await stream.until(lambda: bool(stream.of("mark")))  # the greeting, heard
            await r.until(stt_open(r))
            r.nursery.start_soon(stream.media, HELLO_ULAW * 2)
            answer = await r.rpc("voicecall.continue", {"callId": call_id,
                                                        "message": "Shall we say eight?"})
        assert answer["transcript"] == "Yes, eight works."


async def test_utterances_play_in_order_each_followed_by_its_mark() -> None:
    async with rig(tts_pcm=tone_pcm(0.3)) as r:
        call_id, token, sid = await inbound_call(r)
        async with r.stream() as stream:
            await stream.start(token, sid)
            for text in ("One.", "Two.", "Three."):  # each queued while the last one plays
                await r.rpc("voicecall.speak", {"callId": call_id, "message": text})
            await stream.until(lambda: len(stream.of("mark")) == 4)
            call = await until_call(r, call_id, lambda c: len(
                [e for e in r.events("call.spoken") if e["callId"] == call_id]) == 4)
        kinds = [m["event"] for _, m in stream.received]
        # each utterance: its frames, then its mark (no frames of the next before it)
        runs = "".join("m" if k == "media" else "k" for k in kinds if k in ("media", "mark"))
        assert re.fullmatch(r"(m+k){4}", runs), runs
        bots = [x["text"] for x in call["transcript"] if x["speaker"] == "bot"]
        assert bots == ["Thanks for calling.", "One.", "Two.", "Three."]


async def test_a_greeting_whose_tts_fails_leaves_the_call_up_and_listening() -> None:
    async with rig([("Hello?", 300, 500)]) as r:
        r.tts.fail_with(500)
        call_id, token, sid = await inbound_call(r)
        async with r.stream() as stream:
            await stream.start(token, sid)
            r.nursery.start_soon(stream.media, HELLO_ULAW[:8 * 1200])
            await r.until(lambda: any(e["callId"] == call_id for e in r.events("call.error")))
            call = await until_call(r, call_id, lambda c: any(
                x["speaker"] == "user" for x in c["transcript"]))
            assert stream.close_code is None and not stream.frames
        errors = [e for e in r.events("call.error") if e["callId"] == call_id]
        assert all(e["retryable"] is True and "500" in e["error"] for e in errors)
        assert call["state"] not in ("error", "failed", "completed", "hangup-bot")
