"""The whole configuration, as msgspec Structs, and the only code that reads config files or env.

Keys and defaults are the seed's (``plugins.entries.voice-call.config``); keys of our own are
marked below and documented in ``docs/configuration.md``. Validation is strict: an unknown key,
a malformed phone number or a missing credential is a ``ConfigError`` that names the key path.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec

from . import configfile
from .configfile import default_config_path, extract_section, parse_document, read_document
from .errors import ConfigError

E164 = re.compile(r"^\+[1-9]\d{1,14}$")

ProviderName = Literal["mock", "twilio", "telnyx"]
Mode = Literal["notify", "conversation"]
InboundPolicy = Literal["disabled", "allowlist", "pairing", "open"]


class _Section(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    pass


class TwilioConfig(_Section):
    account_sid: str | None = None
    auth_token: str | None = None
    api_base_url: str = "https://api.twilio.com"  # ours


class TelnyxConfig(_Section):
    api_key: str | None = None
    connection_id: str | None = None
    public_key: str | None = None
    api_base_url: str = "https://api.telnyx.com/v2"  # ours


class ServeConfig(_Section):
    port: int = 3334
    bind: str = "127.0.0.1"
    path: str = "/voice/webhook"
    max_connections: int = 768  # ours: open HTTP connections at once (front.MAX_CONNECTIONS)


class OutboundConfig(_Section):
    default_mode: Mode = "notify"
    notify_hangup_delay_sec: float = 3


class TailscaleConfig(_Section):
    mode: Literal["off", "serve", "funnel"] = "off"
    path: str = "/voice/webhook"


class TunnelConfig(_Section):
    provider: Literal["none", "ngrok", "tailscale-serve", "tailscale-funnel"] = "none"
    ngrok_auth_token: str | None = None
    ngrok_domain: str | None = None
    allow_ngrok_free_tier: bool = True


class StreamingConfig(_Section):
    enabled: bool = False
    stt_provider: Literal["openai-realtime"] = "openai-realtime"
    openai_api_key: str | None = None
    stt_model: str = "gpt-4o-transcribe"
    silence_duration_ms: int = 800
    vad_threshold: float = 0.5
    stream_path: str = "/voice/stream"
    pre_start_timeout_ms: int = 5000
    max_pending_connections: int = 32
    max_pending_connections_per_ip: int = 4
    max_connections: int = 128
    realtime_url: str = "wss://api.openai.com/v1/realtime"  # ours
    barge_in: bool = True  # ours


class SttConfig(_Section):
    provider: Literal["openai"] = "openai"
    model: str = "whisper-1"


class ElevenLabsConfig(_Section):  # ours
    api_key: str | None = None
    voice_id: str = "JBFqnCBsd6RMkjVDRZzb"
    model_id: str = "eleven_flash_v2_5"
    base_url: str = "https://api.elevenlabs.io"


class TtsConfig(_Section):
    provider: Literal["openai", "elevenlabs"] = "openai"
    model: str = "gpt-4o-mini-tts"
    voice: str = "coral"
    instructions: str | None = None
    base_url: str = "https://api.openai.com/v1"  # ours
    api_key: str | None = None  # ours
    elevenlabs: ElevenLabsConfig = msgspec.field(default_factory=ElevenLabsConfig)


class WebhookSecurityConfig(_Section):
    allowed_hosts: list[str] = msgspec.field(default_factory=list)
    trust_forwarding_headers: bool = False
    trusted_proxy_i_ps: list[str] = msgspec.field(default_factory=list, name="trustedProxyIPs")
    max_body_bytes: int = 1_048_576  # ours
    max_in_flight_per_ip: int = 64  # ours


class MockConfig(_Section):
    answer_delay_ms: int = 300
    reply_delay_ms: int = 400
    speak_ms_per_char: int = 10
    caller_script: list[str] = msgspec.field(
        default_factory=lambda: [
            "Hi, this is the mock callee. I can hear you fine.",
            "Sounds good, thank you.",
            "Goodbye!",
        ]
    )
    outcome: Literal["answered", "busy", "no-answer", "failed"] = "answered"


class ControlConfig(_Section):  # ours
    socket_path: str | None = None


class JournalConfig(_Section):  # ours
    max_bytes: int = 64 * 1024 * 1024
    keep_files: int = 3


class VoiceCallConfig(_Section):
    enabled: bool = True
    provider: ProviderName = "mock"
    from_number: str | None = None
    to_number: str | None = None
    twilio: TwilioConfig = msgspec.field(default_factory=TwilioConfig)
    telnyx: TelnyxConfig = msgspec.field(default_factory=TelnyxConfig)
    serve: ServeConfig = msgspec.field(default_factory=ServeConfig)
    public_url: str | None = None
    tailscale: TailscaleConfig = msgspec.field(default_factory=TailscaleConfig)
    tunnel: TunnelConfig = msgspec.field(default_factory=TunnelConfig)
    outbound: OutboundConfig = msgspec.field(default_factory=OutboundConfig)
    inbound_policy: InboundPolicy = "disabled"
    allow_from: list[str] = msgspec.field(default_factory=list)
    inbound_greeting: str | None = None
    max_duration_seconds: int = 300
    silence_timeout_ms: int = 800
    transcript_timeout_ms: int = 180_000
    ring_timeout_ms: int = 30_000
    max_concurrent_calls: int = 1
    streaming: StreamingConfig = msgspec.field(default_factory=StreamingConfig)
    stt: SttConfig = msgspec.field(default_factory=SttConfig)
    tts: TtsConfig = msgspec.field(default_factory=TtsConfig)
    webhook_security: WebhookSecurityConfig = msgspec.field(default_factory=WebhookSecurityConfig)
    skip_signature_verification: bool = False
    store: str | None = None
    response_model: str = "openai/gpt-4o-mini"
    response_system_prompt: str | None = None
    response_timeout_ms: int = 30_000
    response_base_url: str = "https://api.openai.com/v1"  # ours
    response_api_key: str | None = None  # ours; env OPENAI_API_KEY, then streaming.openaiApiKey
    mock: MockConfig = msgspec.field(default_factory=MockConfig)  # issue: mock carrier
    control: ControlConfig = msgspec.field(default_factory=ControlConfig)  # ours
    journal: JournalConfig = msgspec.field(default_factory=JournalConfig)  # ours
    shutdown_grace_seconds: float = 5.0  # ours

    # -- derived paths -------------------------------------------------------------------
    @property
    def store_dir(self) -> Path:
        return Path(configfile.store_dir(self.store))

    @property
    def journal_path(self) -> Path:
        return self.store_dir / "calls.jsonl"

    def socket_path(self, environ: Mapping[str, str] | None = None) -> Path:
        env = os.environ if environ is None else environ
        return Path(configfile.socket_path(self.store, self.control.socket_path, env))

    @property
    def webhook_url(self) -> str | None:
        return self.public_url

    # -- keys and what they switch on -----------------------------------------------------
    def openai_key(self) -> str | None:
        """``streaming.openaiApiKey`` (``OPENAI_API_KEY`` falls back into it at load)."""
        return self.streaming.openai_api_key or None

    def tts_key(self) -> str | None:
        """The speech provider's key: ElevenLabs' own, or ``tts.apiKey`` else the OpenAI key."""
        if self.tts.provider == "elevenlabs":
            return self.tts.elevenlabs.api_key or None
        return self.tts.api_key or self.openai_key()

    def streaming_active(self) -> bool:
        """Media streams run only with ``streaming.enabled`` and an OpenAI key for the STT;
        without the key, Twilio conversations stay on ``<Gather>`` (the seed: streaming does
        not start)."""
        return self.streaming.enabled and self.openai_key() is not None

    def streaming_warning(self) -> str | None:
        """Why streaming is on in the config but will not run, for ``serve`` and ``doctor``."""
        if not self.streaming.enabled:
            return None
        if self.openai_key() is None:
            return ("streaming.enabled is set but no OpenAI key was found "
                    "(streaming.openaiApiKey or OPENAI_API_KEY): streaming does not start; "
                    "Twilio conversation calls use <Gather>")
        if self.tts_key() is None:
            missing = ("tts.elevenlabs.apiKey or ELEVENLABS_API_KEY"
                       if self.tts.provider == "elevenlabs" else "tts.apiKey")
            return f"no speech key ({missing}): the bot cannot speak over media streams"
        return None

    def response_key(self) -> str | None:
        """The built-in replies' key: ``responseApiKey`` (``OPENAI_API_KEY`` falls back into
        it), else ``streaming.openaiApiKey``."""
        return self.response_api_key or self.streaming.openai_api_key or None


# -- loading -----------------------------------------------------------------------------


_ENV_FALLBACKS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("tts", "elevenlabs", "apiKey"), "ELEVENLABS_API_KEY"),
    (("twilio", "accountSid"), "TWILIO_ACCOUNT_SID"),
    (("twilio", "authToken"), "TWILIO_AUTH_TOKEN"),
    (("telnyx", "apiKey"), "TELNYX_API_KEY"),
    (("telnyx", "connectionId"), "TELNYX_CONNECTION_ID"),
    (("telnyx", "publicKey"), "TELNYX_PUBLIC_KEY"),
    (("streaming", "openaiApiKey"), "OPENAI_API_KEY"),
    (("tts", "elevenlabs", "apiKey"), "ELEVENLABS_API_KEY"),
    (("tunnel", "ngrokAuthToken"), "NGROK_AUTHTOKEN"),
    (("tunnel", "ngrokDomain"), "NGROK_DOMAIN"),
)


# top-level keys with an env fallback (the file wins)
_TOP_ENV_FALLBACKS: tuple[tuple[str, str], ...] = (("responseApiKey", "OPENAI_API_KEY"),)


def _apply_env(section: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    out = dict(section)
    for name, var in _TOP_ENV_FALLBACKS:
        value = environ.get(var)
        if value and out.get(name) in (None, ""):
            out[name] = value
    for path, var in _ENV_FALLBACKS:
        value = environ.get(var)
        if value:
            out = _fill(out, path, value)
    return out


def _fill(section: dict[str, Any], path: tuple[str, ...], value: str) -> dict[str, Any]:
    """``section`` with ``value`` at ``path`` unless the file set it (copies, never mutates)."""
    head, *rest = path
    if not rest:
        return section if section.get(head) not in (None, "") else {**section, head: value}
    sub = section.get(head, {})
    if not isinstance(sub, dict):
        return section  # leave the type error to validation
    return {**section, head: _fill(sub, tuple(rest), value)}


def _path_of(message: str, prefix: str) -> str:
    """Turn msgspec's ``... - at `$.twilio.accountSid``` into ``twilio.accountSid: ...``."""
    match = re.search(r"(?: - at `\$(?P<path>[^`]*)`)$", message)
    path = ""
    if match:
        message = message[: match.start()]
        path = match.group("path").lstrip(".")
        path = re.sub(r"\[(\d+)\]", r".\1", path)
    unknown = re.match(r"Object contains unknown field `(?P<key>[^`]+)`", message)
    if unknown:
        path = f"{path}.{unknown.group('key')}" if path else unknown.group("key")
        message = "unknown key"
    full = ".".join(p for p in (prefix, path) if p) or "(top level)"
    return f"{full}: {message}"


def validate(config: VoiceCallConfig, prefix: str = "") -> None:
    """Checks msgspec cannot express: E.164 numbers and per-provider credentials."""

    def key(name: str) -> str:
        return f"{prefix}.{name}" if prefix else name

    def e164(name: str, value: str | None) -> None:
        if value is not None and not E164.match(value):
            raise ConfigError(
                f"{key(name)}: {value!r} is not an E.164 phone number (like +15550001234)"
            )

    e164("fromNumber", config.from_number)
    e164("toNumber", config.to_number)
    for i, number in enumerate(config.allow_from):
        e164(f"allowFrom.{i}", number)
    if config.provider == "twilio":
        for name, value in (
            ("twilio.accountSid", config.twilio.account_sid),
            ("twilio.authToken", config.twilio.auth_token),
            ("fromNumber", config.from_number),
        ):
            if not value:
                raise ConfigError(f"{key(name)}: required for provider twilio")
    elif config.provider == "telnyx":
        for name, value in (
            ("telnyx.apiKey", config.telnyx.api_key),
            ("telnyx.connectionId", config.telnyx.connection_id),
            ("fromNumber", config.from_number),
        ):
            if not value:
                raise ConfigError(f"{key(name)}: required for provider telnyx")
        if not config.telnyx.public_key and not config.skip_signature_verification:
            raise ConfigError(
                f"{key('telnyx.publicKey')}: required to verify Telnyx webhooks "
                "(or set skipSignatureVerification for local testing only)"
            )
        if config.telnyx.public_key:
            from .providers.telnyx.signature import load_public_key

            try:
                load_public_key(config.telnyx.public_key)
            except ValueError as exc:
                raise ConfigError(f"{prefix + '.' if prefix else ''}{exc}") from None
    if config.max_concurrent_calls < 1:
        raise ConfigError(f"{key('maxConcurrentCalls')}: must be at least 1")
    if not config.response_model.strip():
        raise ConfigError(f"{key('responseModel')}: must name a model (like openai/gpt-4o-mini)")
    if config.response_timeout_ms < 1:
        raise ConfigError(f"{key('responseTimeoutMs')}: must be at least 1")
    if not _http_url(config.response_base_url):
        raise ConfigError(f"{key('responseBaseUrl')}: must be an http:// or https:// URL "
                          "with a host (and a valid port, if any)")
    if config.max_duration_seconds < 1:
        raise ConfigError(f"{key('maxDurationSeconds')}: must be at least 1")
    for name, path in (("serve.path", config.serve.path), ("streaming.streamPath",
                       config.streaming.stream_path)):
        if not path.startswith("/"):
            raise ConfigError(f"{key(name)}: must start with '/'")
    if not 0 <= config.serve.port <= 65535:
        raise ConfigError(f"{key('serve.port')}: must be a TCP port (0-65535)")
    if config.serve.max_connections < 1:
        raise ConfigError(f"{key('serve.maxConnections')}: must be at least 1")
    _validate_streaming(config, key)


def _http_url(url: str) -> bool:
    """An absolute http(s) URL whose host and port parse (``urlsplit`` raises on a bad
    IPv6 literal or port: that must be a config error, not a crash of the daemon)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _validate_streaming(config: VoiceCallConfig, key: Any) -> None:
    s = config.streaming
    for name, value, low in (
        ("streaming.preStartTimeoutMs", s.pre_start_timeout_ms, 100),
        ("streaming.maxPendingConnections", s.max_pending_connections, 1),
        ("streaming.maxPendingConnectionsPerIp", s.max_pending_connections_per_ip, 1),
        ("streaming.maxConnections", s.max_connections, 1),
        ("streaming.silenceDurationMs", s.silence_duration_ms, 0),
    ):
        if value < low:
            raise ConfigError(f"{key(name)}: must be at least {low}")
    if not 0.0 <= s.vad_threshold <= 1.0:
        raise ConfigError(f"{key('streaming.vadThreshold')}: must be between 0 and 1")
    for name, url, schemes in (
        ("streaming.realtimeUrl", s.realtime_url, ("ws", "wss")),
        ("tts.baseUrl", config.tts.base_url, ("http", "https")),
        ("tts.elevenlabs.baseUrl", config.tts.elevenlabs.base_url, ("http", "https")),
    ):
        scheme, sep, rest = url.partition("://")
        if not sep or scheme.lower() not in schemes or not rest.strip("/"):
            raise ConfigError(f"{key(name)}: {url!r} is not a {' or '.join(schemes)} URL")


def build_config(
    doc: Any, environ: Mapping[str, str] | None = None
) -> VoiceCallConfig:
    section, prefix = extract_section(doc if doc is not None else {})
    section = _apply_env(section, os.environ if environ is None else environ)
    try:
        config = msgspec.convert(section, VoiceCallConfig)
    except msgspec.ValidationError as exc:
        raise ConfigError(_path_of(str(exc), prefix)) from None
    validate(config, prefix)
    return config


def load_config(
    path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> VoiceCallConfig:
    """Read the config from ``path``, ``VOICECALL_CONFIG`` or the default location.

    No file at all is a valid config: the mock carrier, everything local.
    """
    env = os.environ if environ is None else environ
    file = path if path is not None else default_config_path(env)
    if file is None:
        return build_config({}, env)
    return build_config(read_document(file), env)


__all__ = [
    "E164",
    "ConfigError",
    "VoiceCallConfig",
    "build_config",
    "default_config_path",
    "extract_section",
    "load_config",
    "parse_document",
]
