"""The commented TOML config ``voicecall init`` writes, and the values each carrier needs.

Pure: values in, text out. The keys are exactly those ``config.py`` reads (``init`` loads the
text back before writing it), and every line a reader might change is explained next to it.
Strings are encoded here rather than by a TOML library: the project reads TOML with the
stdlib's ``tomllib`` and needs no writer beyond this.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Field:
    """One value ``init`` needs: its flag, its config key, and how to ask for it."""

    name: str  # the init() parameter
    key: str  # the config key path it fills
    label: str  # what the prompt asks for
    secret: bool = False
    env: str | None = None  # the loader's environment fallback

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


FROM = Field("from_number", "fromNumber", "The number calls come from (E.164, e.g. +15550001234)")
REQUIRED: dict[str, tuple[Field, ...]] = {
    "twilio": (
        Field("account_sid", "twilio.accountSid", "Twilio Account SID (AC...)",
              env="TWILIO_ACCOUNT_SID"),
        Field("auth_token", "twilio.authToken", "Twilio Auth Token", secret=True,
              env="TWILIO_AUTH_TOKEN"),
        FROM,
    ),
    "telnyx": (
        Field("api_key", "telnyx.apiKey", "Telnyx API key (KEY...)", secret=True,
              env="TELNYX_API_KEY"),
        Field("connection_id", "telnyx.connectionId", "Telnyx Call Control connection id",
              env="TELNYX_CONNECTION_ID"),
        Field("public_key", "telnyx.publicKey", "Telnyx public key (for webhook signatures)",
              env="TELNYX_PUBLIC_KEY"),
        FROM,
    ),
    "mock": (),
}
ALL_FIELDS = {f.name: f for fields in REQUIRED.values() for f in fields}


def toml_string(value: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped."""
    out = ['"']
    for ch in value:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append({"\n": "\\n", "\t": "\\t", "\r": "\\r"}.get(ch, f"\\u{ord(ch):04X}"))
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def render_config(provider: str, values: Mapping[str, str], from_env: Mapping[str, str],
                  *, public_url: str | None, tunnel: str | None) -> str:
    """The commented TOML for ``provider``. ``values``: config key path -> value;
    ``from_env``: key path -> the environment variable that supplies it instead."""

    def entry(key: str, comment: str) -> list[str]:
        leaf = key.rsplit(".", 1)[-1]
        if key in values:
            return [f"# {comment}", f"{leaf} = {toml_string(values[key])}"]
        if key in from_env:
            return [f"# {comment}", f'# {leaf} = "..."   # read from ${from_env[key]} '
                    "(set it in the daemon's environment too)"]
        return []

    lines = [
        "# voicecall configuration, written by `voicecall init`. Every key: docs/configuration.md.",
        "# It holds credentials: keep it private (it was written with mode 0600).",
        "",
        "# The carrier: twilio, telnyx, or mock (simulated calls, for trying things out).",
        f"provider = {toml_string(provider)}",
    ]
    if provider != "mock" or FROM.key in values:
        lines += entry(FROM.key, "The caller id of outbound calls: a number of your carrier "
                                 "account, in E.164.")
    lines += [
        "",
        "# Where carriers reach this daemon's webhook (serve.path is appended). Either a URL",
        "# you run yourself, or a tunnel the daemon starts; publicUrl wins over a tunnel.",
    ]
    lines.append(f"publicUrl = {toml_string(public_url)}" if public_url
                 else '# publicUrl = "https://voice.example.com"')
    lines += [
        "",
        "# Who may call in: disabled (default), allowlist (the numbers in allowFrom), open.",
        '# inboundPolicy = "allowlist"',
        '# allowFrom = ["+15555550123"]',
        "# Reload these (and other keys marked live in docs/operations.md) with SIGHUP.",
        "",
        "# The daemon's journal, lock and control socket live in the store.",
        '# store = "~/clawd/voice-calls"',
    ]
    if provider == "twilio":
        lines += ["", "[twilio]"]
        lines += entry("twilio.accountSid", "Account SID, from the Twilio console.")
        lines += entry("twilio.authToken", "Auth Token: signs every webhook; a secret.")
    elif provider == "telnyx":
        lines += ["", "[telnyx]"]
        lines += entry("telnyx.apiKey", "API key (Bearer credential of the REST calls); a "
                                        "secret.")
        lines += entry("telnyx.connectionId", "The Call Control application (connection) id.")
        lines += entry("telnyx.publicKey", "Public key that verifies webhook signatures "
                                           "(base64, DER or PEM).")
    lines += ["", "[serve]", "# The local HTTP server the carrier's webhooks arrive at.",
              "# bind = \"127.0.0.1\"", "# port = 3334", '# path = "/voice/webhook"']
    if tunnel and tunnel != "none":
        lines += ["", "[tunnel]", "# Started and watched by the daemon; its URL is the public "
                  "URL while no publicUrl is set.", f"provider = {toml_string(tunnel)}"]
        if tunnel == "ngrok":
            lines.append("# ngrokAuthToken = \"...\"   # else $NGROK_AUTHTOKEN")
    return "\n".join(lines) + "\n"


__all__ = ["ALL_FIELDS", "FROM", "REQUIRED", "Field", "render_config", "toml_string"]
