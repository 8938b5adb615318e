"""The media benchmark's STT: a lean OpenAI Realtime server that checks and times the audio.

The daemon's transcriber connects here (``streaming.realtimeUrl``) once per call. Each
``input_audio_buffer.append`` is decoded and split into the 160-byte frames the streams sent;
every frame's stamp names its stream and sequence number, so the sink counts frames per stream,
checks them byte for byte and in order against ``StampedAudio``, and times them against the
generator's send times (same process, same trio clock). Appends may carry any number of bytes
(the transcriber batches); a frame split across two appends is joined. ``speech_started``
sends the VAD event on a stream's session, for the barge-in figure. Raw non-blocking sockets,
``bench_media_ws`` framing: a few microseconds a message, so 10,000 frames a second leave the
load generator's core mostly idle.
"""

from __future__ import annotations

import base64
import binascii
import json
import socket
from collections.abc import Callable
from typing import Any

import trio
from bench_media_frames import FRAME_BYTES, StampedAudio, read_stamp
from bench_media_ws import (
    CLOSE,
    PING,
    PONG,
    TEXT,
    FrameReader,
    parse_head,
    server_accept,
    server_frame,
)

APPEND_HEAD = b'{"type":"input_audio_buffer.append","audio":"'
APPEND_TAIL = b'"}'
RECV_BYTES = 64 * 1024  # bounds the work of one wake-up


async def send_all(sock: socket.socket, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            sent = sock.send(view)
        except BlockingIOError:
            await trio.lowlevel.wait_writable(sock)
            continue
        view = view[sent:]


class SinkSession:
    """One transcription session the daemon opened: what it sent, checked and timed."""

    def __init__(self, sink: SttSink, sock: socket.socket, headers: dict[str, str],
                 target: str) -> None:
        self.sink, self.sock, self.headers, self.target = sink, sock, headers, target
        self.stream: int | None = None  # the stream index of its first frame
        self.updates: list[Any] = []  # session.update payloads
        self.frames = 0
        self.bad_frames = 0  # not the next frame of its stream, or not byte-identical
        self.other_messages = 0
        self.closed = False
        self.protocol_error: str | None = None
        self.last_item: str | None = None  # for the next commit's previous_item_id
        self._buf = bytearray()
        self._next_seq = 0

    def _audio(self, audio: bytes, now: float) -> None:
        buf = self._buf
        buf += audio
        sink = self.sink
        usable = len(buf) - len(buf) % FRAME_BYTES
        for at in range(0, usable, FRAME_BYTES):
            frame = buf[at:at + FRAME_BYTES]
            stream, seq = read_stamp(frame)
            if self.stream is None:
                self.stream = stream
                sink.by_stream[stream] = self
            if stream != self.stream or seq != self._next_seq \
                    or not sink.audio.matches(frame, stream, seq):
                self.bad_frames += 1
                if stream == self.stream:
                    self._next_seq = seq + 1
                continue
            self._next_seq = seq + 1
            self.frames += 1
            sink.on_frame(stream, seq, now)
        if usable:
            del buf[:usable]

    def _text(self, payload: bytes, now: float) -> None:
        if payload.startswith(APPEND_HEAD) and payload.endswith(APPEND_TAIL):
            try:
                audio = base64.b64decode(payload[len(APPEND_HEAD):-len(APPEND_TAIL)],
                                         validate=True)
            except binascii.Error:
                self.other_messages += 1
                return
            self._audio(audio, now)
            return
        try:
            doc = json.loads(payload)
        except ValueError:
            self.other_messages += 1
            return
        kind = doc.get("type") if isinstance(doc, dict) else None
        if kind == "session.update":
            self.updates.append(doc.get("session"))
        elif kind == "input_audio_buffer.append":  # another spelling of the same JSON
            try:
                self._audio(base64.b64decode(str(doc.get("audio", "")), validate=True), now)
            except binascii.Error:
                self.other_messages += 1
        else:
            self.other_messages += 1

    async def run(self, early: bytes = b"") -> None:
        """Until the socket closes; ``early``: bytes read with the upgrade request."""
        reader = FrameReader()
        sock = self.sock
        try:
            if early:
                for opcode, payload in reader.feed(early):
                    if opcode == TEXT:
                        self._text(payload, trio.current_time())
            await send_all(sock, server_frame(json.dumps(
                {"type": "session.created", "event_id": "event_0",
                 "session": {"type": "transcription"}}).encode()))
            while True:
                try:
                    data = sock.recv(RECV_BYTES)
                except BlockingIOError:
                    await trio.lowlevel.wait_readable(sock)
                    continue
                except OSError:
                    return
                if not data:
                    return
                now = trio.current_time()
                for opcode, payload in reader.feed(data):
                    if opcode == TEXT:
                        self._text(payload, now)
                    elif opcode == PING:
                        await send_all(sock, server_frame(payload, PONG))
                    elif opcode == CLOSE:
                        await send_all(sock, server_frame(payload[:2], CLOSE))
                        return
        except ValueError as exc:  # the daemon broke the WebSocket framing
            self.protocol_error = str(exc)
        except OSError:  # the daemon dropped the socket while we wrote
            pass
        finally:
            self.closed = True
            sock.close()

    async def send_event(self, event: dict[str, Any]) -> None:
        if self.closed:
            return
        try:
            await send_all(self.sock, server_frame(json.dumps(event).encode()))
        except OSError:
            self.closed = True


class SttSink:
    """Listens on 127.0.0.1; ``url`` is ``streaming.realtimeUrl``. ``on_frame(stream, seq,
    now)`` is called for every good frame (the scenario times it)."""

    def __init__(self, audio: StampedAudio,
                 on_frame: Callable[[int, int, float], None]) -> None:
        self.audio = audio
        self.on_frame = on_frame
        self.sessions: list[SinkSession] = []
        self.by_stream: dict[int, SinkSession] = {}
        self.refused = 0
        self.url = ""
        self._listener: socket.socket | None = None

    async def run(self, *, task_status: trio.TaskStatus[SttSink] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(1024)
        listener.setblocking(False)
        self._listener = listener
        self.url = f"ws://127.0.0.1:{listener.getsockname()[1]}/v1/realtime"
        try:
            async with trio.open_nursery() as nursery:
                task_status.started(self)
                while True:
                    try:
                        sock, _ = listener.accept()
                    except BlockingIOError:
                        await trio.lowlevel.wait_readable(listener)
                        continue
                    sock.setblocking(False)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    nursery.start_soon(self._serve, sock)
        finally:
            listener.close()

    async def _serve(self, sock: socket.socket) -> None:
        data = b""
        with trio.move_on_after(10):
            while (head := parse_head(data)) is None:
                try:
                    chunk = sock.recv(65536)
                except BlockingIOError:
                    await trio.lowlevel.wait_readable(sock)
                    continue
                if not chunk:
                    break
                data += chunk
        if head is None:
            sock.close()
            return
        first, headers, rest = head
        target = first.split(" ")[1] if first.count(" ") >= 2 else ""
        if not first.startswith("GET ") or headers.get("upgrade", "").lower() != "websocket":
            self.refused += 1
            await send_all(sock, b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            sock.close()
            return
        await send_all(sock, server_accept(headers))
        session = SinkSession(self, sock, headers, target)
        self.sessions.append(session)
        await session.run(rest)

    async def speech_started(self, stream: int, item: str) -> float | None:
        """Send the VAD's ``speech_started`` on ``stream``'s session; when it went out."""
        session = self.by_stream.get(stream)
        if session is None or session.closed:
            return None
        at = trio.current_time()
        await session.send_event({"type": "input_audio_buffer.speech_started",
                                  "event_id": f"event_ss_{item}", "audio_start_ms": 1000,
                                  "item_id": item})
        return at

    async def final_transcript(self, stream: int, item: str, text: str) -> float | None:
        """The caller said ``text``: VAD start and stop, commit, one delta and ``completed``
        on ``stream``'s session; when ``completed`` went out (the final transcript)."""
        session = self.by_stream.get(stream)
        if session is None or session.closed:
            return None
        previous, session.last_item = session.last_item, item
        for event in (
            {"type": "input_audio_buffer.speech_started", "audio_start_ms": 0},
            {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 900},
            {"type": "input_audio_buffer.committed", "previous_item_id": previous},
            {"type": "conversation.item.input_audio_transcription.delta", "content_index": 0,
             "delta": text},
        ):
            await session.send_event({**event, "event_id": f"event_{item}_{event['type']}",
                                      "item_id": item})
        at = trio.current_time()
        await session.send_event({
            "type": "conversation.item.input_audio_transcription.completed",
            "event_id": f"event_{item}_completed", "item_id": item, "content_index": 0,
            "transcript": text})
        return at

    @property
    def frames(self) -> int:
        return sum(s.frames for s in self.sessions)

    @property
    def bad_frames(self) -> int:
        return sum(s.bad_frames for s in self.sessions)
