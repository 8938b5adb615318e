"""ElevenLabs' streaming speech API, asked for 8 kHz mu-law so nothing needs converting.

``POST {tts.elevenlabs.baseUrl}/v1/text-to-speech/{voiceId}/stream?output_format=ulaw_8000``
with the key in ``xi-api-key`` (not ``Authorization``) and ``{text, model_id}`` as JSON: the
request the official SDK sends (``vectors/tts_reply.json``). The body is headerless mu-law,
handed on as it arrives; the player cuts it into frames.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import quote

import httpx
import trio

from ..errors import SpeechError
from .stream import Passthrough, SpeechRequest, checked_key, checked_text, stream_speech

MAX_TEXT_CHARS: Final = 4096  # well under the API's limits; a phone reply is a few sentences


class ElevenLabsSpeech:
    """A ``SpeechClient`` for ElevenLabs."""

    provider = "ElevenLabs"

    def __init__(self, http: httpx.AsyncClient, *, api_key: str, voice_id: str,
                 model_id: str = "eleven_flash_v2_5",
                 base_url: str = "https://api.elevenlabs.io") -> None:
        self._http = http
        self._api_key = api_key
        self.voice_id = voice_id
        self.model_id = model_id
        self.base_url = base_url.rstrip("/")

    def request(self, text: str) -> SpeechRequest:
        """The request for ``text`` (raises ``SpeechError`` for empty or overlong text)."""
        text = checked_text(text, self.provider, MAX_TEXT_CHARS)
        key = checked_key(self._api_key, self.provider)
        voice = quote(self.voice_id, safe="")
        return SpeechRequest(
            provider=self.provider, url=f"{self.base_url}/v1/text-to-speech/{voice}/stream",
            params={"output_format": "ulaw_8000"},
            body={"text": text, "model_id": self.model_id},
            headers={"xi-api-key": key}, secret=key)

    async def synthesize(self, text: str, send: trio.MemorySendChannel[bytes], *,
                         task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                         ) -> None:
        """Stream ``text`` as 8 kHz mu-law chunks into ``send`` (see ``tts.SpeechClient``)."""
        try:
            request = self.request(text)
        except SpeechError:
            send.close()
            raise
        await stream_speech(self._http, request, Passthrough(), send, task_status=task_status)


__all__ = ["ElevenLabsSpeech"]
