"""The media benchmark's load tools (scripts/bench_media_*.py), against a stand-in daemon.

The benchmark itself is never a timed test; these check that its lean WebSocket codec speaks
the same protocol as wsproto, that its stamped frames and figures are computed as documented,
and that its streams, sender and STT sink work end to end on loopback sockets through a
stand-in media server (trio-websocket, as a daemon's route would be): every frame reaches the
sink byte for byte and in order, outbound frames and marks are timed and echoed, and a
``speech_started`` from the sink comes back as a ``clear``. Waits are on conditions, bounded.
"""

from __future__ import annotations

import base64
import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest
import trio
import trio_websocket
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request, TextMessage

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
sys.path.insert(0, str(SCRIPTS))

import bench_media  # noqa: E402
from bench_media_frames import (  # noqa: E402
    FRAME_BYTES,
    StampedAudio,
    late_frames,
    media_message,
    pacing_errors,
    pct,
    read_stamp,
    rebased_errors,
)
from bench_media_sink import SttSink  # noqa: E402
from bench_media_streams import LeanStream, Sender  # noqa: E402
from bench_media_ws import (  # noqa: E402
    CLOSE,
    PING,
    TEXT,
    FrameReader,
    Masker,
    client_upgrade,
    parse_head,
    server_accept,
    server_frame,
)

from voicecall_trio.testing.twilio.stream import StreamRequest  # noqa: E402

# -- pure ------------------------------------------------------------------------------------


def _wsproto_server() -> WSConnection:
    server = WSConnection(ConnectionType.SERVER)
    upgrade, _ = client_upgrade("example.com", "/s", [])
    server.receive_data(upgrade)
    request = next(server.events())
    assert isinstance(request, Request)
    server.send(AcceptConnection())
    return server


@pytest.mark.parametrize("size", [0, 5, 125, 126, 300, 65535, 65536, 200_000])
def test_masked_client_frames_decode_with_wsproto(size: int) -> None:
    server = _wsproto_server()
    text = ("x" * size).encode()
    server.receive_data(Masker().frame(text))
    (event,) = list(server.events())
    assert isinstance(event, TextMessage) and event.data == text.decode()


@pytest.mark.parametrize("size", [0, 5, 126, 300, 70_000])
def test_reader_decodes_wsproto_frames_both_ways(size: int) -> None:
    text = "é" * size
    server = _wsproto_server()
    out = server.send(TextMessage(data=text))  # server -> client: unmasked
    assert FrameReader().feed(out) == [(TEXT, text.encode())]
    client, peer = WSConnection(ConnectionType.CLIENT), WSConnection(ConnectionType.SERVER)
    peer.receive_data(client.send(Request(host="h", target="/")))
    next(peer.events())
    client.receive_data(peer.send(AcceptConnection()))
    next(client.events())
    masked = client.send(TextMessage(data=text))  # client -> server: masked
    assert FrameReader().feed(masked) == [(TEXT, text.encode())]


def test_reader_joins_split_bytes_and_continuations() -> None:
    reader = FrameReader()
    data = server_frame(b"hello") + Masker().frame(b"\x03\xe8", CLOSE)
    got = [m for i in range(len(data)) for m in reader.feed(data[i:i + 1])]
    assert got == [(TEXT, b"hello"), (CLOSE, b"\x03\xe8")]
    first = bytes((0x01, 3)) + b"abc"  # text, not FIN
    ping = server_frame(b"p", PING)
    last = bytes((0x80, 2)) + b"de"  # continuation, FIN
    assert FrameReader().feed(first + ping + last) == [(PING, b"p"), (TEXT, b"abcde")]


def test_reader_refuses_a_huge_frame() -> None:
    with pytest.raises(ValueError):
        FrameReader().feed(bytes((0x81, 127)) + (1 << 40).to_bytes(8, "big"))


def test_upgrade_heads() -> None:
    request, accept = client_upgrade("h:1", "/x?y=1", [("X-Twilio-Signature", "abc")])
    first, headers, rest = parse_head(request + b"tail") or ("", {}, b"")
    assert first == "GET /x?y=1 HTTP/1.1" and rest == b"tail"
    assert headers["x-twilio-signature"] == "abc"
    answer = parse_head(server_accept(headers))
    assert answer is not None and answer[1]["sec-websocket-accept"] == accept
    assert parse_head(b"GET / HTTP/1.1\r\n") is None
    with pytest.raises(ValueError):
        parse_head(b"x" * 20_000)


def test_stamped_frames() -> None:
    audio = StampedAudio()
    frame = audio.frame(513, 70_000)
    assert len(frame) == FRAME_BYTES and read_stamp(frame) == (513, 70_000)
    assert audio.matches(frame, 513, 70_000) and not audio.matches(frame, 513, 70_001)
    message = json.loads(media_message("MZ1", audio, 513, 70_000))
    assert base64.b64decode(message["media"]["payload"]) == frame
    assert message["sequenceNumber"] == "70002" and message["media"]["timestamp"] == "1400000"


def test_pacing_errors_follow_the_pacer() -> None:
    # a perfect pacer with a 60 ms lead: frames 0..3 at once, then one every 20 ms
    perfect = [0.0, 0.0, 0.0, 0.0] + [0.02 * k for k in range(1, 20)]
    assert max(pacing_errors(perfect, lead_s=0.06)) == pytest.approx(0.0, abs=1e-9)
    assert late_frames(perfect) == 0
    shaky = list(perfect)
    shaky[10] += 0.004
    errors = pacing_errors(shaky, lead_s=0.06)
    assert max(errors) == pytest.approx(0.004)
    assert pacing_errors(shaky, lead_s=0.06, since=0.2, until=0.3) == pytest.approx([0.0] * 5)
    stalled = [0.02 * k for k in range(5)] + [0.5]
    assert late_frames(stalled) == 1
    # a 100 ms stall, then a new run (three at once, then on time): one restart, and the
    # frames after it are on the new run's schedule
    restarted = perfect[:10] + [0.3, 0.3, 0.3, 0.3] + [0.3 + 0.02 * k for k in range(1, 10)]
    errors, restarts = rebased_errors(restarted, lead_s=0.06)
    assert restarts == 1 and max(errors) == pytest.approx(0.0, abs=1e-9)
    assert max(pacing_errors(restarted, lead_s=0.06)) > 0.1  # the brief's measure keeps it
    assert pacing_errors([], lead_s=0.06) == [] and math.isnan(pct([], 50))
    assert pct([3.0, 1.0, 2.0], 50) == 2.0 and pct([1.0] * 99 + [9.0], 99) == 1.0


def _inbound_run(cpu: float, lost: int) -> dict[str, Any]:
    return {"scenario": "inbound", "calls": 50, "cpu_us_per_frame": cpu, "frames_lost": lost,
            "frames_bad": 0, "frames_sent": 50_000, "rss_idle_mb": 50.0, "rss_loaded_mb": 60.0,
            "generator_cpu_share": 0.3, "protocol_errors": ["x"] if lost else [],
            "latency": {"n": 10, "p50_ms": cpu / 10, "p99_ms": cpu, "max_ms": 9.0},
            "generator_send_lateness": {"n": 1, "p50_ms": 0.1, "p99_ms": 0.5, "max_ms": 1.0}}


def test_runs_combine_to_medians_and_sums() -> None:
    runs = [_inbound_run(20.0, 0), _inbound_run(30.0, 2), _inbound_run(25.0, 1)]
    combined = bench_media.combine(runs)
    assert combined["cpu_us_per_frame"] == 25.0 and combined["latency"]["p99_ms"] == 25.0
    assert combined["frames_lost"] == 3 and combined["calls"] == 50
    assert combined["protocol_errors"] == ["x"] and combined["scenario"] == "inbound"


def test_the_docs_section_is_rewritten_in_place(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n<!-- bench:results -->\nother\n<!-- bench:results -->\n")
    media = {"inbound_50": {**bench_media.combine([_inbound_run(20.0, 0)]), "runs": 1}}
    machine = {"cpus": 2, "python": "3.11", "runs": 1}
    bench_media.write_section(media, machine, "./scripts/bench --only media", doc)
    first = doc.read_text()
    assert "## Media streams" in first and "other" in first and "20.0 us" in first
    assert "204.8 KB" in first  # (60 - 50) MB / 50 calls
    media["inbound_50"]["cpu_us_per_frame"] = 21.5
    bench_media.write_section(media, machine, "./scripts/bench --only media", doc)
    second = doc.read_text()
    assert second.count("## Media streams") == 1 and "21.5 us" in second
    assert "20.0 us" not in second and "other" in second


# -- a stand-in daemon -----------------------------------------------------------------------


class StandIn:
    """A media route as the daemon has one: Twilio stream in, STT appends out, a greeting of
    ``greeting`` paced frames and a mark back, ``clear`` on the STT's ``speech_started``."""

    def __init__(self, stt_url: str, greeting: int) -> None:
        self.stt_url, self.greeting = stt_url, greeting
        self.signatures: list[str | None] = []
        self.starts: list[dict[str, Any]] = []
        self.finals: list[str] = []

    async def handler(self, request: trio_websocket.WebSocketRequest) -> None:
        self.signatures.append(dict(request.headers).get(b"x-twilio-signature", b"").decode())
        ws = await request.accept()
        sid = ""
        async with trio.open_nursery() as nursery, trio_websocket.open_websocket_url(
                self.stt_url + "?intent=transcription") as stt:
            await stt.send_message(json.dumps({"type": "session.update", "session": {}}))

            async def from_stt() -> None:
                while True:
                    event = json.loads(await stt.get_message())
                    if event["type"] == "input_audio_buffer.speech_started":
                        await ws.send_message(json.dumps({"event": "clear", "streamSid": sid}))
                    elif event["type"].endswith("transcription.completed"):  # a reply
                        self.finals.append(event["transcript"])
                        await ws.send_message(json.dumps({"event": "media", "streamSid": sid,
                                                          "media": {"payload": "/w=="}}))

            async def greet() -> None:
                frame = base64.b64encode(b"\xff" * FRAME_BYTES).decode()
                start = trio.current_time()
                for k in range(self.greeting):
                    await trio.sleep_until(start + k * 0.02)
                    await ws.send_message(json.dumps(
                        {"event": "media", "streamSid": sid, "media": {"payload": frame}}))
                await ws.send_message(json.dumps(
                    {"event": "mark", "streamSid": sid, "mark": {"name": "greeting"}}))

            nursery.start_soon(from_stt)
            try:
                while True:
                    doc = json.loads(await ws.get_message())
                    if doc["event"] == "start":
                        sid = doc["streamSid"]
                        self.starts.append(doc["start"])
                        nursery.start_soon(greet)
                    elif doc["event"] == "media":
                        await stt.send_message('{"type":"input_audio_buffer.append","audio":"'
                                               + doc["media"]["payload"] + '"}')
            except trio_websocket.ConnectionClosed:
                pass
            nursery.cancel_scope.cancel()


async def test_streams_sender_and_sink_through_a_stand_in() -> None:
    audio, masker = StampedAudio(), Masker()
    frames_each, greeting = 12, 6
    streams: list[LeanStream] = []
    got = trio.Event()
    latencies: list[float] = []

    def on_frame(stream: int, seq: int, now: float) -> None:
        latencies.append(now - streams[stream].sent_at[seq])
        if len(latencies) == 3 * frames_each:
            got.set()

    sink = SttSink(audio, on_frame)
    sender = Sender(frames_per_stream=frames_each)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(sink.run)
            stand_in = StandIn(sink.url, greeting)
            server = await nursery.start(trio_websocket.serve_websocket, stand_in.handler,
                                         "127.0.0.1", 0, None)
            port = server.port
            nursery.start_soon(sender.run)
            for i in range(3):
                request = StreamRequest("ws://x/s", "ws://x/s", "127.0.0.1", port, "x", "/s",
                                        (("X-Twilio-Signature", f"sig{i}"),))
                stream = LeanStream(i, request, account_sid="AC1", call_sid=f"CA{i}",
                                    stream_sid=f"MZ{i}", parameters={"token": f"t{i}"},
                                    audio=audio, masker=masker)
                streams.append(stream)
                assert await stream.open()
                nursery.start_soon(stream.run)
                sender.add(stream, trio.current_time())
            await got.wait()
            for s in streams:  # the greeting plays out, then its mark is echoed
                while not s.echoed:
                    await s.changed.wait()
            for s in streams:
                assert await sink.speech_started(s.index, f"item{s.index}") is not None
            for s in streams:
                while not s.clears:
                    await s.changed.wait()
            waiter = streams[0].expect_media()
            said = await sink.final_transcript(0, "item_r", "Book a table.")
            await waiter.event.wait()
            assert said is not None and waiter.at >= said
            sender.stop()
            nursery.cancel_scope.cancel()
    assert stand_in.signatures == ["sig0", "sig1", "sig2"]
    assert stand_in.finals == ["Book a table."]
    assert [s["customParameters"] for s in stand_in.starts] == [{"token": f"t{i}"}
                                                                for i in range(3)]
    assert sink.frames == 3 * frames_each and sink.bad_frames == 0
    assert sorted(sink.by_stream) == [0, 1, 2]
    assert all(len(s.updates) == 1 for s in sink.sessions)
    assert all(0 <= x < 5 for x in latencies)
    for s in streams:
        replies = 1 if s.index == 0 else 0
        assert len(s.arrivals) == greeting + replies
        assert [n for _, n in s.echoed] == ["greeting"]
        assert s.echoed[0][0] >= s.arrivals[0] + greeting * 0.02 - 1e-6  # after it played
        assert s.blocked_sends == 0 and len(s.lateness) == len(s.sent_at)
