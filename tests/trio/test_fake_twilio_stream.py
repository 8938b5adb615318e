"""FakeTwilio follows ``<Connect><Stream>``: checked against a tiny stand-in for the daemon.

The stand-in is a trio-websocket server that verifies the upgrade's ``X-Twilio-Signature``
with ``providers/twilio/signature.validate``, records every message with its trio time, and
sends media, marks and clears when a test asks. Most tests join fake and stand-in with a
memory stream pair (the fake's ``connect_stream``) on the autojump clock, so pacing and echo
times are exact; the last runs the same over a real loopback socket (so this file is mixed).
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import trio
import trio.testing
import trio_websocket

from voicecall_trio.providers.twilio.signature import validate
from voicecall_trio.testing.fake_twilio import (
    Callee,
    FakeCall,
    FakeStream,
    FakeTwilio,
    hello_ulaw,
)

VECTORS = Path(__file__).resolve().parents[3] / "shared" / "vectors"
ACCOUNT = "AC" + "7" * 32
TOKEN = "stream-test-auth-token-0123456789"
CALLEE = "+15555550123"
FROM = "+15550001234"
PUBLIC = "https://voice.example.com/voice/webhook"
STREAM_URL = "wss://voice.example.com/voice/stream"
BOUND_S = 120  # virtual seconds: a test that hangs fails instead of waiting forever
FRAME = 160


def twiml(*, then: str = "", url: str = STREAM_URL, token: str = "tok-1") -> str:
    return (f'<Response><Connect><Stream url="{url}">'
            f'<Parameter name="token" value="{token}"/><Parameter name="flow" value="demo"/>'
            f"</Stream></Connect>{then}</Response>")


# -- the stand-in daemon --------------------------------------------------------------------


@dataclass
class Peer:
    """One accepted stream, as the stand-in saw it."""

    ws: trio_websocket.WebSocketConnection
    headers: dict[str, str]
    path: str
    messages: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    closed: trio_websocket.CloseReason | None = None
    done_at_stop: bool | None = None  # was the fake's call over when `stop` arrived?

    def events(self) -> list[str]:
        return [m["event"] for _, m in self.messages]

    def media(self) -> list[tuple[float, dict[str, Any]]]:
        return [(t, m) for t, m in self.messages if m["event"] == "media"]

    def audio(self) -> bytes:
        return b"".join(base64.b64decode(m["media"]["payload"]) for _, m in self.media())

    @property
    def stream_sid(self) -> str:
        return str(next(m for _, m in self.messages if m["event"] == "start")["streamSid"])

    async def send(self, event: str, **body: Any) -> None:
        await self.ws.send_message(json.dumps({"event": event, "streamSid": self.stream_sid,
                                               **body}))

    async def send_audio(self, ulaw: bytes) -> None:
        for start in range(0, len(ulaw), FRAME):
            payload = base64.b64encode(ulaw[start:start + FRAME]).decode()
            await self.send("media", media={"payload": payload})

    async def send_mark(self, name: str) -> None:
        await self.send("mark", mark={"name": name})


class StandIn:
    """Checks the signature over the stream URL it publishes, then records and obeys."""

    def __init__(self, fake: FakeTwilio, token: str = TOKEN, url: str = STREAM_URL) -> None:
        self.fake, self.token, self.url = fake, token, url
        self.peers: list[Peer] = []
        self.refusals: list[str] = []
        self._changed = trio.Event()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            await self._changed.wait()

    async def peer(self, index: int = 0, *, frames: int = 0) -> Peer:
        """The ``index``th accepted stream, once it has sent ``frames`` media frames."""
        await self.wait(lambda: len(self.peers) > index
                        and len(self.peers[index].media()) >= frames)
        return self.peers[index]

    async def handle(self, request: trio_websocket.WebSocketRequest) -> None:
        headers = {k.decode().lower(): v.decode() for k, v in request.headers}
        check = validate(self.token, self.url, (), headers.get("x-twilio-signature", ""))
        if not headers.get("x-twilio-signature"):
            check = type(check)(False, "missing signature")
        if not check.ok:
            self.refusals.append(check.reason)
            self._notify()
            await request.reject(403)
            return
        peer = Peer(await request.accept(), headers, request.path)
        self.peers.append(peer)
        self._notify()
        try:
            while True:
                message = json.loads(await peer.ws.get_message())
                if message["event"] == "stop":
                    call = self.fake.calls[message["stop"]["callSid"]]
                    peer.done_at_stop = call.done.is_set()
                peer.messages.append((trio.current_time(), message))
                self._notify()
        except trio_websocket.ConnectionClosed as closed:
            peer.closed = closed.reason
            self._notify()

    def connector(self, nursery: trio.Nursery) -> Callable[[str, int], Any]:
        """The fake's ``connect_stream``: one end of a memory pair, the stand-in on the other."""

        async def connect(host: str, port: int) -> trio.abc.Stream:
            client, server = trio.testing.memory_stream_pair()

            async def serve() -> None:
                request = await trio_websocket.wrap_server_stream(nursery, cast(Any, server))
                await self.handle(request)

            nursery.start_soon(serve)
            return client

        return connect


@dataclass
class Rig:
    fake: FakeTwilio
    daemon: StandIn
    http: httpx.AsyncClient

    async def place(self, document: str) -> FakeCall:
        """An outbound call whose TwiML is ``document`` (``Twiml=`` on create)."""
        created = await self.http.post(f"/2010-04-01/Accounts/{ACCOUNT}/Calls.json",
                                       data={"To": CALLEE, "From": FROM, "Twiml": document})
        assert created.status_code == 201, created.text
        return self.fake.calls[created.json()["sid"]]

    async def hang_up(self, call: FakeCall) -> None:
        await self.http.post(f"/2010-04-01/Accounts/{ACCOUNT}/Calls/{call.sid}.json",
                             data={"Status": "completed"})


@asynccontextmanager
async def rig(*, daemon_token: str = TOKEN, **kwargs: Any) -> AsyncIterator[Rig]:
    """FakeTwilio in memory, its streams reaching a stand-in over memory streams."""
    async with trio.open_nursery() as nursery:
        fake = FakeTwilio(account_sid=ACCOUNT, auth_token=TOKEN, phone_number=FROM, **kwargs)
        daemon = StandIn(fake, token=daemon_token)
        fake.connect_stream = daemon.connector(nursery)
        fake.tunnel(PUBLIC, "http://127.0.0.1:9")  # the daemon's address; any, in memory
        with trio.fail_after(BOUND_S):
            async with fake.in_memory("http://twilio.test"), httpx.AsyncClient(
                    transport=fake.transport(), base_url="http://twilio.test",
                    auth=(ACCOUNT, TOKEN)) as http:
                yield Rig(fake, daemon, http)
        nursery.cancel_scope.cancel()


def hello() -> bytes:
    return (VECTORS / "hello_table_for_two_8k.ulaw").read_bytes()


# -- tests ------------------------------------------------------------------------------------


def test_hello_ulaw_is_the_vectors_file() -> None:
    assert hello_ulaw() == hello() and len(hello_ulaw()) == 163 * FRAME


async def test_signed_upgrade_connected_start_and_paced_frames_of_the_callee_audio(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with rig(default_callee=Callee(stream_audio=hello_ulaw())) as r:
        call = await r.place(twiml())
        peer = await r.daemon.peer(frames=200)
        stream = call.media[0]
        assert r.daemon.refusals == [] and peer.path == "/voice/stream"
        assert peer.headers["x-forwarded-host"] == "voice.example.com"
        assert peer.headers["x-forwarded-proto"] == "https"
        assert peer.headers["user-agent"] == "Twilio.TmeWs/1.0"
        first, start = peer.messages[0][1], peer.messages[1][1]
        assert first == {"event": "connected", "protocol": "Call", "version": "1.0.0"}
        assert start["event"] == "start" and start["sequenceNumber"] == "1"
        sid = start["streamSid"]
        assert sid == stream.stream_sid and sid.startswith("MZ") and len(sid) == 34
        assert start["start"] == {
            "accountSid": ACCOUNT, "streamSid": sid, "callSid": call.sid, "tracks": ["inbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            "customParameters": {"token": "tok-1", "flow": "demo"}}
        media = peer.media()
        began = media[0][0]
        for n, (at, message) in enumerate(media):
            assert message["sequenceNumber"] == str(n + 2) and message["streamSid"] == sid
            assert message["media"]["track"] == "inbound"
            assert message["media"]["chunk"] == str(n + 1)
            assert message["media"]["timestamp"] == str(20 * n)
            assert len(base64.b64decode(message["media"]["payload"])) == FRAME
            assert at == pytest.approx(began + 0.02 * n, abs=1e-9)  # paced, no drift
        audio = peer.audio()
        assert audio[:len(hello())] == hello()  # the file, byte for byte, from the first frame
        assert set(audio[len(hello()):]) == {0xFF}  # then silence: Twilio streams on
        assert bytes(stream.sent) == audio[:len(stream.sent)]
        assert call.status == "in-progress" and call.streams == [
            {"url": STREAM_URL, "token": "tok-1", "flow": "demo"}]


async def test_play_audio_queues_callee_audio_between_silence(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with rig() as r:
        call = await r.place(twiml())
        await r.daemon.peer(frames=10)
        r.fake.play_audio(call.sid, b"\x01" * 200)  # not a whole frame: padded with silence
        peer = await r.daemon.peer(frames=20)
        audio = peer.audio()
        start = audio.index(b"\x01")
        assert start % FRAME == 0 and set(audio[:start]) == {0xFF}
        assert audio[start:start + 320] == b"\x01" * 200 + b"\xff" * 120
        assert set(audio[start + 320:]) == {0xFF}
        with pytest.raises(ValueError):
            r.fake.play_audio(call.sid, b"\x00" * 8000 * 601)


async def test_marks_are_echoed_when_the_audio_before_them_has_played(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with rig() as r:
        call = await r.place(twiml())
        peer = await r.daemon.peer(frames=1)
        stream = call.media[0]
        sent_at = trio.current_time()
        await peer.send_audio(hello()[:50 * FRAME])  # 1.0 s, sent at once
        await peer.send_mark("greeting")
        await r.daemon.wait(lambda: "mark" in peer.events())
        echo_at, echo = next((t, m) for t, m in peer.messages if m["event"] == "mark")
        assert echo["mark"] == {"name": "greeting"} and echo["streamSid"] == stream.stream_sid
        assert echo_at == pytest.approx(sent_at + 1.0, abs=1e-6)  # the played duration
        assert stream.audio == hello()[:50 * FRAME] and len(stream.arrivals) == 50
        await peer.send_mark("idle")  # nothing queued: echoed at once
        await r.daemon.wait(lambda: peer.events().count("mark") == 2)
        assert stream.marks == ["greeting", "idle"]
        assert stream.echoed_names == ["greeting", "idle"]
        assert stream.echoed[1][0] == pytest.approx(echo_at, abs=1e-6)


async def test_clear_drops_unplayed_audio_and_echoes_pending_marks_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with rig() as r:
        call = await r.place(twiml())
        peer = await r.daemon.peer(frames=1)
        stream = call.media[0]
        sent_at = trio.current_time()
        await peer.send_audio(b"\x10" * 16000)  # 2 s
        await peer.send_mark("reply-1")
        await r.daemon.peer(frames=26)  # half a second of inbound frames later
        await peer.send("clear")
        await r.daemon.wait(lambda: "mark" in peer.events())
        echo_at = next(t for t, m in peer.messages if m["event"] == "mark")
        assert stream.clears == [pytest.approx(echo_at)]
        assert echo_at - sent_at < 1.0  # long before the 2 s would have played
        assert stream.cleared_bytes == round((sent_at + 2.0 - echo_at) * 8000)
        await peer.send_mark("after-clear")  # nothing left to play: at once
        await r.daemon.wait(lambda: peer.events().count("mark") == 2)
        assert stream.echoed[1][0] == pytest.approx(echo_at, abs=0.03)


async def test_the_daemon_closing_ends_connect_and_the_next_verb_runs(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with rig() as r:
        call = await r.place(twiml(then="<Say>Goodbye after the stream</Say>"))
        peer = await r.daemon.peer(frames=3)
        await peer.ws.aclose(1000)
        await call.done.wait()
        stream = call.media[0]
        assert stream.closed_by == "daemon" and stream.close_code == 1000
        assert stream.state == "closed" and not stream.stop_sent
        assert call.said == ["Goodbye after the stream"]
        assert call.status == "completed" and call.ended_by == "twiml"


async def test_no_verb_after_connect_completes_the_call(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with rig() as r:
        call = await r.place(twiml())
        peer = await r.daemon.peer(frames=1)
        await peer.ws.aclose(1008, "bad token")
        await call.done.wait()
        assert call.media[0].close_code == 1008 and call.media[0].close_reason == "bad token"
        assert call.status == "completed"


async def test_callee_hang_up_sends_stop_then_closes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with rig() as r:
        call = await r.place(twiml())
        peer = await r.daemon.peer(frames=5)
        await r.fake.callee_hangup(call.sid)
        await r.daemon.wait(lambda: peer.closed is not None)
        stop = peer.messages[-1][1]
        assert stop["event"] == "stop" and stop["streamSid"] == peer.stream_sid
        assert stop["stop"] == {"accountSid": ACCOUNT, "callSid": call.sid}
        assert peer.closed is not None and peer.closed.code == 1000
        stream = call.media[0]
        await r.fake.wait_for(lambda: stream.state == "closed")
        assert stream.stop_sent and stream.closed_by == "fake" and stream.close_code == 1000


async def test_a_late_stop_comes_after_the_call_has_ended(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with rig() as r:
        call = await r.place(twiml())
        peer = await r.daemon.peer(frames=5)
        r.fake.stop_stream(call.sid, late=True)
        frames = len(peer.media())
        await r.hang_up(call)
        await r.daemon.wait(lambda: peer.closed is not None)
        assert peer.events()[-1] == "stop" and peer.done_at_stop is True
        assert len(peer.media()) <= frames + 1  # media stops with the call; stop comes later


async def test_stop_stream_now_ends_the_connect_verb(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with rig() as r:
        call = await r.place(twiml(then="<Say>next</Say>"))
        peer = await r.daemon.peer(frames=2)
        r.fake.stop_stream(call.sid)
        await call.done.wait()
        assert peer.events()[-1] == "stop" and peer.done_at_stop is False
        assert call.said == ["next"]


async def test_a_second_stream_takes_the_audio_and_the_call_goes_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with rig() as r:
        call = await r.place(twiml())
        first = await r.daemon.peer(0, frames=5)
        second_record = await r.fake.second_stream(call.sid)
        assert second_record.open and call.stream is second_record
        assert second_record.stream_sid != call.media[0].stream_sid
        second = await r.daemon.peer(1, frames=1)
        start = second.messages[1][1]["start"]
        assert start["callSid"] == call.sid and start["customParameters"]["token"] == "tok-1"
        r.fake.play_audio(call.sid, hello()[:FRAME * 10])
        await first.ws.aclose(1000)  # the daemon closes the older one: a takeover
        await r.daemon.peer(1, frames=20)
        assert call.status == "in-progress"  # one stream is still open
        assert set(first.audio()) == {0xFF} and hello()[:FRAME * 10] in second.audio()
        assert call.media[0].closed_by == "daemon" and call.media[0].close_code == 1000
        await second.ws.aclose(1000)
        await call.done.wait()
        assert call.status == "completed"


async def test_a_dropped_socket_has_no_close_frame_and_no_stop(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with rig() as r:
        call = await r.place(twiml())
        peer = await r.daemon.peer(frames=3)
        r.fake.drop_stream(call.sid)
        await r.daemon.wait(lambda: peer.closed is not None)
        assert peer.closed is not None and peer.closed.code == 1006
        assert "stop" not in peer.events()
        await call.done.wait()
        assert call.media[0].closed_by == "drop" and call.status == "completed"


async def test_a_refused_upgrade_is_recorded_and_the_twiml_goes_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with rig(daemon_token="another-token") as r:
        call = await r.place(twiml(then="<Say>fallback</Say>"))
        await call.done.wait()
        stream = call.media[0]
        assert stream.state == "refused" and stream.refused == 403
        assert r.daemon.refusals == ["invalid signature"]
        assert any(e.startswith("31920:") for e in call.errors)
        assert call.said == ["fallback"]


async def test_by_hand_unsigned_wrongly_signed_bad_token_and_silent_pre_start(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with rig(stream_autoconnect=False) as r:
        call = await r.place(twiml())
        await call.wait_for(lambda c: bool(c.streams))
        assert call.media == [] and r.daemon.peers == []  # recorded, not connected
        missing = await r.fake.open_stream(call.sid, signature="missing")
        wrong = await r.fake.open_stream(call.sid, signature="wrong")
        assert (missing.state, missing.refused, missing.signature) == ("refused", 403, None)
        assert wrong.state == "refused" and wrong.signature
        assert r.daemon.refusals == ["missing signature", "invalid signature"]
        assert call.status == "in-progress"  # nothing opened yet: the verb holds
        silent = await r.fake.open_stream(call.sid, parameters={"token": "nope"}, start=False)
        peer = await r.daemon.peer(0)
        await r.daemon.wait(lambda: bool(peer.messages))
        with trio.move_on_after(5):  # virtual time: nothing but `connected` comes
            await r.daemon.wait(lambda: len(peer.messages) > 1)
        assert peer.events() == ["connected"] and silent.frames_sent == 0
        await peer.ws.aclose(1008)
        await call.done.wait()
        assert silent.close_code == 1008 and call.status == "completed"


async def test_hostile_messages_from_the_daemon_are_counted_never_fatal(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with rig() as r:
        call = await r.place(twiml())
        peer = await r.daemon.peer(frames=1)
        sid = peer.stream_sid
        for junk in ["not json", "[1, 2]", json.dumps({"event": "media", "streamSid": "MZx",
                                                        "media": {"payload": "//8="}}),
                     json.dumps({"event": "media", "streamSid": sid,
                                 "media": {"payload": "***"}}),
                     json.dumps({"event": "media", "streamSid": sid, "media": []}),
                     json.dumps({"event": "mark", "streamSid": sid, "mark": {"name": 5}}),
                     json.dumps({"event": "sendDigits", "streamSid": sid}),
                     json.dumps({"event": "clear"})]:
            await peer.ws.send_message(junk)
        await peer.ws.send_message(b"\x00binary")
        await peer.send_mark("still-alive")
        await r.daemon.wait(lambda: "mark" in peer.events())
        stream = call.media[0]
        assert stream.bad_messages == 9 and len(stream.problems) == 9
        assert stream.open and stream.clears == [] and stream.received == b""
        frames = len(peer.media())
        await r.daemon.peer(frames=frames + 5)  # still streaming


async def test_dtmf_goes_out_before_the_next_frame(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with rig() as r:
        call = await r.place(twiml())
        peer = await r.daemon.peer(frames=2)
        r.fake.send_dtmf(call.sid, "42")
        await r.daemon.wait(lambda: peer.events().count("dtmf") == 2)
        digits = [m["dtmf"] for _, m in peer.messages if m["event"] == "dtmf"]
        assert digits == [{"track": "inbound_track", "digit": "4"},
                          {"track": "inbound_track", "digit": "2"}]
        assert call.media[0].dtmf_sent == ["4", "2"]


async def test_an_unreachable_stream_url_holds_the_call_as_connected(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with rig() as r:
        call = await r.place(twiml(url="wss://media.example.net/s"))
        await call.wait_for(lambda c: bool(c.media) and c.media[0].state == "unroutable")
        assert r.daemon.peers == [] and "cannot reach" in (call.media[0].error or "")
        assert call.status == "in-progress" and call.errors == []
        await r.hang_up(call)
        await call.done.wait()


def test_stream_request_signs_the_url_as_given_and_routes_like_webhooks() -> None:
    fake = FakeTwilio(account_sid=ACCOUNT, auth_token=TOKEN)
    assert fake.stream_request(STREAM_URL) is None  # no tunnel, not loopback: unreachable
    fake.tunnel(PUBLIC, "http://127.0.0.1:8123", forwarded_headers=False)
    request = fake.stream_request(STREAM_URL + "?x=1")
    assert request is not None
    assert (request.connect_host, request.connect_port) == ("127.0.0.1", 8123)
    assert request.host_header == "voice.example.com" and request.resource == "/voice/stream?x=1"
    assert request.signature and validate(TOKEN, STREAM_URL + "?x=1", (), request.signature).ok
    assert not any(k.startswith("X-Forwarded") for k, _ in request.headers)
    direct = fake.stream_request("ws://127.0.0.1:9000/voice/stream")
    assert direct is not None and (direct.connect_host, direct.connect_port) == ("127.0.0.1",
                                                                                 9000)
    assert fake.stream_request("https://voice.example.com/voice/stream") is None
    fake.quirks.sign_url = "default-port"
    signed = fake.stream_request(STREAM_URL)
    assert signed is not None and signed.signed_url == "wss://voice.example.com:443/voice/stream"
    assert fake.stream_request(STREAM_URL, "missing").signature is None  # type: ignore[union-attr]


async def test_on_a_real_loopback_socket() -> None:
    """The same fake over TCP to a trio-websocket server on 127.0.0.1:0 (real time, loose)."""
    fake = FakeTwilio(account_sid=ACCOUNT, auth_token=TOKEN, phone_number=FROM,
                      default_callee=Callee(stream_audio=hello_ulaw()))
    daemon = StandIn(fake)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(trio_websocket.serve_websocket, daemon.handle,
                                         "127.0.0.1", 0, None)
            fake.tunnel(PUBLIC, f"http://127.0.0.1:{server.port}")
            async with fake, httpx.AsyncClient(base_url=fake.url, auth=(ACCOUNT, TOKEN)) as http:
                r = Rig(fake, daemon, http)
                call = await r.place(twiml())
                peer = await daemon.peer(frames=10)
                await peer.send_audio(b"\x20" * FRAME * 2)
                await peer.send_mark("m")
                await daemon.wait(lambda: "mark" in peer.events())
                stream: FakeStream = call.media[0]
                assert stream.audio == b"\x20" * FRAME * 2 and stream.echoed_names == ["m"]
                assert peer.audio()[:FRAME * 10] == hello()[:FRAME * 10]
                await r.hang_up(call)
                await daemon.wait(lambda: peer.closed is not None)
                assert peer.events()[-1] == "stop"
            nursery.cancel_scope.cancel()


async def test_an_inbound_call_streams_and_connect_action_asks_what_comes_next(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """TwiML from a daemon's webhooks (an ASGI app in memory): the offer is answered with a
    stream; once the daemon closes it, ``<Connect action>`` fetches the next document."""
    documents = {
        "/voice/webhook": '<Response><Connect action="/voice/after">'
                          f'<Stream url="{STREAM_URL}"><Parameter name="token" value="in-1"/>'
                          "</Stream></Connect><Say>never reached</Say></Response>",
        "/voice/after": "<Response><Say>after the stream</Say><Hangup/></Response>",
    }
    kinds: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        while (await receive()).get("more_body"):
            pass
        kinds.append(scope["path"])
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/xml")]})
        await send({"type": "http.response.body", "body": documents[scope["path"]].encode()})

    async with trio.open_nursery() as nursery:
        fake = FakeTwilio(account_sid=ACCOUNT, auth_token=TOKEN, phone_number=FROM,
                          voice_url=PUBLIC)
        daemon = StandIn(fake)
        fake.connect_stream = daemon.connector(nursery)
        fake.tunnel(PUBLIC, "http://127.0.0.1:9")
        with trio.fail_after(BOUND_S):
            async with fake.in_memory("http://twilio.test", deliver_to=app):
                call = fake.start_inbound("+14155551234")
                peer = await daemon.peer(frames=3)
                start = peer.messages[1][1]["start"]
                assert start["callSid"] == call.sid
                assert start["customParameters"] == {"token": "in-1"}
                assert call.status == "in-progress"  # a stream answers an inbound call
                await peer.ws.aclose(1000)
                await call.done.wait()
        nursery.cancel_scope.cancel()
    assert kinds == ["/voice/webhook", "/voice/after"]
    assert [d.kind for d in fake.deliveries] == ["inbound", "connect"]
    assert call.said == ["after the stream"] and call.ended_by == "twiml"


@pytest.mark.parametrize("daemon_side", ["refuses the connection", "never answers"])
async def test_a_stream_that_cannot_open_fails_and_the_twiml_goes_on(
    autojump_clock: trio.testing.MockClock, daemon_side: str,
) -> None:
    async with rig() as r:
        held: list[trio.abc.Stream] = []

        async def connect(host: str, port: int) -> trio.abc.Stream:
            if daemon_side == "refuses the connection":
                raise OSError(111, "Connection refused")
            client, server = trio.testing.memory_stream_pair()
            held.append(server)  # read by no one: the upgrade is never answered
            return client

        r.fake.connect_stream = connect
        began = trio.current_time()
        call = await r.place(twiml(then="<Say>no stream</Say>"))
        await call.done.wait()
        stream = call.media[0]
        assert stream.state == "failed" and stream.error and stream.opened_at is None
        assert call.said == ["no stream"] and any(e.startswith("31920:") for e in call.errors)
        if daemon_side == "never answers":
            assert "TooSlowError" in stream.error
            assert trio.current_time() - began >= r.fake.stream_handshake_timeout_s


async def test_recording_is_bounded_and_the_counts_go_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with rig(stream_record_bytes=2 * FRAME) as r:
        call = await r.place(twiml())
        peer = await r.daemon.peer(frames=10)
        await peer.send_audio(b"\x33" * FRAME * 5)
        await peer.send_mark("m")
        await r.daemon.wait(lambda: "mark" in peer.events())
        stream = call.media[0]
        assert len(stream.sent) == 2 * FRAME and stream.frames_sent >= 10
        assert len(stream.received) == 2 * FRAME and len(stream.arrivals) == 2
        assert stream.received_bytes == 5 * FRAME
