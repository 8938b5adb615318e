"""``FakeChatCompletions``: a local OpenAI-compatible Chat Completions server.

It answers ``POST /v1/chat/completions`` as OpenAI does (the chunk layout of
``shared/vectors/openai_chat_stream.json``): server-sent events for ``stream: true``, one JSON
body otherwise. Each request takes the next ``Reply`` of the script (then ``default``), which
says what to send: text (one token per word), an ``end_call`` tool call, the time to the first
token and between tokens, an error status, a stream cut short or broken by an error event, or
no answer at all. It records each request (headers and JSON body) and counts the streams a
client closed before their end (``abandoned``), which is how tests see that an interrupted
reply's HTTP request was really closed. ``api_key`` makes it refuse other keys with 401.
"""

from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx
import trio

from .server import BackgroundService

CHAT_PATH = "/v1/chat/completions"
MODEL = "gpt-4o-mini-2024-07-18"
_ERRORS: dict[int, dict[str, Any]] = {
    401: {"message": "Incorrect API key provided.", "type": "invalid_request_error",
          "param": None, "code": "invalid_api_key"},
    429: {"message": "Rate limit reached for requests.", "type": "requests", "param": None,
          "code": "rate_limit_exceeded"},
    500: {"message": "The server had an error while processing your request.",
          "type": "server_error", "param": None, "code": None},
}


@dataclass
class Reply:
    """One scripted answer."""

    text: str = "OK."
    end_call: str | None = None  # a reason: the reply also calls end_call
    status: int = 200
    error: dict[str, Any] | None = None  # the ``error`` object of a non-200 answer
    first_token_s: float = 0.0  # before the first chunk is sent
    token_s: float = 0.0  # between chunks
    cut_after: int | None = None  # send this many text tokens, then close: no finish, no DONE
    error_after: int | None = None  # ...or send an error event after this many tokens
    hang: bool = False  # accept the request and never answer
    headers: dict[str, str] = field(default_factory=dict)  # extra response headers

    @classmethod
    def failing(cls, status: int, code: str | None = None) -> Reply:
        error = dict(_ERRORS.get(status, _ERRORS[500]))
        if code is not None:
            error["code"] = code
            error["type"] = code
        return cls(status=status, error=error)


@dataclass(frozen=True)
class ChatRequest:
    headers: dict[str, str]  # lower-case names
    body: dict[str, Any]

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self.body.get("messages", []))

    @property
    def authorization(self) -> str | None:
        return self.headers.get("authorization")


def tokens(text: str) -> list[str]:
    """``text`` the way a model streams it: roughly a word per chunk, spaces in front."""
    return re.findall(r"\s*\S+", text) or ([text] if text else [])


class FakeChatCompletions(BackgroundService):
    def __init__(self, replies: Iterable[Reply] = (), *, default: Reply | None = None,
                 api_key: str | None = None, respond: Callable[[ChatRequest], Reply] | None
                 = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.script: deque[Reply] = deque(replies)
        self.default = default or Reply()
        self.respond = respond  # decides each reply when set (the script is then unused)
        self.api_key = api_key
        self.requests: list[ChatRequest] = []
        self.abandoned = 0  # streams the client closed before their end
        self.completed = 0
        self.url = ""  # http://127.0.0.1:PORT/v1 once running: responseBaseUrl
        self._asgi = self._app
        self._host = host
        self._port = port
        self._stop = trio.Event()
        self._http: httpx.AsyncClient | None = None
        self._nursery: trio.Nursery | None = None
        self._changed = trio.Event()

    @property
    def base_url(self) -> str:
        return self.url

    def _listening(self, base_url: str) -> None:
        self.url = base_url + "/v1"

    def add(self, *replies: Reply) -> None:
        self.script.extend(replies)

    async def wait_for(self, predicate: Callable[[FakeChatCompletions], bool]) -> None:
        """Wait until ``predicate(self)`` holds (checked after each change)."""
        while not predicate(self):
            await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    # -- the ASGI app ---------------------------------------------------------------------
    async def _app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        if scope["method"] != "POST" or scope["path"].rstrip("/") != CHAT_PATH:
            await _json(send, 404, {"error": {"message": "not found", "type": "not_found",
                                              "param": None, "code": None}})
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope["headers"]}
        try:
            doc = json.loads(body)
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            await _json(send, 400, {"error": {"message": "bad JSON", "type":
                                              "invalid_request_error", "param": None,
                                              "code": None}})
            return
        request = ChatRequest(headers, doc)
        self.requests.append(request)
        self._notify()
        if self.api_key is not None and request.authorization != f"Bearer {self.api_key}":
            await _json(send, 401, {"error": _ERRORS[401]})
            return
        reply = self._next(request)
        finished = False
        async with trio.open_nursery() as nursery:

            async def watch() -> None:  # the client closing the request ends the answer
                while (await receive())["type"] != "http.disconnect":
                    pass
                if not finished:
                    self.abandoned += 1
                    self._notify()
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch)
            await self._answer(reply, doc, send)
            finished = True  # everything sent (a client may close before the last frame)
            self.completed += 1
            self._notify()
            try:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            finally:
                nursery.cancel_scope.cancel()

    def _next(self, request: ChatRequest) -> Reply:
        if self.respond is not None:
            return self.respond(request)
        return self.script.popleft() if self.script else self.default

    async def _answer(self, reply: Reply, doc: dict[str, Any], send: Any) -> None:
        if reply.hang:
            await trio.sleep_forever()
        await trio.sleep(reply.first_token_s)
        if reply.status != 200:
            await _json(send, reply.status, {"error": reply.error or _ERRORS.get(
                reply.status, _ERRORS[500])}, reply.headers, last=False)
            return
        if doc.get("stream") is not True:
            await _json(send, 200, completion(reply), reply.headers, last=False)
            return
        await send({"type": "http.response.start", "status": 200, "headers": _headers(
            {"content-type": "text/event-stream; charset=utf-8", **reply.headers})})
        chunks = stream_chunks(reply)
        paced = len(chunks) - 3 if chunks[-1].startswith(b"data: [DONE]") else len(chunks)
        for n, data in enumerate(chunks):
            # the role chunk goes out with the first token; the finish, usage and [DONE]
            # events follow the last token at once
            if 1 < n < paced:
                await trio.sleep(reply.token_s)
            await send({"type": "http.response.body", "body": data, "more_body": True})


# -- the wire shapes ------------------------------------------------------------------------
def _chunk(n: int, choices: list[dict[str, Any]], usage: Any = None) -> bytes:
    chunk = {"id": f"chatcmpl-FAKE{n:028d}", "object": "chat.completion.chunk",
             "created": 1736850000, "model": MODEL, "system_fingerprint": "fp_00000000f0",
             "choices": choices, "usage": usage}
    return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"


def _delta(delta: dict[str, Any], finish: str | None = None) -> list[dict[str, Any]]:
    return [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]


def _usage(reply: Reply) -> dict[str, int]:
    completion_tokens = len(tokens(reply.text)) + (8 if reply.end_call else 0)
    return {"prompt_tokens": 100, "completion_tokens": completion_tokens,
            "total_tokens": 100 + completion_tokens}


def stream_chunks(reply: Reply) -> list[bytes]:
    """The SSE events of ``reply``, in order (cut or broken as the reply says)."""
    out = [_chunk(0, _delta({"role": "assistant", "content": "", "refusal": None}))]
    for n, token in enumerate(tokens(reply.text)):
        if reply.cut_after is not None and n >= reply.cut_after:
            return out
        if reply.error_after is not None and n >= reply.error_after:
            return [*out, b"data: " + json.dumps({"error": _ERRORS[500]}).encode() + b"\n\n"]
        out.append(_chunk(0, _delta({"content": token})))
    if reply.end_call is not None:
        arguments = json.dumps({"reason": reply.end_call}, separators=(",", ":"))
        out.append(_chunk(0, _delta({"tool_calls": [{
            "index": 0, "id": "call_FAKEendcall00000000001", "type": "function",
            "function": {"name": "end_call", "arguments": ""}}]})))
        for piece in (arguments[:len(arguments) // 2], arguments[len(arguments) // 2:]):
            out.append(_chunk(0, _delta({"tool_calls": [{
                "index": 0, "function": {"arguments": piece}}]})))
    out.append(_chunk(0, _delta({}, "tool_calls" if reply.end_call else "stop")))
    out.append(_chunk(0, [], _usage(reply)))
    out.append(b"data: [DONE]\n\n")
    return out


def completion(reply: Reply) -> dict[str, Any]:
    """``reply`` as a non-streamed ``chat.completion`` body."""
    message: dict[str, Any] = {"role": "assistant", "content": reply.text, "refusal": None}
    if reply.end_call is not None:
        message["tool_calls"] = [{"id": "call_FAKEendcall00000000001", "type": "function",
                                  "function": {"name": "end_call", "arguments": json.dumps(
                                      {"reason": reply.end_call})}}]
    return {"id": "chatcmpl-FAKE", "object": "chat.completion", "created": 1736850000,
            "model": MODEL, "choices": [{"index": 0, "message": message, "logprobs": None,
                                         "finish_reason": "tool_calls" if reply.end_call
                                         else "stop"}],
            "usage": _usage(reply)}


def _headers(values: dict[str, str]) -> list[tuple[bytes, bytes]]:
    # no keep-alive: an idle kept connection would hold the server's shutdown
    return [(k.encode(), v.encode()) for k, v in {**values, "connection": "close"}.items()]


async def _json(send: Any, status: int, doc: Any, extra: dict[str, str] | None = None, *,
                last: bool = True) -> None:
    data = json.dumps(doc).encode()
    await send({"type": "http.response.start", "status": status, "headers": _headers(
        {"content-type": "application/json", "content-length": str(len(data)),
         **(extra or {})})})
    await send({"type": "http.response.body", "body": data, "more_body": not last})


__all__ = ["CHAT_PATH", "ChatRequest", "FakeChatCompletions", "Reply", "completion",
           "stream_chunks", "tokens"]
