"""The media route's frame reading, in memory: the common frame read directly, every other
one through wsproto, however the bytes are split across receives."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Ping, Pong, Request, TextMessage
from wsproto.frame_protocol import FrameProtocol

from voicecall_trio.config import build_config
from voicecall_trio.media import twilio_stream, ws_frames
from voicecall_trio.media.route import MediaRoute
from voicecall_trio.media.route_stream import RouteStream
from voicecall_trio.media.stream import MediaStream

VECTORS = Path(__file__).resolve().parents[3] / "shared" / "vectors"


class Auth:
    framing = twilio_stream.FRAMING

    def verify_upgrade(self, request: Any) -> str | None:
        return None

    def call_id_for_token(self, token: str) -> str | None:
        return token


class Handler:
    def __init__(self) -> None:
        self.audio = bytearray()
        self.marks: list[str] = []

    def media(self, stream: MediaStream, audio: bytes) -> None:
        self.audio += audio

    def mark(self, stream: MediaStream, name: str) -> None:
        self.marks.append(name)

    def dtmf(self, stream: MediaStream, digits: str) -> None:
        pass

    def stopped(self, stream: MediaStream) -> None:
        pass


class Sessions:
    def __init__(self) -> None:
        self.handler = Handler()

    def attach(self, call_id: str, stream: MediaStream) -> Handler:
        return self.handler


def open_stream() -> tuple[RouteStream, Sessions]:
    server = WSConnection(ConnectionType.SERVER)
    client = WSConnection(ConnectionType.CLIENT)
    server.receive_data(client.send(Request(host="h", target="/voice/stream")))
    list(server.events())
    server.send(AcceptConnection())
    sessions = Sessions()
    route = MediaRoute(build_config({}, {}), Auth(), sessions)
    assert server.connection is not None
    return RouteStream(route, None, server.connection, "1.2.3.4"), sessions  # type: ignore[arg-type]


def client_bytes() -> bytes:
    proto = FrameProtocol(client=True, extensions=[])
    lines = (VECTORS / "twilio_media_stream.jsonl").read_text().splitlines()
    out = bytearray()
    lines[1] = lines[1].replace('"customParameters":{', '"customParameters":{"token":"c1",')
    for n, line in enumerate(lines[:-1]):  # all but stop
        if n == 40:  # one message in three fragments, a ping between two of them
            third = len(line) // 3
            out += proto.send_data(line[:third], False)
            out += proto.ping(b"p")
            out += proto.send_data(line[third:2 * third], False)
            out += proto.send_data(line[2 * third:], True)
        else:
            out += proto.send_data(line, True)
    return bytes(out)


@pytest.mark.parametrize("chunk", [1, 2, 7, 381, 1000, 65536, 0])
async def test_any_split_gives_the_audio_byte_for_byte(chunk: int) -> None:
    stream, sessions = open_stream()
    data = client_bytes()
    chooser = random.Random(chunk)
    replies: list[Any] = []
    pos = 0
    while pos < len(data):
        size = chunk or chooser.randrange(1, 900)
        got, ending = stream.received(data[pos:pos + size])
        assert ending is None
        replies += got
        pos += size
    assert bytes(sessions.handler.audio) == (VECTORS / "hello_table_for_two_8k.ulaw").read_bytes()
    assert sessions.handler.marks == ["greeting-played"]
    assert [type(r) for r in replies] == [Pong]


def test_frame_extent_and_unmasking_match_wsproto() -> None:
    proto = FrameProtocol(client=True, extensions=[])
    for size in (0, 1, 5, 125, 126, 300, 65535, 65536):
        frame = bytes(proto.send_data("x" * size, True))
        found = ws_frames.extent(frame, 0)
        assert found is not None and found[1] == len(frame)
        assert ws_frames.is_simple(frame, 0)
        assert ws_frames.unmasked(frame, 0, *found) == b"x" * size
        assert ws_frames.extent(frame[:1], 0) is None
    ping = bytes(proto.ping(b"x"))
    assert not ws_frames.is_simple(ping, 0)
    assert not ws_frames.is_simple(bytes(proto.send_data("x", False)), 0)


async def test_a_frame_declaring_more_than_64_kib_is_refused_before_it_arrives() -> None:
    stream, _ = open_stream()
    header = bytes([0x81, 0xFF]) + (1 << 40).to_bytes(8, "big") + b"mask"
    assert stream.received(header)[1] == (1009, "message too big")


async def test_a_text_frame_that_is_not_utf8_closes_1007() -> None:
    stream, _ = open_stream()
    frame = bytes([0x81, 0x82, 0, 0, 0, 0, 0xFF, 0xFE])
    assert stream.received(frame)[1] == (1007, "text is not UTF-8")


def test_ping_pong_types() -> None:  # (the reply type the route sends back)
    assert isinstance(Ping(b"x").response(), Pong)
    assert TextMessage("x").message_finished
