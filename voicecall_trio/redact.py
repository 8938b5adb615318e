"""What must never reach a log line, and the pure function that takes it out.

A phone daemon's logs end up in journald, in log shippers and in bug reports; a credential
there is a leaked credential. So redaction does not rely on each call site being careful: the
log handler runs every formatted line (message and traceback) through ``Redactor.redact``.

What is removed, in any format and at any level:

* every secret-looking value of the loaded config (a key whose name ends in ``key``,
  ``token`` or ``secret``, in any section, so keys added later are covered without a list
  here), the ``Basic`` credential Twilio's REST calls carry, and the values of the
  environment variables in ``SECRET_ENV``;
* ``Authorization:`` header values and ``Bearer``/``Basic`` credentials, whoever logs them;
* media-stream tokens (``<call id>.<mac>``, ``providers/twilio/flow.stream_token``): the call
  id stays, the MAC goes.

Phone numbers (E.164) are masked by ``mask_phones`` except their last digits (``policy.mask``);
the log handler does that at INFO and above only, so a DEBUG run can still show them.

Pure: strings in, strings out; no logging, no I/O.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import quote

from .policy import mask

REDACTED = "[redacted]"
# shorter values are not treated as secrets: redacting every "abc" would garble the logs, and
# no carrier or model API issues credentials this short
MIN_SECRET_LEN = 6
SECRET_ENV = ("OPENAI_API_KEY", "ELEVENLABS_API_KEY", "NGROK_AUTHTOKEN", "TWILIO_AUTH_TOKEN",
              "TELNYX_API_KEY")
_SECRET_NAME = re.compile(r"(key|token|secret|password)$", re.IGNORECASE)

# the header's value up to the end of its credential (the scheme, if any, is kept)
_AUTHORIZATION = re.compile(
    r"(?P<head>\b(?:proxy-)?authorization\b['\"]?\s*[:=]\s*['\"]?"
    r"(?:(?:basic|bearer|digest|token)\s+)?)(?P<value>[^\s'\",}]+)",
    re.IGNORECASE)
# 12+ characters: a credential, not the English word after "basic"
_CREDENTIAL = re.compile(r"(?P<head>\b(?:bearer|basic)\s+)(?P<value>[A-Za-z0-9._~+/=-]{12,})",
                         re.IGNORECASE)
# a uuid call id, a dot, 24 URL-safe base64 characters (18 bytes of HMAC)
_STREAM_TOKEN = re.compile(
    r"(?P<head>\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\.)"
    r"(?P<value>[A-Za-z0-9_-]{24})(?![A-Za-z0-9_-])")
# "+" or its form/URL encoding "%2B", then 7 to 15 digits not part of a longer number or word
_PHONE = re.compile(r"(?<![\w+*%])(?P<plus>\+|%2[Bb])(?P<digits>[1-9]\d{6,14})(?!\d)")


def secret_values(section: Any) -> Iterator[str]:
    """Every string under a key named like a credential, at any depth of a config document
    (``msgspec.to_builtins`` of the config, so names are the file's camelCase keys)."""
    if isinstance(section, Mapping):
        for name, value in section.items():
            if isinstance(value, str) and _SECRET_NAME.search(str(name)):
                yield value
            else:
                yield from secret_values(value)
    elif isinstance(section, list | tuple):
        for item in section:
            yield from secret_values(item)


def config_secrets(document: Any, environ: Mapping[str, str]) -> set[str]:
    """The secrets of a loaded config (as builtins) and of the environment."""
    found = set(secret_values(document))
    found.update(environ[name] for name in SECRET_ENV if environ.get(name))
    twilio = document.get("twilio") if isinstance(document, Mapping) else None
    if isinstance(twilio, Mapping) and twilio.get("accountSid") and twilio.get("authToken"):
        pair = f"{twilio['accountSid']}:{twilio['authToken']}".encode()
        found.add(base64.b64encode(pair).decode())  # the REST calls' Basic credential
    return found


class Redactor:
    """Removes known secrets and credential shapes from text. ``add`` only ever grows the
    set: after a reload, the old config's secrets are still secrets."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        for secret in secrets:
            secret = secret.strip()
            if len(secret) < MIN_SECRET_LEN:
                continue
            self._secrets.add(secret)
            encoded = quote(secret, safe="")
            if encoded != secret:
                self._secrets.add(encoded)  # as it would appear in a URL or a form
        if self._secrets:
            ordered = sorted(self._secrets, key=len, reverse=True)  # longest match first
            self._pattern = re.compile("|".join(re.escape(s) for s in ordered))

    def __len__(self) -> int:
        return len(self._secrets)

    def redact(self, text: str) -> str:
        if self._pattern is not None:
            text = self._pattern.sub(REDACTED, text)
        text = _AUTHORIZATION.sub(lambda m: m.group("head") + REDACTED, text)
        text = _CREDENTIAL.sub(lambda m: m.group("head") + REDACTED, text)
        return _STREAM_TOKEN.sub(lambda m: m.group("head") + REDACTED, text)


def mask_phones(text: str) -> str:
    """Every E.164 number in ``text`` as ``policy.mask`` shows it."""
    return _PHONE.sub(lambda m: m.group("plus") + mask("+" + m.group("digits"))[1:], text)


__all__ = ["MIN_SECRET_LEN", "REDACTED", "SECRET_ENV", "Redactor", "config_secrets",
           "mask_phones", "secret_values"]
