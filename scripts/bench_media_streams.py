"""The media benchmark's Twilio side: many lean media streams and one paced sender for all.

``LeanStream`` is one ``<Connect><Stream>`` socket as Twilio opens it: the signed upgrade
(``FakeTwilio.stream_request`` computes the URL, headers and signature), ``connected``,
``start`` with the call's token, then a 20 ms ``media`` frame of stamped audio on a fixed
schedule. What the daemon sends back is timed: every outbound ``media`` frame's arrival (for
the pacing figures), ``clear`` (barge-in), and ``mark``, which is echoed once the audio before
it has played, as Twilio does. One reader task per stream; ``Sender`` is a single task that
sends every stream's due frames from a heap, waking about once a millisecond, so 200 streams
cost one core a few percent, not a task and a timer each. A stream whose socket is full keeps
a backlog (counted) rather than blocking the others.
"""

from __future__ import annotations

import heapq
import json
import math
import socket
from typing import Any

import trio
from bench_media_frames import (
    FRAME_S,
    StampedAudio,
    connected_message,
    mark_message,
    media_message,
    start_message,
    stop_message,
)
from bench_media_sink import send_all
from bench_media_ws import CLOSE, PING, PONG, TEXT, FrameReader, Masker, client_upgrade, parse_head

SLACK_S = 0.0005  # frames due this soon are sent in the same wake
RECORD_ARRIVALS = 60 * 50  # outbound frames timed per stream (a minute of audio)


class MediaWaiter:
    """Set when the next outbound media frame arrives; ``at`` is when."""

    def __init__(self) -> None:
        self.event = trio.Event()
        self.at = math.nan


class LeanStream:
    """One media stream to the daemon (see the module docstring)."""

    def __init__(self, index: int, request: Any, *, account_sid: str, call_sid: str,
                 stream_sid: str, parameters: dict[str, str], audio: StampedAudio,
                 masker: Masker) -> None:
        self.index, self.request = index, request
        self.account_sid, self.call_sid, self.stream_sid = account_sid, call_sid, stream_sid
        self.parameters = parameters
        self.audio, self.masker = audio, masker
        self.sock: socket.socket | None = None
        self.status: int | None = None  # the upgrade's HTTP status
        self.start_sent_at: float | None = None
        self.sent_at: list[float] = []  # per inbound media seq
        self.lateness: list[float] = []  # send time - due time, per frame
        self.arrivals: list[float] = []  # outbound media frames, in order
        self.marks: list[tuple[float, str]] = []
        self.echoed: list[tuple[float, str]] = []
        self.clears: list[float] = []
        self.close_code: int | None = None
        self.closed = False
        self.protocol_error: str | None = None
        self.bad_messages = 0  # text that is not a JSON object
        self.backlog = bytearray()
        self.blocked_sends = 0
        self._flushing = False
        self._play_end = 0.0
        self._pending: list[tuple[float, str]] = []  # marks to echo: (when, name)
        self._wake = trio.Event()
        self._seq = 0  # Twilio message numbers after the media ones (marks, stop)
        self.changed = trio.Event()  # set (and replaced) on each mark, clear, echo, close
        self._media_waiter: MediaWaiter | None = None

    def _notify(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    async def open(self) -> bool:
        """Connect, upgrade (signed), send ``connected`` and ``start``; False if refused."""
        r = self.request
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.connect((r.connect_host, r.connect_port))
        except BlockingIOError:
            await trio.lowlevel.wait_writable(sock)
        error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if error:
            sock.close()
            raise OSError(error, "connect failed")
        upgrade, accept = client_upgrade(r.host_header, r.resource, list(r.headers))
        await send_all(sock, upgrade)
        data = b""
        with trio.fail_after(10):
            while (head := parse_head(data)) is None:
                try:
                    chunk = sock.recv(65536)
                except BlockingIOError:
                    await trio.lowlevel.wait_readable(sock)
                    continue
                if not chunk:
                    raise OSError("closed during the upgrade")
                data += chunk
        first, headers, rest = head
        self.status = int(first.split(" ")[1])
        if self.status != 101 or headers.get("sec-websocket-accept") != accept:
            sock.close()
            self.closed = True
            return False
        self.sock = sock
        self._early = rest
        self._send_now(self.masker.frame(connected_message()))
        self.start_sent_at = trio.current_time()
        self._send_now(self.masker.frame(start_message(
            self.account_sid, self.stream_sid, self.call_sid, self.parameters)))
        return True

    # -- sending ---------------------------------------------------------------------------

    def send_media(self, seq: int, due: float, now: float) -> None:
        self.sent_at.append(now)
        self.lateness.append(now - due)
        self._send_now(self.masker.frame(
            media_message(self.stream_sid, self.audio, self.index, seq)))

    def _send_now(self, data: bytes) -> None:
        """Write without waiting; what does not fit waits in the backlog (in order)."""
        if self.closed or self.sock is None:
            return
        if not self.backlog:
            try:
                sent = self.sock.send(data)
            except BlockingIOError:
                sent = 0
            except OSError:
                self.closed = True
                return
            if sent == len(data):
                return
            data = data[sent:]
            self.blocked_sends += 1
        self.backlog += data
        self._wake.set()

    async def _flush(self) -> None:
        assert self.sock is not None
        while self.backlog and not self.closed:
            try:
                sent = self.sock.send(self.backlog)
            except BlockingIOError:
                await trio.lowlevel.wait_writable(self.sock)
                continue
            except OSError:
                self.closed = True
                return
            del self.backlog[:sent]

    async def send_stop(self) -> None:
        self._seq += 1
        self._send_now(self.masker.frame(stop_message(
            self.account_sid, self.stream_sid, self.call_sid, 10_000_000 + self._seq)))
        await self._flush()

    # -- receiving ---------------------------------------------------------------------------

    def expect_media(self) -> MediaWaiter:
        """A waiter for the next outbound media frame (set with its arrival time)."""
        waiter = self._media_waiter = MediaWaiter()
        return waiter

    def _message(self, payload: bytes, now: float) -> None:
        head = payload[:40]
        if b'"media"' in head:
            if len(self.arrivals) < RECORD_ARRIVALS:
                self.arrivals.append(now)
            self._play_end = max(self._play_end, now) + FRAME_S
            if self._media_waiter is not None:
                self._media_waiter.at = now
                self._media_waiter.event.set()
                self._media_waiter = None
            return
        try:
            doc = json.loads(payload)
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            self.bad_messages += 1
            return
        event = doc.get("event")
        if event == "mark":
            name = str((doc.get("mark") or {}).get("name", ""))
            self.marks.append((now, name))
            self._pending.append((max(self._play_end, now), name))
            self._notify()
        elif event == "clear":
            self.clears.append(now)
            self._play_end = now
            self._pending = [(now, name) for _, name in self._pending]
            self._notify()

    def _echo_due(self, now: float) -> None:
        due = [(t, n) for t, n in self._pending if t <= now]
        if not due:
            return
        self._pending = [(t, n) for t, n in self._pending if t > now]
        for _, name in due:
            self._seq += 1
            self.echoed.append((now, name))
            self._send_now(self.masker.frame(
                mark_message(self.stream_sid, name, 10_000_000 + self._seq)))
        self._notify()

    async def run(self) -> None:
        """Read what the daemon sends until the socket closes; echo marks; flush backlog."""
        sock = self.sock
        if sock is None:
            return
        reader = FrameReader()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._flusher)
            try:
                for opcode, payload in reader.feed(self._early):
                    if opcode == TEXT:
                        self._message(payload, trio.current_time())
                while not self.closed:
                    next_due = min((t for t, _ in self._pending), default=math.inf)
                    with trio.move_on_at(next_due):
                        await trio.lowlevel.wait_readable(sock)
                    now = trio.current_time()
                    self._echo_due(now)
                    try:
                        data = sock.recv(65536)
                    except BlockingIOError:
                        continue
                    except OSError:
                        break
                    if not data:
                        break
                    for opcode, payload in reader.feed(data):
                        if opcode == TEXT:
                            self._message(payload, now)
                        elif opcode == PING:
                            self._send_now(self.masker.frame(payload, PONG))
                        elif opcode == CLOSE:
                            self.close_code = int.from_bytes(payload[:2], "big") \
                                if len(payload) >= 2 else 1005
                            self._send_now(self.masker.frame(payload[:2], CLOSE))
                            self.closed = True
                    self._echo_due(now)
            except ValueError as exc:  # the daemon broke the WebSocket framing
                self.protocol_error = str(exc)
            finally:
                self.closed = True
                self._wake.set()
                self._notify()
                nursery.cancel_scope.cancel()
                sock.close()

    async def _flusher(self) -> None:
        while not self.closed:
            await self._wake.wait()
            self._wake = trio.Event()
            await self._flush()


class Sender:
    """Sends every stream's 20 ms frames on schedule: frame n of a stream is due at
    ``its start + n * 20 ms``. Streams join with ``add``; ``stop`` ends the run;
    ``frames_per_stream`` stops each stream after that many frames."""

    def __init__(self, frames_per_stream: int | None = None) -> None:
        self.frames_per_stream = frames_per_stream
        self._heap: list[tuple[float, int, int]] = []  # (due, stream index, seq)
        self._streams: dict[int, LeanStream] = {}
        self._added = trio.Event()
        self._stopped = False
        self.frames_sent = 0

    def add(self, stream: LeanStream, first_due: float) -> None:
        self._streams[stream.index] = stream
        heapq.heappush(self._heap, (first_due, stream.index, 0))
        self._added.set()

    def stop(self) -> None:
        self._stopped = True
        self._added.set()

    async def run(self) -> None:
        heap = self._heap
        while not self._stopped:
            if not heap:
                await self._added.wait()
                self._added = trio.Event()
                continue
            due = heap[0][0]
            if due > trio.current_time() + SLACK_S:
                with trio.move_on_at(due):
                    await self._added.wait()
                    self._added = trio.Event()
                continue
            now = trio.current_time()
            while heap and heap[0][0] <= now + SLACK_S:
                due, index, seq = heapq.heappop(heap)
                stream = self._streams[index]
                if stream.closed:
                    continue
                stream.send_media(seq, due, now)
                self.frames_sent += 1
                if self.frames_per_stream is None or seq + 1 < self.frames_per_stream:
                    heapq.heappush(heap, (due + FRAME_S, index, seq + 1))
            await trio.lowlevel.checkpoint()
