"""The media route's sending side on a real socket pair: text frames built by hand, written
straight to the socket, a partial write finished in order, a stalled peer bounded."""

from __future__ import annotations

import socket
from typing import Any

import pytest
import trio
import trio.testing
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Request
from wsproto.frame_protocol import FrameProtocol, Opcode

from voicecall_trio.config import build_config
from voicecall_trio.media import twilio_stream, ws_frames
from voicecall_trio.media.route import MediaRoute
from voicecall_trio.media.route_stream import SEND_TIMEOUT_S, RouteStream


class Auth:
    framing = twilio_stream.FRAMING

    def verify_upgrade(self, request: Any) -> str | None:
        return None

    def call_id_for_token(self, token: str) -> str | None:
        return token


class NoSessions:
    def attach(self, call_id: str, stream: Any) -> None:
        return None


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 70000])
def test_server_text_is_what_wsproto_reads(size: int) -> None:
    payload = ("é" * (size // 2) + "x" * (size % 2)).encode()
    proto = FrameProtocol(client=True, extensions=[])
    proto.receive_bytes(ws_frames.server_text(payload))
    (frame,) = list(proto.received_frames())
    assert frame.opcode is Opcode.TEXT and frame.message_finished
    assert frame.payload == payload.decode()


def test_server_text_matches_wsproto_byte_for_byte() -> None:
    for size in (5, 300, 70000):
        payload = b"a" * size
        assert ws_frames.server_text(payload) == FrameProtocol(
            client=False, extensions=[]).send_data(payload.decode())


def pair(sndbuf: int | None = None) -> tuple[RouteStream, socket.socket, WSConnection]:
    ours, peer = socket.socketpair()
    if sndbuf is not None:
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, sndbuf)
    ours.setblocking(False)
    stream = trio.SocketStream(trio.socket.from_stdlib_socket(ours))
    server = WSConnection(ConnectionType.SERVER)
    client = WSConnection(ConnectionType.CLIENT)
    server.receive_data(client.send(Request(host="h", target="/voice/stream")))
    list(server.events())
    client.receive_data(server.send(AcceptConnection()))
    list(client.events())
    route = MediaRoute(build_config({}, {}), Auth(), NoSessions())
    assert server.connection is not None
    routed = RouteStream(route, stream, server.connection, "1.2.3.4")
    routed.accepted = True
    routed.stream_id = "MZ1"
    return routed, peer, client


def messages(peer: socket.socket, client: WSConnection) -> list[Any]:
    peer.setblocking(False)
    while True:
        try:
            data = peer.recv(1 << 20)
        except BlockingIOError:
            break
        if not data:
            break
        client.receive_data(data)
    return list(client.events())


async def test_frames_arrive_whole_and_in_order() -> None:
    stream, peer, client = pair()
    frames = [bytes([n]) * 160 for n in range(20)]
    for frame in frames:
        await stream.send_audio(frame)
    await stream.send_mark("bot:1")
    await stream.send_clear()
    events = messages(peer, client)
    assert [twilio_stream.decode(e.data) for e in events[:20]] == frames  # (decode reads media)
    assert events[20].data == '{"event":"mark","streamSid":"MZ1","mark":{"name":"bot:1"}}'
    assert events[21].data == '{"event":"clear","streamSid":"MZ1"}'
    assert stream.send_started is None and not stream.closed


async def test_a_partial_write_is_finished_before_the_next_send(autojump_clock: Any) -> None:
    stream, peer, client = pair(sndbuf=4096)
    big = "x" * 200_000  # more than the socket buffers take at once
    got: list[Any] = []

    async def read_slowly() -> None:
        await trio.sleep(1)
        parts: list[str] = []
        while len(got) < 3:
            await trio.lowlevel.wait_readable(peer)
            client.receive_data(peer.recv(65536))
            for event in client.events():  # (wsproto hands a long message over in pieces)
                parts.append(event.data)
                if event.message_finished:
                    got.append("".join(parts))
                    parts.clear()

    peer.setblocking(False)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_slowly)
        nursery.start_soon(stream._send_text, big)
        await trio.sleep(0.5)
        assert stream.send_started is not None  # waiting, under the lock
        await stream.send_audio(b"\x01" * 160)  # queued behind it, not interleaved
        await stream.send_clear()
    assert got[0] == big
    assert twilio_stream.decode(got[1]) == b"\x01" * 160
    assert got[2] == '{"event":"clear","streamSid":"MZ1"}'
    assert not stream.closed


async def test_a_stalled_peer_marks_the_stream_dead_after_the_timeout(autojump_clock: Any
                                                                      ) -> None:
    stream, _peer, _ = pair(sndbuf=4096)  # (kept open: a peer that never reads)
    start = trio.current_time()
    await stream._send_text("x" * 200_000)  # the peer never reads
    assert stream.closed and stream.send_started is None
    assert trio.current_time() - start == pytest.approx(SEND_TIMEOUT_S)
    await stream.send_audio(b"\x00" * 160)  # a no-op now, never raises
    await stream.close(1000)  # nothing more is written to a stream with a torn frame
    assert stream.close_code is None


async def test_a_dead_peer_marks_the_stream_closed_without_raising() -> None:
    stream, peer, _ = pair()
    peer.close()
    for _ in range(3):  # (the first write may still be taken by the kernel)
        await stream.send_audio(b"\x00" * 160)
    assert stream.closed


async def test_close_sends_a_close_frame_and_nothing_after_it() -> None:
    stream, peer, client = pair()
    await stream.close(1001, "going away")
    await stream.send_audio(b"\x00" * 160)
    events = messages(peer, client)
    assert len(events) == 1 and isinstance(events[0], CloseConnection)
    assert events[0].code == 1001 and stream.close_code == 1001


async def test_a_send_cancelled_before_any_byte_of_it_leaves_the_stream_usable(
        autojump_clock: Any) -> None:
    stream, peer, client = pair(sndbuf=4096)
    got: list[str] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(stream._send_text, "x" * 200_000)  # waits for the peer
        await trio.sleep(0.1)
        with trio.move_on_after(0.1):  # queued behind it, then cancelled: nothing written
            await stream.send_clear()
        assert not stream.closed
        peer.setblocking(False)
        parts: list[str] = []
        while not got:
            await trio.lowlevel.wait_readable(peer)
            client.receive_data(peer.recv(65536))
            for event in client.events():
                parts.append(event.data)
                if event.message_finished:
                    got.append("".join(parts))
    await stream.send_mark("bot:2")
    assert got == ["x" * 200_000] and not stream.closed
    assert [e.data for e in messages(peer, client)] == [
        '{"event":"mark","streamSid":"MZ1","mark":{"name":"bot:2"}}']
