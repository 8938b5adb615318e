"""Server-sent events, sans-IO: bytes in, complete events out.

Chat Completions streams are ``text/event-stream``; chunk boundaries of the transport mean
nothing, so the parser keeps a partial line and a partial event between ``feed`` calls. It
follows the WHATWG rules a streaming LLM server relies on (``data:`` lines joined by a newline,
``:`` comments ignored, any of CRLF, LF or CR ends a line, a leading BOM skipped) and is
bounded: a line or an event over ``max_event_bytes`` raises ``ChatStreamError`` instead of
growing without end.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ChatStreamError

MAX_EVENT_BYTES = 1_048_576  # one chunk of a chat stream is a few hundred bytes


@dataclass(frozen=True, slots=True)
class SseEvent:
    data: str
    event: str = "message"
    id: str | None = None


class SseParser:
    """Incremental ``text/event-stream`` decoder; ``feed`` bytes, get the events completed."""

    def __init__(self, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self.max_event_bytes = max_event_bytes
        self._buffer = bytearray()
        self._data: list[str] = []
        self._size = 0
        self._event = ""
        self._id: str | None = None
        self._started = False
        self._cr_pending = False  # the last byte fed was a CR: a following LF is its pair

    def feed(self, chunk: bytes) -> list[SseEvent]:
        if not chunk:
            return []
        if self._cr_pending and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        self._cr_pending = chunk.endswith(b"\r")
        self._buffer += chunk
        if not self._started:
            if len(self._buffer) < 3 and b"\xef\xbb\xbf".startswith(bytes(self._buffer)):
                return []
            if self._buffer.startswith(b"\xef\xbb\xbf"):
                del self._buffer[:3]
            self._started = True
        events: list[SseEvent] = []
        start = 0
        buffer = self._buffer
        while True:
            cr = buffer.find(b"\r", start)
            lf = buffer.find(b"\n", start)
            if cr < 0 and lf < 0:
                break
            end = lf if cr < 0 else cr if lf < 0 else min(cr, lf)
            line = bytes(buffer[start:end])
            step = 2 if buffer[end:end + 2] == b"\r\n" else 1
            start = end + step
            event = self._line(line)
            if event is not None:
                events.append(event)
        del buffer[:start]
        if len(buffer) > self.max_event_bytes:
            raise ChatStreamError(f"an event-stream line is over {self.max_event_bytes} bytes")
        return events

    @property
    def pending(self) -> bool:
        """Part of an event was read but not completed (a stream cut here is truncated)."""
        return bool(self._buffer.strip()) or bool(self._data)

    def _line(self, raw: bytes) -> SseEvent | None:
        if not raw:
            return self._dispatch()
        line = raw.decode("utf-8", "replace")
        if line.startswith(":"):
            return None  # a comment: keep-alive
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._size += len(raw)
            if self._size > self.max_event_bytes:
                raise ChatStreamError(f"an event is over {self.max_event_bytes} bytes")
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
        return None  # "retry" and unknown fields are ignored

    def _dispatch(self) -> SseEvent | None:
        data, self._data, self._size = self._data, [], 0
        event, self._event = self._event or "message", ""
        if not data:
            return None
        return SseEvent("\n".join(data), event, self._id)


__all__ = ["MAX_EVENT_BYTES", "SseEvent", "SseParser"]
