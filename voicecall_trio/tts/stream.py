"""One speech request streamed from an HTTP API into a channel of 8 kHz mu-law chunks.

The provider clients (``openai.py``, ``elevenlabs.py``) only say what to send and how to turn
the reply into mu-law; this module does the part they share and that must be right for a phone
call: the request is streamed (``client.stream("POST", ...)``), so the first audio reaches the
caller while the rest is still being made; the provider has ``FIRST_BYTE_S`` to answer 2xx and
send audio, and ``IDLE_S`` between chunks after that.

Two kinds of failure, kept apart on purpose:

- *before* the first audio byte (an error status, a timeout, a refused connection, an empty
  body, a 2xx whose type is a page or JSON rather than audio): ``SpeechError``, raised to
  the caller, whose utterance never starts;
- *after* it (the connection breaks, the provider stalls): the audio so far is already
  playing, so the utterance just ends there: the channel is closed and one warning is logged.

A consumer that closes its end (a barge-in dropped the utterance) stops the request quietly; a
reply longer than ``MAX_AUDIO_S`` is cut there (one warning), so a provider that never stops
cannot hold the line.
Messages name the provider and the failure, and are scrubbed of the key: an error body may
echo what it was sent, so nothing from the provider reaches a log or a client unscrubbed.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, cast

import httpx
import trio

from ..errors import SpeechError

log = logging.getLogger("voicecall.tts")

FIRST_BYTE_S: Final = 10.0  # to answer 2xx and send the first audio byte
IDLE_S: Final = 10.0  # between two chunks once audio flows
MAX_AUDIO_S: Final = 600  # of 8 kHz mu-law in one utterance; a reply that never ends is cut
MAX_ERROR_BODY: Final = 4096  # bytes of an error reply read for its message
MAX_MESSAGE_CHARS: Final = 200  # of the provider's own error text, in our message
_CONTROL = re.compile(r"[\x00-\x1f\x7f\s]+")  # control characters and runs of space


class Converter(Protocol):
    """The reply's bytes -> mu-law, streaming (``media.resample.ToUlaw8k`` is one)."""

    def feed(self, data: bytes) -> bytes: ...
    def flush(self) -> bytes: ...
    def close(self) -> None: ...


class Passthrough:
    """For a provider that already answers 8 kHz mu-law."""

    def feed(self, data: bytes) -> bytes:
        return data

    def flush(self) -> bytes:
        return b""

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class SpeechRequest:
    """What to POST, as data (and testable without a network)."""

    provider: str  # "OpenAI speech", "ElevenLabs": how messages name it
    url: str
    body: dict[str, Any]
    headers: dict[str, str] = field(repr=False)  # they carry the key
    params: dict[str, str] = field(default_factory=dict)
    secret: str = field(default="", repr=False)  # scrubbed from every message


def scrub(text: str, secret: str) -> str:
    """``text`` without ``secret`` (as is or escaped, as a repr shows it) or control
    characters, at most ``MAX_MESSAGE_CHARS``."""
    if secret:
        for form in sorted({secret, repr(secret)[1:-1], repr(secret.encode())[2:-1]},
                           key=len, reverse=True):
            text = text.replace(form, "***")
    text = _CONTROL.sub(" ", text).strip()
    return text if len(text) <= MAX_MESSAGE_CHARS else text[:MAX_MESSAGE_CHARS] + "..."


def error_text(body: bytes) -> str:
    """The message of an error reply: OpenAI's ``{error: {message}}``, ElevenLabs'
    ``{detail: {message}}`` or ``{detail: "..."}``; else the body as text."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):  # not JSON, or nested too deep to read
        return body.decode("utf-8", "replace")
    if isinstance(doc, dict):
        for key in ("error", "detail"):
            inner = doc.get(key)
            if isinstance(inner, dict) and isinstance(inner.get("message"), str):
                return str(inner["message"])
            if isinstance(inner, str):
                return inner
    return body.decode("utf-8", "replace")


async def _error_body(response: httpx.Response) -> bytes:
    data = bytearray()
    async for chunk in response.aiter_bytes():
        data += chunk
        if len(data) >= MAX_ERROR_BODY:
            break
    return bytes(data[:MAX_ERROR_BODY])


def checked_text(text: str, provider: str, limit: int) -> str:
    """``text`` if there is something to say and the API takes that much; else SpeechError."""
    if not text.strip():
        raise SpeechError(f"{provider}: nothing to say (empty text)")
    if len(text) > limit:
        raise SpeechError(f"{provider}: text too long ({len(text)} characters, at most {limit})")
    return text


def checked_key(key: str, provider: str) -> str:
    """``key`` if it can go in a header as is; else a ``SpeechError`` that does not show it."""
    if not key or not key.isascii() or not key.isprintable() or any(c.isspace() for c in key):
        raise SpeechError(f"{provider}: the API key is empty or has spaces or control "
                          "characters; check the config")
    return key


def not_audio(content_type: str) -> str | None:
    """The media type of a 2xx reply that is surely not audio (a proxy's or captive portal's
    page, a JSON error sent with 200), else None: played as PCM it would be noise on the
    phone. No type at all, octets or ``audio/*`` pass (self-hosted servers vary)."""
    kind = content_type.split(";", 1)[0].strip().lower()[:60]
    if kind.startswith("text/") or kind.endswith(("json", "xml", "html")):
        return _CONTROL.sub(" ", kind)
    return None


def _failure(request: SpeechRequest, exc: httpx.HTTPError) -> SpeechError:
    if isinstance(exc, httpx.TimeoutException):
        what = "timed out"
    elif isinstance(exc, httpx.ConnectError):
        what = "could not connect"
    else:
        what = "request failed"
    # a LocalProtocolError is about our own request, whose headers hold the key: no detail
    detail = "" if isinstance(exc, httpx.LocalProtocolError) else scrub(str(exc), request.secret)
    return SpeechError(f"{request.provider}: {what} ({type(exc).__name__}"
                       f"{': ' + detail if detail else ''})")


async def stream_speech(http: httpx.AsyncClient, request: SpeechRequest, converter: Converter,
                        send: trio.MemorySendChannel[bytes], *,
                        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                        piece_bytes: int | None = None) -> None:
    """Run ``request`` and write its audio, converted, into ``send`` (closed at the end).

    ``started()`` once the provider answered 2xx and its first audio bytes arrived; failures
    before that raise ``SpeechError``. ``piece_bytes`` caps how much one conversion step takes.
    """
    async with send, AsyncExitStack() as stack:
        stack.callback(converter.close)
        with trio.move_on_after(FIRST_BYTE_S) as waiting:
            try:
                response = await stack.enter_async_context(http.stream(
                    "POST", request.url, json=request.body, headers=request.headers,
                    params=request.params or None))
                if not 200 <= response.status_code < 300:
                    text = scrub(error_text(await _error_body(response)), request.secret)
                    raise SpeechError(f"{request.provider}: HTTP {response.status_code}"
                                      f"{': ' + text if text else ''}")
                kind = not_audio(response.headers.get("content-type", ""))
                if kind is not None:
                    raise SpeechError(f"{request.provider}: HTTP {response.status_code} "
                                      f"with {kind}, not audio")
                body = cast(AsyncGenerator[bytes, None], response.aiter_bytes())
                stack.push_async_callback(body.aclose)
                first = b""
                while not first:
                    first = await anext(body)
            except StopAsyncIteration:
                raise SpeechError(f"{request.provider}: the reply had no audio") from None
            except httpx.HTTPError as exc:
                raise _failure(request, exc) from None
        if waiting.cancelled_caught:
            raise SpeechError(f"{request.provider}: no audio within {FIRST_BYTE_S:g} s")
        task_status.started()
        await _pump(request, first, body, converter, send, piece_bytes)


async def _pump(request: SpeechRequest, first: bytes, body: AsyncIterator[bytes],
                converter: Converter, send: trio.MemorySendChannel[bytes],
                piece_bytes: int | None) -> None:
    """Convert and forward until the body ends; a failure now only ends the utterance."""
    received, data = 0, first
    room = MAX_AUDIO_S * 8000  # mu-law bytes this utterance may still send
    try:
        while True:
            received += len(data)
            step = piece_bytes or len(data) or 1
            for at in range(0, len(data), step):
                out = converter.feed(data[at:at + step])
                if len(out) >= room:
                    await send.send(out[:room])
                    log.warning("%s: more than %d s of audio; the utterance is cut there",
                                request.provider, MAX_AUDIO_S)
                    return
                if out:
                    room -= len(out)
                    await send.send(out)
            with trio.move_on_after(IDLE_S) as idle:
                try:
                    data = await anext(body)
                except StopAsyncIteration:
                    break
            if idle.cancelled_caught:
                log.warning("%s: no audio for %g s after %d bytes; the utterance ends there",
                            request.provider, IDLE_S, received)
                break
        tail = converter.flush()
        if tail:
            await send.send(tail)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return  # the player dropped the utterance (barge-in): nobody wants the rest
    except httpx.HTTPError as exc:
        log.warning("%s: the audio stream broke after %d bytes (%s); the utterance ends there",
                    request.provider, received, scrub(f"{type(exc).__name__}: {exc}",
                                                      request.secret))


__all__ = ["FIRST_BYTE_S", "IDLE_S", "MAX_AUDIO_S", "Converter", "Passthrough", "SpeechRequest",
           "checked_key", "checked_text", "error_text", "not_audio", "scrub", "stream_speech"]
