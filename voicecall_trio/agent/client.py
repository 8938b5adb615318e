"""The Chat Completions client: one streamed reply over an injected ``httpx.AsyncClient``.

``POST {responseBaseUrl}/chat/completions`` with ``Authorization: Bearer <key>`` (no header
without a key: a local server may need none), read as server-sent events through the sans-IO
``sse`` and ``chat`` decoders. ``complete`` has one budget for the whole reply (the caller's
``deadline`` on the trio clock), not per read; within it a 429 (not ``insufficient_quota``) or
a 5xx is tried once more, a 401 never. Cancelling ``complete`` leaves the ``async with`` of the
request, which closes the response and its connection: an interrupted reply does not keep
running at the server. Errors are ``ChatError`` with the status and the server's error code,
and never the key.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import httpx
import trio

from ..errors import ChatError, ChatStreamError
from .chat import (
    END_CALL,
    ChatEvent,
    ChunkDecoder,
    Done,
    Finished,
    TextDelta,
    ToolCallDelta,
    ToolCalls,
    Usage,
    build_request,
    decode_response,
    error_from_response,
    shown_url,
)
from .sse import SseParser

log = logging.getLogger("voicecall.calls")

MAX_REPLY_CHARS = 4_000  # reply text beyond this is not read (the stream is closed)
MAX_BODY_BYTES = 1_048_576  # a non-streamed reply or an error body, at most
RETRY_DELAY_S = 0.25  # before the one retry, unless the server asks for less (retry-after-ms)
MAX_RETRY_DELAY_S = 2.0
# after ``finish_reason`` only the usage chunk and ``[DONE]`` follow, at once: a server (or a
# proxy) that then holds the stream open must not turn a whole reply into a timeout
FINISH_GRACE_S = 1.0


@dataclass
class ChatReply:
    """A completed reply: its text, whether the model called ``end_call``, and token use."""

    text: str = ""
    end_call: bool = False
    end_reason: str | None = None
    usage: dict[str, int] | None = None
    finish_reason: str | None = None
    attempts: int = 1
    tools: ToolCalls = field(default_factory=ToolCalls)


class ChatClient:
    """Streams replies from an OpenAI-compatible server."""

    def __init__(self, http: httpx.AsyncClient, *, base_url: str, api_key: str | None,
                 model: str, end_call: bool = True) -> None:
        self.http = http
        self.url = base_url.rstrip("/") + "/chat/completions"
        self._api_key = api_key
        self.model = model
        self.end_call = end_call

    def __repr__(self) -> str:  # never the key
        return f"ChatClient({shown_url(self.url)!r}, model={self.model!r})"

    async def complete(self, messages: Sequence[Mapping[str, str]], *, deadline: float,
                       on_event: Callable[[ChatEvent], None] | None = None) -> ChatReply:
        """The reply to ``messages``; ``on_event`` sees each event as it arrives."""
        budget_ms = round(max(0.0, deadline - trio.current_time()) * 1000)
        with trio.move_on_at(deadline) as scope:
            return await self._complete(messages, deadline, on_event)
        assert scope.cancelled_caught
        raise ChatError(f"no complete reply within {budget_ms} ms")

    async def _complete(self, messages: Sequence[Mapping[str, str]], deadline: float,
                        on_event: Callable[[ChatEvent], None] | None) -> ChatReply:
        body = build_request(self.model, messages, end_call=self.end_call)
        try:
            return await self._attempt(body, deadline, on_event)
        except ChatError as exc:
            if exc.tools_refused and self.end_call:
                # a local model without tool support (Ollama answers 400): ask without the
                # tool, now and from now on, rather than failing every turn
                self.end_call = False
                log.warning("the reply server refused the end_call tool (%s): asking "
                            "without it from now on; the model cannot end calls", exc.message)
                body = build_request(self.model, messages, end_call=False)
                delay = 0.0
            else:
                delay = RETRY_DELAY_S if exc.retry_after is None else exc.retry_after
                if not exc.retryable or trio.current_time() + delay >= deadline:
                    raise
        await trio.sleep(delay)
        reply = await self._attempt(body, deadline, on_event)
        reply.attempts = 2
        return reply

    async def _attempt(self, body: dict[str, object], deadline: float,
                       on_event: Callable[[ChatEvent], None] | None) -> ChatReply:
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        timeout = max(0.1, deadline - trio.current_time() + 1.0)  # ours is the budget
        try:
            async with self.http.stream("POST", self.url, json=body, headers=headers,
                                        timeout=timeout) as response:
                if response.status_code != 200:
                    raise _status_error(response.status_code, await _read(response),
                                        response.headers)
                kind = response.headers.get("content-type", "").lower()
                if kind.startswith("application/json"):
                    reply = ChatReply()
                    for event in decode_response(await _read(response)):
                        _take(reply, event, on_event)
                    return reply
                return await _read_stream(response, on_event)
        except httpx.TimeoutException:
            raise ChatError("the reply server did not answer in time") from None
        except httpx.ConnectError:
            raise ChatError(f"cannot connect to the reply server at {shown_url(self.url)}"
                            ) from None
        except httpx.HTTPError as exc:
            raise ChatStreamError(f"the reply stream broke: {type(exc).__name__}") from None


async def _read_stream(response: httpx.Response,
                       on_event: Callable[[ChatEvent], None] | None) -> ChatReply:
    reply = ChatReply()
    parser = SseParser()
    decoder = ChunkDecoder()
    with trio.CancelScope() as grace:
        async for chunk in response.aiter_bytes():
            for sse in parser.feed(chunk):
                for event in decoder.feed(sse.data):
                    _take(reply, event, on_event)
                if decoder.done or len(reply.text) >= MAX_REPLY_CHARS:
                    return _finished(reply)
            if reply.finish_reason is not None and grace.deadline == math.inf:
                grace.deadline = trio.current_time() + FINISH_GRACE_S
    if reply.finish_reason is None:
        raise ChatStreamError("the reply stream ended before the reply did")
    return _finished(reply)


def _take(reply: ChatReply, event: ChatEvent,
          on_event: Callable[[ChatEvent], None] | None) -> None:
    if isinstance(event, TextDelta):
        room = MAX_REPLY_CHARS - len(reply.text)
        if room <= 0:
            return
        if len(event.text) > room:
            event = TextDelta(event.text[:room])
        reply.text += event.text
    elif isinstance(event, ToolCallDelta):
        reply.tools.add(event)
    elif isinstance(event, Finished):
        reply.finish_reason = event.reason
    elif isinstance(event, Usage):
        reply.usage = event.tokens
    elif isinstance(event, Done):
        _finished(reply)
    if on_event is not None:
        on_event(event)


def _finished(reply: ChatReply) -> ChatReply:
    for call in reply.tools.calls():
        if call.name == END_CALL:
            reply.end_call = True
            reason = call.arguments.get("reason")
            reply.end_reason = str(reason)[:200] if reason else None
    return reply


async def _read(response: httpx.Response) -> bytes:
    data = bytearray()
    async for chunk in response.aiter_bytes():
        data += chunk
        if len(data) > MAX_BODY_BYTES:
            raise ChatStreamError(f"a reply body over {MAX_BODY_BYTES} bytes")
    return bytes(data)


def _status_error(status: int, body: bytes, headers: httpx.Headers) -> ChatError:
    error = error_from_response(status, body)
    retry_after = RETRY_DELAY_S
    raw = headers.get("retry-after-ms")
    try:
        if raw is not None:
            retry_after = float(raw) / 1000
        elif headers.get("retry-after") is not None:
            retry_after = float(headers["retry-after"])
    except ValueError:
        pass
    error.retry_after = min(MAX_RETRY_DELAY_S, max(0.0, retry_after))
    return error


__all__ = ["MAX_REPLY_CHARS", "ChatClient", "ChatReply"]
