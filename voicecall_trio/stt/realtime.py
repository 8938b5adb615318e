"""OpenAI Realtime transcription, sans-IO: client messages as text, server events as values.

What a call needs from the protocol and nothing more. The client sends one ``session.update``
(GA shape by default: ``type: "transcription"``, 8 kHz mu-law as ``audio/pcmu``, the model,
server VAD; the beta ``transcription_session.update`` shape behind ``beta=True``) and then
``input_audio_buffer.append`` messages carrying base64 audio. The server's events are decoded
with a msgspec tagged union on ``type``; every other type (``session.created``,
``conversation.item.added``, rate limits, ...) is ignored, and anything malformed decodes to
``None``: a hostile or broken server costs a counter, never an exception.

``RealtimeDecoder`` turns a session's events into ``SttEvent`` values: deltas are joined per
item into ``Interim`` (the text so far), ``completed`` becomes ``Final``, released in
committed order by ``order.CommitOrder``, and ``error`` becomes ``SttFailure`` (the session
carries on). Texts and the number of items tracked are bounded.

Shapes: ``/work/shared/vectors/openai_realtime_transcription.json`` (checked against the openai
SDK's types). Imports no trio.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import msgspec

from .order import SKIP_AFTER, CommitOrder

PREFIX_PADDING_MS = 300  # audio kept before detected speech (the server's default)
MAX_TEXT_CHARS = 8192  # one item's transcript, deltas joined; longer text is cut
MAX_INTERIM_ITEMS = 16  # items with interim text tracked at once; the oldest is forgotten
MAX_FAILURE_CHARS = 300  # an error event's description, as passed on for the log
MAX_ID_CHARS = 256  # an item id longer than this makes the event malformed

_APPEND_HEAD = '{"type":"input_audio_buffer.append","audio":"'
_APPEND_TAIL = '"}'



@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """The server's VAD heard the caller start (barge-in keys on this)."""

    item_id: str
    audio_start_ms: int


@dataclass(frozen=True, slots=True)
class SpeechStopped:
    """The caller stopped; a ``Final`` for ``item_id`` follows once transcribed."""

    item_id: str
    audio_end_ms: int


@dataclass(frozen=True, slots=True)
class Interim:
    """The item's text so far (deltas joined); not journaled."""

    item_id: str
    text: str


@dataclass(frozen=True, slots=True)
class Final:
    """The item's transcript, released in committed order."""

    item_id: str
    text: str


@dataclass(frozen=True, slots=True)
class SttFailure:
    """An ``error`` event or a failed transcription, described for the log (no secrets)."""

    message: str


SttEvent = SpeechStarted | SpeechStopped | Interim | Final | SttFailure



def session_update(model: str, vad_threshold: float, silence_duration_ms: int, *,
                   language: str | None = None, prompt: str | None = None,
                   noise_reduction: str | None = None, beta: bool = False) -> str:
    """The first message of a session: transcribe 8 kHz mu-law with ``model``, server VAD.

    ``language``, ``prompt`` and ``noise_reduction`` (``near_field`` / ``far_field``) are sent
    only when given. ``beta`` builds the older ``transcription_session.update`` instead.
    """
    transcription: dict[str, Any] = {"model": model}
    if language is not None:
        transcription["language"] = language
    if prompt is not None:
        transcription["prompt"] = prompt
    turn_detection = {
        "type": "server_vad",
        "threshold": vad_threshold,
        "prefix_padding_ms": PREFIX_PADDING_MS,
        "silence_duration_ms": silence_duration_ms,
    }
    session: dict[str, Any]
    if beta:
        session = {
            "input_audio_format": "g711_ulaw",
            "input_audio_transcription": transcription,
            "turn_detection": turn_detection,
        }
        if noise_reduction is not None:
            session["input_audio_noise_reduction"] = {"type": noise_reduction}
        message = {"type": "transcription_session.update", "session": session}
    else:
        audio_input: dict[str, Any] = {"format": {"type": "audio/pcmu"}}
        if noise_reduction is not None:
            audio_input["noise_reduction"] = {"type": noise_reduction}
        audio_input["transcription"] = transcription
        audio_input["turn_detection"] = turn_detection
        session = {"type": "transcription", "audio": {"input": audio_input}}
        message = {"type": "session.update", "session": session}
    return msgspec.json.encode(message).decode()


def transcription_url(url: str) -> str:
    """``url`` with ``intent=transcription`` in its query, unless it names an intent already."""
    parts = urlsplit(url)
    if any(key == "intent" for key, _ in parse_qsl(parts.query, keep_blank_values=True)):
        return url
    query = f"{parts.query}&intent=transcription" if parts.query else "intent=transcription"
    return urlunsplit(parts._replace(query=query))


def append(ulaw: bytes) -> str:
    """``input_audio_buffer.append`` carrying ``ulaw`` (the bytes as they came, base64)."""
    return _APPEND_HEAD + base64.b64encode(ulaw).decode("ascii") + _APPEND_TAIL



ItemId = Annotated[str, msgspec.Meta(max_length=MAX_ID_CHARS)]
Millis = Annotated[int, msgspec.Meta(ge=0)]


class _SpeechStarted(msgspec.Struct, tag_field="type",
                     tag="input_audio_buffer.speech_started"):
    item_id: ItemId
    audio_start_ms: Millis


class _SpeechStopped(msgspec.Struct, tag_field="type",
                     tag="input_audio_buffer.speech_stopped"):
    item_id: ItemId
    audio_end_ms: Millis


class _Committed(msgspec.Struct, tag_field="type", tag="input_audio_buffer.committed"):
    item_id: ItemId
    previous_item_id: ItemId | None = None


class _Delta(msgspec.Struct, tag_field="type",
             tag="conversation.item.input_audio_transcription.delta"):
    item_id: ItemId
    delta: str = ""


class _Completed(msgspec.Struct, tag_field="type",
                 tag="conversation.item.input_audio_transcription.completed"):
    item_id: ItemId
    transcript: str


class _ErrorDetail(msgspec.Struct):
    message: str = ""
    type: str | None = None
    code: str | None = None
    param: str | None = None


class _Failed(msgspec.Struct, tag_field="type",
              tag="conversation.item.input_audio_transcription.failed"):
    item_id: ItemId
    error: _ErrorDetail | None = None


class _Error(msgspec.Struct, tag_field="type", tag="error"):
    error: _ErrorDetail


ServerEvent = _SpeechStarted | _SpeechStopped | _Committed | _Delta | _Completed | _Failed | _Error


class _Kind(msgspec.Struct):
    type: str


_events = msgspec.json.Decoder(ServerEvent)
_kind = msgspec.json.Decoder(_Kind)
KNOWN_TYPES = frozenset(
    str(cls.__struct_config__.tag) for cls in ServerEvent.__args__
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def decode_event(message: str | bytes) -> ServerEvent | None:
    """One server message, or None if it is of another type or malformed (never raises)."""
    try:
        return _events.decode(message)
    except (msgspec.DecodeError, ValueError, TypeError, RecursionError):
        return None


def is_known_type(message: str | bytes) -> bool:
    """Whether ``message`` claims a type we decode (so a failed decode means malformed)."""
    try:
        return _kind.decode(message).type in KNOWN_TYPES
    except (msgspec.DecodeError, ValueError, TypeError, RecursionError):
        return False


def _clean(text: str, limit: int) -> str:
    """Text from the server made safe for a log line: no control characters, bounded."""
    text = _CONTROL.sub(" ", text).strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe_error(error: _ErrorDetail | None, what: str = "server error") -> str:
    """``"<what>: <type> <code>: <message> (param <param>)"`` for the log."""
    if error is None:
        return what
    kinds = " ".join(p for p in (error.type, error.code) if p)
    text = f"{what}: {kinds}: {error.message}" if kinds else f"{what}: {error.message}"
    if error.param:
        text += f" (param {error.param})"
    return _clean(text, MAX_FAILURE_CHARS)


class RealtimeDecoder:
    """A call's server events in, ``SttEvent`` values out (one instance across reconnects).

    ``receive(message)`` never raises: an unknown type counts in ``ignored``, a malformed
    message in ``malformed``, and both yield nothing. ``new_session()`` is called when a
    connection ends: its turns that completed are released, the rest forgotten (item ids are
    per session, and the next session's first turn has no predecessor).
    """

    def __init__(self, *, skip_after: int = SKIP_AFTER) -> None:
        self._order = CommitOrder(skip_after=skip_after)
        self._interim: dict[str, str] = {}
        self.ignored = 0
        self.malformed = 0

    @property
    def skipped(self) -> int:
        """Turns skipped because they never completed (see ``order.py``)."""
        return self._order.skipped

    def receive(self, message: str | bytes) -> list[SttEvent]:
        """One WebSocket message from the server."""
        event = decode_event(message)
        if event is None:
            if is_known_type(message):
                self.malformed += 1
            else:
                self.ignored += 1
            return []
        return self.feed(event)

    def feed(self, event: ServerEvent) -> list[SttEvent]:
        """One decoded server event."""
        if isinstance(event, _Delta):
            return self._delta(event.item_id, event.delta)
        if isinstance(event, _Completed):
            self._interim.pop(event.item_id, None)
            text = event.transcript[:MAX_TEXT_CHARS]
            return self._finals(self._order.completed(event.item_id, text))
        if isinstance(event, _SpeechStarted):
            return [SpeechStarted(event.item_id, event.audio_start_ms)]
        if isinstance(event, _SpeechStopped):
            return [SpeechStopped(event.item_id, event.audio_end_ms)]
        if isinstance(event, _Committed):
            return self._finals(self._order.committed(event.item_id, event.previous_item_id))
        if isinstance(event, _Failed):
            self._interim.pop(event.item_id, None)
            failure = SttFailure(describe_error(
                event.error, f"transcription failed for {_clean(event.item_id, 64)}"))
            return [failure, *self._finals(self._order.failed(event.item_id))]
        return [SttFailure(describe_error(event.error))]

    def new_session(self) -> list[SttEvent]:
        """The session ended: the finals it still held, in order."""
        self._interim.clear()
        return self._finals(self._order.reset())

    def _delta(self, item_id: str, delta: str) -> list[SttEvent]:
        so_far = self._interim.get(item_id)
        if so_far is None:
            if self._order.released(item_id):
                return []  # a late delta of a turn already final
            if len(self._interim) >= MAX_INTERIM_ITEMS:
                del self._interim[next(iter(self._interim))]
            so_far = ""
        if not delta or len(so_far) >= MAX_TEXT_CHARS:
            self._interim[item_id] = so_far
            return []
        text = (so_far + delta)[:MAX_TEXT_CHARS]
        self._interim[item_id] = text
        return [Interim(item_id, text)]

    @staticmethod
    def _finals(released: list[tuple[str, str]]) -> list[SttEvent]:
        """Finals to pass on: a turn the server heard as nothing (noise) is not one."""
        return [Final(item_id, text) for item_id, text in released if text.strip()]
