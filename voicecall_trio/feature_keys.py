"""Which API key serves which feature: speech-to-text, text-to-speech, replies (pure).

One place for the fallbacks, so ``doctor``, the model check and the clients agree:

- STT: ``streaming.openaiApiKey`` (``OPENAI_API_KEY`` already falls back into it);
- TTS: ``tts.apiKey``, else the STT key; with ``tts.provider: "elevenlabs"``
  ``tts.elevenlabs.apiKey``, else ``ELEVENLABS_API_KEY``;
- replies: ``responseApiKey``, else ``OPENAI_API_KEY``, else ``streaming.openaiApiKey``.

Keys added by other issues may not exist in this config yet: they are read with ``getattr``.
The values returned are secrets: callers never log them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from .config import VoiceCallConfig

OPENAI_HOST = "api.openai.com"
OPENAI_BASE = f"https://{OPENAI_HOST}/v1"


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def is_openai(base_url: str) -> bool:
    try:
        return (urlsplit(base_url).hostname or "").lower() == OPENAI_HOST
    except ValueError:
        return False


def stt_key(config: VoiceCallConfig) -> str | None:
    return _str(config.streaming.openai_api_key)


def tts_provider(config: VoiceCallConfig) -> str:
    return str(getattr(config.tts, "provider", "openai") or "openai")


def tts_key(config: VoiceCallConfig, environ: Mapping[str, str]) -> str | None:
    if tts_provider(config) == "elevenlabs":
        eleven = getattr(config.tts, "elevenlabs", None)
        return _str(getattr(eleven, "api_key", None)) or _str(environ.get("ELEVENLABS_API_KEY"))
    return _str(getattr(config.tts, "api_key", None)) or stt_key(config)


def tts_key_name(config: VoiceCallConfig) -> str:
    if tts_provider(config) == "elevenlabs":
        return "tts.elevenlabs.apiKey / ELEVENLABS_API_KEY"
    return "tts.apiKey / streaming.openaiApiKey / OPENAI_API_KEY"


def reply_key(config: VoiceCallConfig, environ: Mapping[str, str]) -> str | None:
    return (_str(getattr(config, "response_api_key", None))
            or _str(environ.get("OPENAI_API_KEY")) or stt_key(config))


def tts_base_url(config: VoiceCallConfig) -> str:
    return _str(getattr(config.tts, "base_url", None)) or OPENAI_BASE


def stt_base_url(config: VoiceCallConfig) -> str:
    """The REST base beside ``streaming.realtimeUrl`` (``wss://host/v1/realtime`` ->
    ``https://host/v1``), so a self-hosted or fake Realtime server answers model look-ups."""
    url = config.streaming.realtime_url
    try:
        parts = urlsplit(url)
    except ValueError:
        return OPENAI_BASE
    scheme = {"wss": "https", "ws": "http"}.get(parts.scheme, parts.scheme)
    if scheme not in ("http", "https") or not parts.netloc:
        return OPENAI_BASE
    path = parts.path.rstrip("/")
    if path.endswith("/realtime"):
        path = path[: -len("/realtime")]
    return f"{scheme}://{parts.netloc}{path}"


@dataclass(frozen=True, slots=True)
class KeyNeed:
    """One feature's key: whether the feature is on, and whether its key is there."""

    feature: str  # "STT", "TTS", "replies"
    key_name: str  # where the key comes from, for the message
    needed: bool
    present: bool


def key_needs(config: VoiceCallConfig, environ: Mapping[str, str]) -> list[KeyNeed]:
    """STT and TTS need keys when streaming is on; replies when ``responseBaseUrl`` is
    OpenAI's (a registered agent can answer without one, so that need is softer)."""
    streaming = config.streaming.enabled
    return [
        KeyNeed("STT", "streaming.openaiApiKey / OPENAI_API_KEY", streaming,
                stt_key(config) is not None),
        KeyNeed("TTS", tts_key_name(config), streaming, tts_key(config, environ) is not None),
        KeyNeed("replies", "responseApiKey / OPENAI_API_KEY / streaming.openaiApiKey",
                is_openai(config.response_base_url), reply_key(config, environ) is not None),
    ]
