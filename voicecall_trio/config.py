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
    realtime_url: str = "wss://api.openai.com/v1/realtime"  # ours
    pre_start_timeout_ms: int = 5000  # a stream must send a valid `start` within this
    max_pending_connections: int = 32  # streams not yet past a valid `start`, in total
    max_pending_connections_per_ip: int = 4  # ... and from one address
    max_connections: int = 128  # media streams open at once


class SttConfig(_Section):
    provider: Literal["openai"] = "openai"
    model: str = "whisper-1"


class TtsConfig(_Section):
    provider: str = "openai"
    model: str = "gpt-4o-mini-tts"
    voice: str = "coral"
    instructions: str | None = None


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

    def openai_key(self) -> str | None:
        """``streaming.openaiApiKey`` (``OPENAI_API_KEY`` already falls back into it)."""
        return self.streaming.openai_api_key or None

    def streaming_active(self) -> bool:
        """Streaming on and an OpenAI key to transcribe with (else the ``<Gather>`` path)."""
        return self.streaming.enabled and self.openai_key() is not None


# -- loading -----------------------------------------------------------------------------


_ENV_FALLBACKS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("twilio", "accountSid"), "TWILIO_ACCOUNT_SID"),
    (("twilio", "authToken"), "TWILIO_AUTH_TOKEN"),
    (("telnyx", "apiKey"), "TELNYX_API_KEY"),
    (("telnyx", "connectionId"), "TELNYX_CONNECTION_ID"),
    (("telnyx", "publicKey"), "TELNYX_PUBLIC_KEY"),
    (("streaming", "openaiApiKey"), "OPENAI_API_KEY"),
    (("tunnel", "ngrokAuthToken"), "NGROK_AUTHTOKEN"),
    (("tunnel", "ngrokDomain"), "NGROK_DOMAIN"),
)


def _apply_env(section: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    out = dict(section)
    for (group, key), var in _ENV_FALLBACKS:
        value = environ.get(var)
        if not value:
            continue
        sub = out.get(group, {})
        if not isinstance(sub, dict):
            continue  # leave the type error to validation
        if sub.get(key) in (None, ""):
            out[group] = {**sub, key: value}
    return out


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
    for name, limit in (("streaming.preStartTimeoutMs", config.streaming.pre_start_timeout_ms),
                        ("streaming.maxPendingConnections",
                         config.streaming.max_pending_connections),
                        ("streaming.maxPendingConnectionsPerIp",
                         config.streaming.max_pending_connections_per_ip),
                        ("streaming.maxConnections", config.streaming.max_connections)):
        if limit < 1:
            raise ConfigError(f"{key(name)}: must be at least 1")


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
