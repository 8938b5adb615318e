"""Model lifecycle: is any configured OpenAI model about to be shut down?

OpenAI announces shutdown dates for models (``shutdown_date`` in ``GET /models/{id}``); the
seed's defaults have them. ``doctor`` reports each model, and ``serve`` runs the same check
in the background once it is ready: one warning per model, never a delay or a failure of
start-up. A model whose key is missing is not looked up, so a config with no keys makes no
request at all.

The pure part (``configured_models``, ``shutdown_of``, ``verdict``) decides; ``look_up`` and
``warn_about_models`` do the HTTP with an injected or short-lived ``httpx.AsyncClient``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from . import feature_keys

if TYPE_CHECKING:
    import httpx

    from .config import VoiceCallConfig

log = logging.getLogger("voicecall.models")

WARN_WITHIN = timedelta(days=30)
LOOKUP_TIMEOUT_S = 10.0
MAX_BODY_BYTES = 64 * 1024  # a model object is a few hundred bytes


@dataclass(frozen=True, slots=True)
class ModelRef:
    """One configured model: its config key, id, where to look it up, and with which key."""

    key: str
    model: str
    base_url: str
    api_key: str | None

    def __repr__(self) -> str:  # never the key
        return f"ModelRef({self.key}={self.model!r} at {self.base_url})"


@dataclass(frozen=True, slots=True)
class Finding:
    """What the look-up found: ``ok`` (False: warn about it) and a line for doctor."""

    ref: ModelRef
    ok: bool
    detail: str


def _strip_provider(model: str) -> str:
    """``openai/gpt-4o-mini`` -> ``gpt-4o-mini`` (the seed's ``provider/model`` form)."""
    return model.split("/", 1)[1] if "/" in model else model


def configured_models(config: VoiceCallConfig, environ: Mapping[str, str]) -> list[ModelRef]:
    """The OpenAI models the config uses, for the features that are on."""
    refs = [ModelRef("responseModel", _strip_provider(config.response_model),
                     config.response_base_url.rstrip("/"),
                     feature_keys.reply_key(config, environ))]
    if config.streaming.enabled:
        refs.append(ModelRef("streaming.sttModel", config.streaming.stt_model,
                             feature_keys.stt_base_url(config), feature_keys.stt_key(config)))
        if feature_keys.tts_provider(config) == "openai":
            refs.append(ModelRef("tts.model", config.tts.model,
                                 feature_keys.tts_base_url(config).rstrip("/"),
                                 feature_keys.tts_key(config, environ)))
    realtime = getattr(config, "realtime", None)
    model = getattr(realtime, "model", None)
    if isinstance(model, str) and model and getattr(realtime, "enabled", True):
        refs.append(ModelRef("realtime.model", model, feature_keys.stt_base_url(config),
                             feature_keys.stt_key(config)))
    return [ref for ref in refs if ref.model]


def shutdown_of(doc: Any) -> date | None:
    """``shutdown_date`` of a model object: an ISO date (or date-time) or unix seconds."""
    value = doc.get("shutdown_date") if isinstance(doc, dict) else None
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        try:
            return datetime.fromtimestamp(value, UTC).date()
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str) and value.strip():
        text = value.strip()
        try:
            return date.fromisoformat(text[:10])
        except ValueError:
            return None
    return None


def verdict(ref: ModelRef, shutdown: date | None, today: date) -> Finding:
    """Past or within ``WARN_WITHIN``: not ok, with the date."""
    name = f"{ref.key} {ref.model}"
    if shutdown is None:
        return Finding(ref, True, f"{name}: no shutdown announced")
    if shutdown <= today:
        return Finding(ref, False, f"{name}: shut down by OpenAI on {shutdown.isoformat()}; "
                                   "choose a newer model")
    if shutdown - today <= WARN_WITHIN:
        return Finding(ref, False, f"{name}: OpenAI shuts it down on {shutdown.isoformat()} "
                                   f"(in {(shutdown - today).days} days); choose a newer model")
    return Finding(ref, True, f"{name}: shutdown announced for {shutdown.isoformat()}")


def today_utc() -> date:
    return datetime.now(UTC).date()


async def look_up(http: httpx.AsyncClient, ref: ModelRef, today: date) -> Finding:
    """``GET {base}/models/{id}``; a failed look-up is a finding too (never raises)."""
    import httpx

    from .agent.chat import is_openai, shown_url

    url = f"{ref.base_url}/models/{quote(ref.model, safe='')}"
    shown = shown_url(ref.base_url)  # a base URL may carry a key in its user part
    headers = {"Authorization": f"Bearer {ref.api_key}"} if ref.api_key else {}
    try:
        async with http.stream("GET", url, headers=headers, timeout=LOOKUP_TIMEOUT_S) as reply:
            body = bytearray()
            async for chunk in reply.aiter_bytes():
                body += chunk
                if len(body) > MAX_BODY_BYTES:
                    break
            status = reply.status_code
    except (httpx.HTTPError, httpx.InvalidURL, ValueError) as exc:
        return Finding(ref, False, f"{ref.key} {ref.model}: cannot look it up at "
                                   f"{shown}: {type(exc).__name__}")
    if status == 404 and not is_openai(ref.base_url):
        # OpenRouter, vLLM, LM Studio ... need not offer the look-up: only OpenAI announces
        # shutdowns, so there is nothing to hold against the config
        return Finding(ref, True, f"{ref.key} {ref.model}: not listed by {shown} (no "
                                  "shutdown data outside OpenAI)")
    if status == 404:
        return Finding(ref, False, f"{ref.key} {ref.model}: no such model at {shown}")
    if status in (401, 403):
        return Finding(ref, False, f"{ref.key} {ref.model}: the API key was refused "
                                   f"(HTTP {status}) at {shown}")
    if status != 200:
        return Finding(ref, False, f"{ref.key} {ref.model}: look-up answered HTTP {status}")
    try:
        doc = json.loads(bytes(body[:MAX_BODY_BYTES]))
    except (ValueError, UnicodeDecodeError, RecursionError):
        return Finding(ref, False, f"{ref.key} {ref.model}: look-up answered no JSON")
    return verdict(ref, shutdown_of(doc), today)


async def check_models(http: httpx.AsyncClient, refs: list[ModelRef],
                       today: date) -> list[Finding]:
    return [await look_up(http, ref, today) for ref in refs]


async def warn_about_models(config: VoiceCallConfig, environ: Mapping[str, str], *,
                            http: httpx.AsyncClient | None = None,
                            today: Callable[[], date] = today_utc) -> None:
    """``serve``'s background check: one warning per model with a problem; never raises."""
    refs = [ref for ref in configured_models(config, environ) if ref.api_key]
    if not refs:
        return
    import httpx

    try:
        if http is None:
            async with httpx.AsyncClient(timeout=LOOKUP_TIMEOUT_S) as own:
                findings = await check_models(own, refs, today())
        else:
            findings = await check_models(http, refs, today())
    except Exception as exc:  # a background check must never take the daemon down
        log.warning("model check failed: %s", type(exc).__name__)
        return
    for finding in findings:
        if not finding.ok:
            log.warning("model check: %s", finding.detail)
