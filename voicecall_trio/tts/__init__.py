"""Speech for streamed calls: text in, 8 kHz mu-law chunks out, as the provider makes them.

``make_speech(config, http)`` picks the client ``tts.provider`` names, with the injected
``httpx.AsyncClient``; it returns None when that provider's key is missing (or the provider is
unknown), and the call then cannot speak over its stream. Modules: ``stream`` (the shared
streaming request, its timeouts and failure rules), ``openai`` (24 kHz PCM, resampled),
``elevenlabs`` (mu-law as is). No trio task of its own: ``synthesize`` runs in the caller's
nursery, started with ``nursery.start`` so that a failure before any audio is the caller's
exception, not a dead task.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import trio

from .elevenlabs import ElevenLabsSpeech
from .openai import OpenAISpeech
from .stream import FIRST_BYTE_S, IDLE_S

if TYPE_CHECKING:
    import httpx

    from ..config import VoiceCallConfig


class SpeechClient(Protocol):
    """A TTS provider, as a streamed call's voice session uses it."""

    async def synthesize(self, text: str, send: trio.MemorySendChannel[bytes], *,
                         task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                         ) -> None:
        """Stream ``text`` as 8 kHz mu-law chunks into ``send`` (closed at the end).
        ``started()`` once the provider answered 2xx and the first audio bytes arrived; before
        that, failure raises SpeechError (status, timeout, refused) naming it without secrets.
        After it, a broken or stalled stream ends the audio early (one log line, no raise)."""
        ...


def make_speech(config: VoiceCallConfig, http: httpx.AsyncClient) -> SpeechClient | None:
    """The configured speech client, or None without its key (``tts.apiKey`` / OpenAI key for
    ``openai``; ``tts.elevenlabs.apiKey`` / ``ELEVENLABS_API_KEY`` and a voice for
    ``elevenlabs``) or for an unknown provider."""
    tts = config.tts
    if tts.provider == "openai":
        key = config.tts_key()
        if not key:
            return None
        return OpenAISpeech(http, api_key=key, base_url=tts.base_url, model=tts.model,
                            voice=tts.voice, instructions=tts.instructions)
    if tts.provider == "elevenlabs":
        eleven = tts.elevenlabs
        if not eleven.api_key or not eleven.voice_id:
            return None
        return ElevenLabsSpeech(http, api_key=eleven.api_key, voice_id=eleven.voice_id,
                                model_id=eleven.model_id, base_url=eleven.base_url)
    return None


__all__ = ["FIRST_BYTE_S", "IDLE_S", "ElevenLabsSpeech", "OpenAISpeech", "SpeechClient",
           "make_speech"]
