"""The ngrok agent as a command line, an environment and a reading of its JSON log (pure).

``ngrok http <host>:<port> --log stdout --log-format json [--url <domain>]`` logs one JSON
object a line; the public URL is the ``url`` of the line whose ``msg`` is ``started tunnel``.
The auth token goes through the child's environment (``NGROK_AUTHTOKEN``), never into the
user's ngrok config file and never on the command line, where ``ps`` would show it.

ngrok's error text can quote the auth token back ("Your authtoken: ..."): every message taken
from its output passes ``redact`` before it reaches a log line or an error.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from .tailscale import clip

TOKEN_ENV = "NGROK_AUTHTOKEN"
NOT_INSTALLED = ("the ngrok binary was not found on PATH (https://ngrok.com/download); "
                 "or expose the webhook another way and set publicUrl")
ERROR_LEVELS = frozenset({"eror", "crit"})  # ngrok's own spelling of error and critical
# an ``err`` field on these levels is not a failure: ngrok logs e.g. a missing default config
# file as ``{"lvl": "info", "msg": "ignoring default config path ...", "err": "stat ..."}``
QUIET_LEVELS = frozenset({"info", "dbug", "debug", "trce"})
# a ``warn`` line with an ``err`` is fatal only with ngrok's error code: the agent logs
# ``{"lvl": "warn", "msg": "failed to check for update", "obj": "updater", "err": ...}`` on
# any host that cannot reach its update server, and the tunnel comes up all the same
WARN_LEVELS = frozenset({"warn", "warning"})
_CODE = re.compile(r"ERR_NGROK_\d{1,6}")
_NO_ERROR = frozenset({"", "<nil>", "nil", "null"})
_WILDCARD = frozenset({"", "0.0.0.0", "::", "[::]"})


@dataclass(frozen=True, slots=True)
class Started:
    """The tunnel is up at ``url`` (scheme and host only, as ngrok prints it)."""

    url: str


@dataclass(frozen=True, slots=True)
class LogError:
    """An error line: ngrok's message (redacted, bounded) and its ``ERR_NGROK_xxx`` code;
    ``fatal`` False for a warning that does not stop the tunnel (logged, never a failure)."""

    message: str
    code: str | None
    fatal: bool = True

    def describe(self) -> str:
        if self.code and self.code not in self.message:
            return f"{self.message} ({self.code})"
        return self.message


def forward_address(bind: str, port: int) -> str:
    """``<serve.bind>:<port>``; a wildcard bind is reached on loopback, IPv6 in brackets."""
    host = "127.0.0.1" if bind in _WILDCARD else bind
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


def command(ngrok: str, *, bind: str, port: int, domain: str | None) -> list[str]:
    """The agent's command line (no secret on it)."""
    line = [ngrok, "http", forward_address(bind, port), "--log", "stdout", "--log-format",
            "json"]
    if domain:
        line += ["--url", domain]
    return line


def child_env(environ: Mapping[str, str], token: str | None) -> dict[str, str]:
    """The daemon's environment plus the auth token, when one is configured."""
    env = dict(environ)
    if token:
        env[TOKEN_ENV] = token
    return env


def redact(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "[redacted]")
    return text


def error_code(text: str) -> str | None:
    match = _CODE.search(text)
    return match.group(0) if match else None


def tunnel_url(value: object) -> str | None:
    """``value`` when it is an absolute http(s) URL of a host with no path, else None."""
    if not isinstance(value, str) or len(value) > 2048 or not value.isascii():
        return None
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        return None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return None
    if parts.path not in ("", "/") or parts.query or parts.fragment or "@" in parts.netloc:
        return None
    if any(c in value for c in " \\\r\n\t"):
        return None
    return f"{parts.scheme}://{parts.netloc}"


def parse_line(line: bytes | str, secrets: Iterable[str] = ()) -> Started | LogError | None:
    """What one line of ngrok's JSON log says: the tunnel started, an error, or nothing.

    An error is a line at level ``eror`` or ``crit``, or one with an ``err`` field at any
    level but the quiet ones; at ``warn`` it is fatal only with an ``ERR_NGROK_xxx`` code.
    Lines that are not a JSON object (a banner, a torn line) say nothing.
    """
    try:
        doc = json.loads(line)
    except (ValueError, UnicodeDecodeError, RecursionError):  # a line nested 30k deep too
        return None
    if not isinstance(doc, dict):
        return None
    err = doc.get("err")
    err_text = err if isinstance(err, str) else ("" if err is None else str(err))
    level = doc.get("lvl") if isinstance(doc.get("lvl"), str) else None
    if level in ERROR_LEVELS or (err_text.strip() not in _NO_ERROR
                                 and level not in QUIET_LEVELS):
        msg = doc.get("msg")
        words = " ".join(str(part) for part in (msg, err_text) if part)
        clean = redact(words, secrets)
        code = error_code(clean)
        fatal = level not in WARN_LEVELS or code is not None
        return LogError(clip(clean) or "ngrok reported an error", code, fatal)
    if doc.get("msg") == "started tunnel":
        url = tunnel_url(doc.get("url"))
        return Started(url) if url is not None else None
    return None


def public_url(started: Started, serve_path: str) -> str:
    """The webhook URL carriers call: the tunnel's origin plus ``serve.path``."""
    return started.url.rstrip("/") + serve_path


def exit_cause(returncode: int, last_error: LogError | None, stderr_tail: str,
               secrets: Iterable[str] = ()) -> str:
    """Why the agent is gone, in the words an operator needs (its error code included)."""
    if last_error is not None:
        return f"ngrok exited (status {returncode}): {last_error.describe()}"
    said = clip(redact(stderr_tail, secrets))
    code = error_code(said)
    tail = f": {said}" if said else ""
    if code and code not in said:
        tail += f" ({code})"
    return f"ngrok exited (status {returncode}){tail}"
