"""Review (R2) of the media route's stream, in memory: a peer that stops reading."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing
from test_media_frames import Auth, Sessions
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request

from voicecall_trio.config import build_config
from voicecall_trio.media.route import MediaRoute
from voicecall_trio.media.route_stream import SEND_TIMEOUT_S, RouteStream


def stream_on(socket: Any) -> RouteStream:
    server = WSConnection(ConnectionType.SERVER)
    client = WSConnection(ConnectionType.CLIENT)
    server.receive_data(client.send(Request(host="h", target="/voice/stream")))
    list(server.events())
    server.send(AcceptConnection())
    assert server.connection is not None
    route = MediaRoute(build_config({}, {}), Auth(), Sessions())
    stream = RouteStream(route, socket, server.connection, "1.2.3.4")
    stream.accepted = True
    return stream


async def test_a_send_cut_short_by_the_caller_s_own_timeout_marks_the_stream_dead(
        autojump_clock: trio.testing.MockClock) -> None:
    """The player bounds each send (5 s) tighter than the route (10 s). A send it cancels may
    have written part of a frame: nothing may follow it on that socket, so the stream is
    dead (its reader ends, the handler is told), not left open with a torn frame."""
    ours, _peer = trio.testing.lockstep_stream_pair()  # a peer that never reads
    stream = stream_on(ours)
    with trio.move_on_after(SEND_TIMEOUT_S / 2) as scope:
        await stream.send_audio(b"\xff" * 160)
    assert scope.cancelled_caught
    assert stream.closed and stream.reader.cancel_called
    begin = trio.current_time()
    await stream.send_mark("bot:1")  # a later send returns at once
    await stream.close(1000)
    assert trio.current_time() == begin


def test_a_ping_flood_gets_one_pong_per_read_not_one_per_ping() -> None:
    """A read of 64 KiB holds some 10 000 empty pings; a pong (a lock and a write) for each
    would let a stream cost the daemon far more than it sends. RFC 6455 5.5.3 allows
    answering only the latest ping not yet answered: one pong per read."""
    from test_media_frames import open_stream
    from wsproto.events import Ping, Pong
    from wsproto.frame_protocol import FrameProtocol

    stream, _ = open_stream()
    proto = FrameProtocol(client=True, extensions=[])
    flood = b"".join(proto.ping(str(n).encode()) for n in range(5000))
    replies, ending = stream.received(flood)
    assert ending is None
    assert replies == [Pong(b"4999")]
    assert isinstance(Ping(b"x").response(), Pong)


def test_media_after_stop_in_the_same_read_is_not_delivered() -> None:
    from test_media_frames import open_stream
    from wsproto.frame_protocol import FrameProtocol

    stream, sessions = open_stream()
    proto = FrameProtocol(client=True, extensions=[])
    media = '{"event":"media","streamSid":"MZ1","media":{"payload":"%s"}}'
    data = b"".join(proto.send_data(text, True) for text in (
        '{"event":"start","start":{"streamSid":"MZ1","callSid":"CA1",'
        '"customParameters":{"token":"c1"}}}',
        media % "AQID", '{"event":"stop","streamSid":"MZ1"}', media % "BAUG"))
    _, ending = stream.received(data)
    assert ending == (1000, "stopped")
    assert bytes(sessions.handler.audio) == b"\x01\x02\x03"


async def test_a_send_cancelled_before_any_byte_leaves_the_stream_open(
        autojump_clock: trio.testing.MockClock) -> None:
    """Cancelled while it waited for the lock (the call ends during another task's send):
    nothing of it was written, so the stream stays usable (its close frame can still go)."""
    ours, peer = trio.testing.memory_stream_pair()
    stream = stream_on(ours)
    async with trio.open_nursery() as nursery:
        await stream._lock.acquire()  # another send holds the lock
        nursery.start_soon(stream.send_audio, b"\xff" * 160)
        await trio.testing.wait_all_tasks_blocked()
        stream._lock.release()  # handed to the waiting send, which has not run yet
        nursery.cancel_scope.cancel()  # ... and is cancelled before it writes a byte
    assert not stream.closed
    await stream.close(1000, "call ended")
    assert stream.close_code == 1000
    assert await peer.receive_some() != b""  # the close frame went out
