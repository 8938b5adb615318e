"""``FakeTTS``: OpenAI's and ElevenLabs' speech APIs on loopback, or in memory.

Serves ``POST /v1/audio/speech`` (the PCM it was given, 24 kHz s16le, as OpenAI's
``response_format: "pcm"``) and ``POST /v1/text-to-speech/{voice}/stream`` (the mu-law it was
given, as ElevenLabs' ``output_format=ulaw_8000``), each as a chunked stream, and records every
request. Without audio of its own it speaks a one-second 440 Hz tone (and that tone converted
to mu-law), so it needs no files; tests pass the vectors' ``tts_reply_*`` files.

Knobs, all attributes a test may change at any time: ``first_byte_delay`` (s before the answer
starts), ``chunk_size`` and ``chunk_delay`` (bytes a chunk, s between chunks), ``break_after``
(drop the connection after that many body bytes), ``stall_after`` (stop sending after that many
bytes and hold the connection open), ``fail_with(status)`` (answer an error instead, with each
API's error body), and ``openai_key`` / ``elevenlabs_key`` (when set, other keys get 401).

``async with FakeTTS() as tts:`` listens on 127.0.0.1:0 (``tts.base_url`` is
``http://127.0.0.1:PORT/v1``, ``tts.elevenlabs_base_url`` ``http://127.0.0.1:PORT``); ``async
with FakeTTS().in_memory() as tts:`` runs without a socket, reached through
``tts.transport()``, which streams chunk by chunk so timeouts can be tested on the autojump
clock. ``tts.config()`` is the ``tts`` config section that points the daemon at it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote

import httpx
import trio

from .asgi_stream import StreamingASGITransport
from .server import BackgroundService

Api = Literal["openai", "elevenlabs", "other"]
_ELEVENLABS_PATH = re.compile(r"^/v1/text-to-speech/(?P<voice>[^/]+)/stream$")
MAX_REQUEST_BYTES = 1 << 20


def tone_pcm(seconds: float = 1.0, rate: int = 24000, hz: float = 440.0) -> bytes:
    """A sine tone as raw s16le: audio that needs no file."""
    import numpy as np

    t = np.arange(round(seconds * rate)) / rate
    return (np.sin(2 * math.pi * hz * t) * 6000).astype("<i2").tobytes()


def to_ulaw(pcm: bytes, rate: int = 24000) -> bytes:
    from ..media.resample import ToUlaw8k

    converter = ToUlaw8k(rate)
    return converter.feed(pcm) + converter.flush()


@dataclass(frozen=True)
class TtsRequest:
    """One request the fake received."""

    api: Api
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes

    @property
    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None


@dataclass
class _Failure:
    status: int
    message: str
    times: int | None  # None: until fail_with(None)


class FakeTTS(BackgroundService):
    """See the module docstring."""

    def __init__(self, *, pcm: bytes | None = None, ulaw: bytes | None = None,
                 chunk_size: int = 4096, chunk_delay: float = 0.0,
                 first_byte_delay: float = 0.0, openai_key: str | None = None,
                 elevenlabs_key: str | None = None, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.pcm = tone_pcm() if pcm is None else pcm
        self.ulaw = to_ulaw(self.pcm) if ulaw is None else ulaw
        self.chunk_size = chunk_size
        self.chunk_delay = chunk_delay
        self.first_byte_delay = first_byte_delay
        self.break_after: int | None = None
        self.stall_after: int | None = None
        self.openai_key = openai_key
        self.elevenlabs_key = elevenlabs_key
        self.requests: list[TtsRequest] = []
        self.url = ""
        self._failure: _Failure | None = None
        self._changed = trio.Event()
        self._host, self._port = host, port
        self._stop = trio.Event()
        self._http = None
        self._nursery = None

    # -- what a test uses ------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``tts.baseUrl`` for the OpenAI-shaped API."""
        return f"{self.url}/v1"

    @property
    def elevenlabs_base_url(self) -> str:
        """``tts.elevenlabs.baseUrl``."""
        return self.url

    def config(self, provider: str = "openai", *, api_key: str = "sk-test-fake-tts",
               voice_id: str = "JBFqnCBsd6RMkjVDRZzb") -> dict[str, Any]:
        """The ``tts`` config section (camelCase, as in a file) that uses this fake."""
        return {"provider": provider, "baseUrl": self.base_url, "apiKey": api_key,
                "elevenlabs": {"apiKey": api_key, "voiceId": voice_id,
                               "baseUrl": self.elevenlabs_base_url}}

    def fail_with(self, status: int | None, *, message: str = "the fake TTS failed",
                  times: int | None = None) -> None:
        """Answer the next ``times`` requests (all, if None) with ``status``; None stops."""
        self._failure = None if status is None else _Failure(status, message, times)

    def transport(self) -> httpx.ASGITransport:
        """The APIs in memory, streamed (needs the fake running: ``in_memory`` or ``run``)."""
        if self._nursery is None:
            raise RuntimeError("FakeTTS is not running: use `async with fake.in_memory()`")
        return StreamingASGITransport(self._asgi, self._nursery)

    async def wait_for_requests(self, count: int = 1) -> list[TtsRequest]:
        """Wait until ``count`` requests have arrived (bound it with a timeout)."""
        while len(self.requests) < count:
            await self._changed.wait()
        return self.requests

    def _listening(self, base_url: str) -> None:
        self.url = base_url.rstrip("/")

    # -- the ASGI app ----------------------------------------------------------------------

    async def _asgi(self, scope: MutableMapping[str, Any],
                    receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
                    send: Callable[[MutableMapping[str, Any]], Awaitable[None]]) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        body = bytearray()
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body") or len(body) > MAX_REQUEST_BYTES:
                break
        request = self._record(scope, bytes(body))
        status, payload, audio = self._answer(request)
        if audio is None:
            await _send_json(send, status, payload)
            return
        await trio.sleep(self.first_byte_delay)
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"application/octet-stream")]})  # no length: sent chunked
        await self._stream(send, audio)

    def _record(self, scope: MutableMapping[str, Any], body: bytes) -> TtsRequest:
        path = scope["path"]
        api: Api = ("openai" if path == "/v1/audio/speech"
                    else "elevenlabs" if _ELEVENLABS_PATH.match(path) else "other")
        query = scope.get("query_string", b"").decode("latin-1")
        request = TtsRequest(
            api=api, method=scope["method"], path=path, query=dict(parse_qsl(query)),
            headers={k.decode("latin-1").lower(): v.decode("latin-1")
                     for k, v in scope.get("headers", [])},
            body=body)
        self.requests.append(request)
        self._changed.set()
        self._changed = trio.Event()
        return request

    def _answer(self, request: TtsRequest) -> tuple[int, dict[str, Any], bytes | None]:
        """(status, error body, audio): audio None means answer the error."""
        if request.api == "other":
            return 404, {"error": {"message": "not found", "type": "invalid_request_error"}}, None
        if request.method != "POST":
            return 405, {"error": {"message": "method not allowed"}}, None
        failure = self._failure
        if failure is not None:
            if failure.times is not None:
                failure.times -= 1
                if failure.times <= 0:
                    self._failure = None
            return failure.status, _error(request.api, failure.message, failure.status), None
        if request.api == "openai":
            return self._openai(request)
        return self._elevenlabs(request)

    def _openai(self, request: TtsRequest) -> tuple[int, dict[str, Any], bytes | None]:
        if self.openai_key is not None and (
                request.headers.get("authorization") != f"Bearer {self.openai_key}"):
            return 401, _error("openai", "Incorrect API key provided.", 401), None
        doc = request.json
        if not isinstance(doc, dict) or not all(
                isinstance(doc.get(k), str) and doc[k] for k in ("model", "input", "voice")):
            return 400, _error("openai", "model, input and voice are required", 400), None
        if doc.get("response_format") != "pcm":
            return 400, _error("openai", "this fake serves response_format pcm only", 400), None
        return 200, {}, self.pcm

    def _elevenlabs(self, request: TtsRequest) -> tuple[int, dict[str, Any], bytes | None]:
        if self.elevenlabs_key is not None and (
                request.headers.get("xi-api-key") != self.elevenlabs_key):
            return 401, _error("elevenlabs", "Invalid API key", 401), None
        doc = request.json
        if not isinstance(doc, dict) or not isinstance(doc.get("text"), str) or not doc["text"]:
            return 422, _error("elevenlabs", "text is required", 422), None
        if request.query.get("output_format") != "ulaw_8000":
            return 400, _error("elevenlabs", "this fake serves ulaw_8000 only", 400), None
        match = _ELEVENLABS_PATH.match(request.path)
        assert match is not None
        if not unquote(match.group("voice")):
            return 400, _error("elevenlabs", "voice_id is required", 400), None
        return 200, {}, self.ulaw

    async def _stream(self, send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
                      audio: bytes) -> None:
        size = max(1, self.chunk_size)
        sent = 0
        for at in range(0, len(audio), size):
            if at and self.chunk_delay:
                await trio.sleep(self.chunk_delay)
            chunk = audio[at:at + size]
            if self.break_after is not None and sent + len(chunk) > self.break_after:
                await send({"type": "http.response.body",
                            "body": chunk[:max(0, self.break_after - sent)], "more_body": True})
                raise ConnectionResetError("FakeTTS.break_after: the connection drops")
            if self.stall_after is not None and sent + len(chunk) > self.stall_after:
                await send({"type": "http.response.body",
                            "body": chunk[:max(0, self.stall_after - sent)], "more_body": True})
                await trio.sleep_forever()
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            sent += len(chunk)
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _error(api: Api, message: str, status: int) -> dict[str, Any]:
    if api == "elevenlabs":
        return {"detail": {"status": f"http_{status}", "message": message}}
    kind = "server_error" if status >= 500 else "invalid_request_error"
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


async def _send_json(send: Callable[[MutableMapping[str, Any]], Awaitable[None]], status: int,
                     doc: dict[str, Any]) -> None:
    payload = json.dumps(doc).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})


__all__ = ["FakeTTS", "TtsRequest", "to_ulaw", "tone_pcm"]
