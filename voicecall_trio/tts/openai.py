"""OpenAI's speech API (``POST {baseUrl}/audio/speech``), and any server that speaks its shape.

Asks for ``response_format: "pcm"``: raw 24 kHz s16le with no header, the one format that can
be converted as it streams (mp3 or opus would need a decoder). The reply is resampled to 8 kHz
mu-law with ``media.resample.ToUlaw8k``, inline (about 12 us per 100 ms of audio, see there),
in pieces of at most ``MAX_PIECE_BYTES``. The request is the one the official SDK sends
(``vectors/tts_reply.json``). OpenAI has announced the shutdown of its speech models for
2027-01-06; ``tts.baseUrl`` points the same client at a compatible self-hosted server.
"""

from __future__ import annotations

from typing import Final

import httpx
import trio

from ..errors import SpeechError
from ..media.resample import MAX_PIECE_BYTES, ToUlaw8k
from .stream import SpeechRequest, checked_key, checked_text, stream_speech

SOURCE_RATE: Final = 24000  # what response_format "pcm" is
MAX_TEXT_CHARS: Final = 4096  # the API's limit on `input`


class OpenAISpeech:
    """A ``SpeechClient`` for OpenAI-shaped speech APIs."""

    provider = "OpenAI speech"

    def __init__(self, http: httpx.AsyncClient, *, api_key: str,
                 base_url: str = "https://api.openai.com/v1", model: str = "gpt-4o-mini-tts",
                 voice: str = "coral", instructions: str | None = None) -> None:
        self._http = http
        self._api_key = api_key
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.voice = voice
        self.instructions = instructions

    def request(self, text: str) -> SpeechRequest:
        """The request for ``text`` (raises ``SpeechError`` for text the API would refuse)."""
        text = checked_text(text, self.provider, MAX_TEXT_CHARS)
        key = checked_key(self._api_key, self.provider)
        body: dict[str, str] = {"model": self.model, "input": text, "voice": self.voice}
        if self.instructions:
            body["instructions"] = self.instructions
        body["response_format"] = "pcm"
        return SpeechRequest(
            provider=self.provider, url=f"{self.base_url}/audio/speech", body=dict(body),
            headers={"Authorization": f"Bearer {key}", "Accept": "application/octet-stream"},
            secret=key)

    async def synthesize(self, text: str, send: trio.MemorySendChannel[bytes], *,
                         task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                         ) -> None:
        """Stream ``text`` as 8 kHz mu-law chunks into ``send`` (see ``tts.SpeechClient``)."""
        try:
            request = self.request(text)
        except SpeechError:
            send.close()
            raise
        await stream_speech(self._http, request, ToUlaw8k(SOURCE_RATE), send,
                            task_status=task_status, piece_bytes=MAX_PIECE_BYTES)


__all__ = ["MAX_TEXT_CHARS", "OpenAISpeech"]
