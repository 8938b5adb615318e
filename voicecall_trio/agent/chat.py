"""The Chat Completions wire format, sans-IO: the request we send, the chunks we read.

Built to ``shared/vectors/openai_chat_stream.json`` (made with the official SDK): a streamed
reply is a run of ``chat.completion.chunk`` objects whose ``delta.content`` pieces join into
the text, whose ``delta.tool_calls`` fragments join per ``index`` into function calls, and
whose last data event (with ``stream_options.include_usage``) has ``choices: []`` and the
token usage; ``data: [DONE]`` ends it. ``ChunkDecoder`` turns each event's data into
``ChatEvent``s; unknown fields are ignored, an ``error`` object or bad JSON raises
``ChatStreamError``. ``decode_response`` reads a non-streamed reply into the same events, for
servers that answer ``stream: true`` with one JSON body.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ..errors import ChatError, ChatStreamError

END_CALL = "end_call"
END_CALL_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": END_CALL,
        "description": ("Hang up the phone call. Use it when the caller says goodbye or has "
                        "nothing more to ask."),
        "parameters": {
            "type": "object",
            "properties": {
                "reason": {"type": "string",
                           "description": "Why the call ends, in a few words."},
            },
            "required": ["reason"],
            "additionalProperties": False,
        },
    },
}
MAX_TOOL_CALLS = 8  # indexes beyond this are ignored: a reply needs one
MAX_ARGUMENT_CHARS = 4096  # a tool call's joined arguments, at most
USAGE_KEYS = ("prompt_tokens", "completion_tokens", "total_tokens")
OPENAI_HOST = "api.openai.com"


def model_name(response_model: str) -> str:
    """``responseModel`` is ``provider/model``: the model sent is what follows the first ``/``."""
    _, sep, model = response_model.partition("/")
    return model if sep and model else response_model


def is_openai(base_url: str) -> bool:
    """Whether ``responseBaseUrl`` is OpenAI's own API (which is the one that needs a key)."""
    host = (urlsplit(base_url).hostname or "").lower()
    return host == OPENAI_HOST


def shown_url(url: str) -> str:
    """``url`` for a log line or a message: no user, password or query (they may be keys)."""
    try:
        parts = urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(unparsable URL)"
    return f"{parts.scheme}://{parts.hostname or ''}{port}{parts.path}"


def build_request(model: str, messages: Sequence[Mapping[str, str]], *,
                  stream: bool = True, end_call: bool = True) -> dict[str, Any]:
    """The JSON body of ``POST /chat/completions``."""
    body: dict[str, Any] = {"model": model, "messages": [dict(m) for m in messages]}
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    if end_call:
        body["tools"] = [END_CALL_TOOL]
    return body


# -- what a reply is made of ------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True, slots=True)
class Finished:
    reason: str  # "stop", "tool_calls", "length", "content_filter", ...


@dataclass(frozen=True, slots=True)
class Usage:
    tokens: dict[str, int]


@dataclass(frozen=True, slots=True)
class Done:
    """``data: [DONE]``: the server finished the stream."""


ChatEvent = TextDelta | ToolCallDelta | Finished | Usage | Done


@dataclass(frozen=True, slots=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]


@dataclass
class ToolCalls:
    """Joins ``ToolCallDelta`` fragments per index; ``calls()`` parses them once complete."""

    _names: dict[int, str] = field(default_factory=dict)
    _arguments: dict[int, list[str]] = field(default_factory=dict)
    _sizes: dict[int, int] = field(default_factory=dict)

    def add(self, delta: ToolCallDelta) -> None:
        if delta.index not in self._arguments and len(self._arguments) >= MAX_TOOL_CALLS:
            return
        if delta.name:
            self._names[delta.index] = delta.name
        size = self._sizes.get(delta.index, 0) + len(delta.arguments)
        if size > MAX_ARGUMENT_CHARS:
            raise ChatStreamError(f"tool call arguments over {MAX_ARGUMENT_CHARS} characters")
        self._sizes[delta.index] = size
        self._arguments.setdefault(delta.index, []).append(delta.arguments)

    def calls(self) -> list[ToolCall]:
        """Each call in index order; arguments that are not a JSON object read as ``{}``."""
        out: list[ToolCall] = []
        for index in sorted(self._arguments):
            raw = "".join(self._arguments[index]).strip()
            try:
                arguments = json.loads(raw) if raw else {}
            except (ValueError, RecursionError):
                arguments = {}
            out.append(ToolCall(self._names.get(index, ""),
                                arguments if isinstance(arguments, dict) else {}))
        return out


# -- decoding ------------------------------------------------------------------------------------
class ChunkDecoder:
    """One stream's data events to ``ChatEvent``s (only choice 0 is read)."""

    def __init__(self) -> None:
        self.done = False

    def feed(self, data: str) -> list[ChatEvent]:
        if data.strip() == "[DONE]":
            self.done = True
            return [Done()]
        try:
            chunk = json.loads(data)
        except (ValueError, RecursionError):  # nesting a server could abuse, too
            raise ChatStreamError("a reply stream event is not JSON") from None
        if not isinstance(chunk, dict):
            raise ChatStreamError("a reply stream event is not a JSON object")
        if chunk.get("error") is not None:
            raise ChatStreamError(f"the server sent an error mid-stream: {_error_text(chunk)}")
        events: list[ChatEvent] = []
        choices = chunk.get("choices")
        if isinstance(choices, list):
            for choice in choices:
                if isinstance(choice, dict) and choice.get("index", 0) == 0:
                    events.extend(_choice_events(choice))
        usage = _usage(chunk.get("usage"))
        if usage is not None:
            events.append(usage)
        return events


def _choice_events(choice: Mapping[str, Any]) -> list[ChatEvent]:
    events: list[ChatEvent] = []
    delta = choice.get("delta") or choice.get("message")  # a non-streamed choice has message
    if isinstance(delta, dict):
        content = delta.get("content")
        if isinstance(content, str) and content:
            events.append(TextDelta(content))
        tool_calls = delta.get("tool_calls")
        if isinstance(tool_calls, list):
            for position, call in enumerate(tool_calls):
                if isinstance(call, dict):
                    events.append(_tool_delta(call, position))
    reason = choice.get("finish_reason")
    if isinstance(reason, str) and reason:
        events.append(Finished(reason))
    return events


def _tool_delta(call: Mapping[str, Any], position: int) -> ToolCallDelta:
    index = call.get("index", position)
    function = call.get("function")
    function = function if isinstance(function, dict) else {}
    name = function.get("name")
    arguments = function.get("arguments")
    call_id = call.get("id")
    return ToolCallDelta(
        index=index if isinstance(index, int) and not isinstance(index, bool) else position,
        id=call_id if isinstance(call_id, str) else None,
        name=name if isinstance(name, str) else None,
        arguments=arguments if isinstance(arguments, str) else "",
    )


def _usage(value: Any) -> Usage | None:
    if not isinstance(value, dict):
        return None
    tokens = {k: v for k in USAGE_KEYS
              if isinstance(v := value.get(k), int) and not isinstance(v, bool)}
    return Usage(tokens) if tokens else None


def decode_response(body: bytes) -> list[ChatEvent]:
    """A non-streamed ``chat.completion`` body as the events a stream would have given."""
    try:
        events = ChunkDecoder().feed(body.decode("utf-8", "replace"))
    except ChatStreamError as exc:
        raise ChatStreamError(f"unreadable reply body: {exc.message}") from None
    return [*events, Done()]


def error_from_response(status: int, body: bytes) -> ChatError:
    """An error reply (``{error: {message, type, code}}``) as a ``ChatError``: a 429 other
    than ``insufficient_quota``, or a 5xx, is worth one retry; a 401 or 400 never is."""
    code: str | None = None
    kind: str | None = None
    said = ""
    try:
        doc = json.loads(body)
        error = doc.get("error") if isinstance(doc, dict) else None
        if isinstance(error, dict):
            code = error.get("code") if isinstance(error.get("code"), str) else None
            kind = error.get("type") if isinstance(error.get("type"), str) else None
            text = error.get("message")
            said = text if isinstance(text, str) else ""
        elif isinstance(error, str):  # some servers send {"error": "text"}
            said = error
    except (ValueError, RecursionError):
        pass
    label = code or kind
    retryable = (status == 429 and "insufficient_quota" not in (code, kind)) or status >= 500
    # Ollama: "<model> does not support tools"; others name "tools" or "tool_choice"
    tools_refused = status == 400 and "tool" in f"{said} {code or ''}".lower()
    message = f"the reply server answered {status}" + (f" ({label[:64]})" if label else "")
    if tools_refused:
        message += " (its model takes no tools)"
    return ChatError(message, status=status, code=code, retryable=retryable,
                     tools_refused=tools_refused)


def _error_text(chunk: Mapping[str, Any]) -> str:
    error = chunk.get("error")
    if isinstance(error, dict):
        for key in ("code", "type"):
            value = error.get(key)
            if isinstance(value, str) and value:
                return value[:64]
    return "error"


__all__ = [
    "END_CALL", "END_CALL_TOOL", "ChatEvent", "ChunkDecoder", "Done", "Finished",
    "TextDelta", "ToolCall", "ToolCallDelta", "ToolCalls", "Usage", "build_request",
    "decode_response", "error_from_response", "is_openai", "model_name", "shown_url",
]
