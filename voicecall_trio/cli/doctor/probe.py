"""The reachability self-test's request, and what its answer means (pure).

The probe goes to the public URL exactly as a carrier's webhook would, so scheme, host,
port, tunnel or proxy, and the signature rules are proven at once:

- Twilio: a status callback (``CallStatus=completed``) for a call SID nobody has, signed with
  the auth token for the webhook URL carriers are given. The daemon verifies it, finds no
  such call and answers 200 with an empty ``<Response>``: nothing changes. A 401/403 means
  the URL the daemon rebuilds is not the one signed (the URL is printed).
- Telnyx: signatures need Telnyx's private key, so the probe is unsigned and the expected
  answer is this daemon's 401 ("missing signature").
- mock: no signatures; any answer of the webhook route counts.

"This daemon" is proven by the probe token: every probe carries ``X-Voicecall-Probe:
<probeToken>`` (read from ``daemon.health`` on the 0600 socket), and the webhook gate echoes
it only when it matches its own per-run token. An answer without the echo came from
somebody else: another server, a stale tunnel, another daemon.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlencode

from ...health import PROBE_HEADER
from ...providers.twilio.urls import webhook_base

if TYPE_CHECKING:
    from ...config import VoiceCallConfig


@dataclass(frozen=True, slots=True)
class Probe:
    url: str  # where it is sent; for Twilio also exactly the URL that was signed
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    expect: frozenset[int] | None = None  # None: any answer with the echo counts
    signed: bool = False


def webhook_url(config: VoiceCallConfig, public_url: str) -> str:
    """The URL carriers are given: the public URL, plus ``serve.path`` if it has no path."""
    return webhook_base(public_url, config.serve.path)


def twilio_params(config: VoiceCallConfig, call_sid: str) -> list[tuple[str, str]]:
    number = config.from_number or "+15005550006"
    return [("AccountSid", config.twilio.account_sid or ""), ("ApiVersion", "2010-04-01"),
            ("CallSid", call_sid), ("CallStatus", "completed"), ("Direction", "outbound-api"),
            ("From", number), ("To", number), ("CallbackSource", "call-progress-events"),
            ("SequenceNumber", "0")]


def build_probe(config: VoiceCallConfig, public_url: str, token: str,
                call_sid: str | None = None) -> Probe:
    """The probe for this config's carrier, sent through ``public_url``."""
    url = webhook_url(config, public_url)
    headers = {PROBE_HEADER: token, "User-Agent": "voicecall-doctor"}
    if config.provider == "twilio":
        from ...providers.twilio.signature import SIGNATURE_HEADER, compute_signature

        params = twilio_params(config, call_sid or "CA" + secrets.token_hex(16))
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        headers[SIGNATURE_HEADER] = compute_signature(config.twilio.auth_token or "", url,
                                                      params)
        return Probe(url, urlencode(params).encode(), headers, frozenset({200}), signed=True)
    if config.provider == "telnyx":
        headers["Content-Type"] = "application/json"
        return Probe(url, b"{}", headers, frozenset({401}))
    return Probe(url, b"", headers, None)


def judge(probe: Probe, status: int, echoed: bool) -> tuple[bool, str]:
    """(passed, detail) for the answer ``status``; ``echoed``: it carried our token back."""
    what = "a signed test webhook" if probe.signed else "a test webhook"
    if not echoed:
        return False, (f"{probe.url} answered HTTP {status}, but not from this daemon (no "
                       "probe echo): the URL leads somewhere else (another server, a stale "
                       "tunnel, another daemon)")
    if probe.expect is None:  # the mock: any answer of its webhook route
        return True, f"{what} through {probe.url} reached this daemon's webhook route " \
                     f"(HTTP {status})"
    if status in probe.expect:
        return True, f"{what} through {probe.url} reached this daemon (HTTP {status})"
    if probe.signed and status in (401, 403):
        return False, (f"{what} reached this daemon but was refused (HTTP {status}): the URL "
                       f"it rebuilds is not the public URL; signed URL: {probe.url}")
    return False, f"{what} through {probe.url} reached this daemon but got HTTP {status}"
