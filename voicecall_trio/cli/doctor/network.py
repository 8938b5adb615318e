"""The doctor's checks that go over the network: reachability, the stream upgrade, carrier
credentials and clock, model lifecycle. Each is bounded in time and never raises: a failure
is a ``Check`` that says what was tried (the URL, the status), never a secret.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import date
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING

import httpx

from ... import model_lifecycle
from ...health import PROBE_HEADER
from ...providers.twilio.urls import stream_url, webhook_base
from .probe import build_probe, judge
from .report import Check, fail, ok, skip
from .upgrade import upgrade_status

if TYPE_CHECKING:
    from ...config import VoiceCallConfig

TIMEOUT_S = 10.0
# what a request to a URL taken from the config can raise (a malformed URL included)
REQUEST_ERRORS = (httpx.HTTPError, httpx.InvalidURL, ValueError)
TELNYX_WINDOW_S = 300  # Telnyx signatures are refused beyond this skew
CLOCK_WARN_S = 30


async def check_reachability(config: VoiceCallConfig, public_url: str | None,
                             token: str | None, http: httpx.AsyncClient) -> Check:
    if public_url is None:
        return skip("reachability", "no public URL to test")
    if not token:
        return skip("reachability", "the daemon is not running (or too old to answer the "
                                    "probe): nothing to reach")
    try:
        probe = build_probe(config, public_url, token)
    except ValueError as exc:  # urlsplit: a malformed port or IPv6 literal
        return fail("reachability", f"the public URL {public_url} is malformed: {exc}")
    try:  # status and headers only: whatever answers there, its body is not read
        async with http.stream("POST", probe.url, content=probe.body, headers=probe.headers,
                               timeout=TIMEOUT_S, follow_redirects=False) as reply:
            status, echoed = reply.status_code, reply.headers.get(PROBE_HEADER) == token
    except REQUEST_ERRORS as exc:
        where = f"; signed URL: {probe.url}" if probe.signed else ""
        return fail("reachability", f"cannot reach {probe.url}: {type(exc).__name__}"
                                    f"{_reason(exc)}{where}")
    passed, detail = judge(probe, status, echoed)
    return ok("reachability", detail) if passed else fail("reachability", detail)


def _reason(exc: Exception) -> str:
    text = str(exc).strip()
    return f" ({text[:200]})" if text else ""


async def check_stream_upgrade(config: VoiceCallConfig, public_url: str | None) -> Check:
    if not config.streaming.enabled:
        return skip("streamUpgrade", "streaming is off")
    if public_url is None:
        return skip("streamUpgrade", "no public URL to test")
    try:
        url = stream_url(webhook_base(public_url, config.serve.path),
                         config.streaming.stream_path)
        status = await upgrade_status(url)
    except ValueError as exc:
        return fail("streamUpgrade", f"the public URL {public_url} is malformed: {exc}")
    if status in (101, 403):
        what = "signature enforced" if status == 403 else "upgraded"
        return ok("streamUpgrade", f"{url} reaches the stream route (HTTP {status}: {what})")
    if isinstance(status, int):
        return fail("streamUpgrade", f"{url} answered HTTP {status} to a WebSocket upgrade "
                                     "(want 403 for an unsigned one): no stream route there")
    return fail("streamUpgrade", f"{url}: {status}")


async def carrier_read(config: VoiceCallConfig, http: httpx.AsyncClient
                       ) -> httpx.Response | str:
    """A cheap authenticated read at the carrier: the account (Twilio), the balance (Telnyx)."""
    if config.provider == "twilio":
        sid = config.twilio.account_sid or ""
        url = f"{config.twilio.api_base_url.rstrip('/')}/2010-04-01/Accounts/{sid}.json"
        auth: httpx.Auth | None = httpx.BasicAuth(sid, config.twilio.auth_token or "")
        headers: dict[str, str] = {}
    else:
        url = f"{config.telnyx.api_base_url.rstrip('/')}/balance"
        auth, headers = None, {"Authorization": f"Bearer {config.telnyx.api_key or ''}"}
    try:
        return await http.get(url, auth=auth, headers=headers, timeout=TIMEOUT_S)
    except REQUEST_ERRORS as exc:
        return f"cannot reach {url}: {type(exc).__name__}"


def clock_check(carrier: str, date_header: str | None, now: float) -> Check:
    """The host clock against the carrier API's ``Date`` header."""
    if not date_header:
        return skip("clock", f"{carrier} sent no Date header")
    try:
        theirs = parsedate_to_datetime(date_header).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return skip("clock", f"{carrier}'s Date header is unreadable")
    skew = now - theirs
    words = f"{abs(skew):.0f} s {'ahead of' if skew > 0 else 'behind'} {carrier}'s clock"
    if abs(skew) > TELNYX_WINDOW_S:
        return fail("clock", f"the host clock is {words}: signatures with timestamps "
                             f"(Telnyx: ±{TELNYX_WINDOW_S} s) will be refused; fix NTP")
    if abs(skew) > CLOCK_WARN_S:
        return ok("clock", f"{words}; warning: keep it well inside ±{TELNYX_WINDOW_S} s (NTP)")
    return ok("clock", f"within {max(1, round(abs(skew)))} s of {carrier}'s clock")


async def check_credentials_and_clock(config: VoiceCallConfig, http: httpx.AsyncClient,
                                      now: float | None = None) -> tuple[Check, Check]:
    if config.provider == "mock":
        return (skip("credentials", "the mock carrier needs none"),
                skip("clock", "the mock carrier has no clock to compare with"))
    carrier = "Twilio" if config.provider == "twilio" else "Telnyx"
    keys = ("twilio.accountSid / twilio.authToken" if config.provider == "twilio"
            else "telnyx.apiKey")
    reply = await carrier_read(config, http)
    if isinstance(reply, str):
        return (fail("credentials", f"present, but {reply}"),
                skip("clock", f"{carrier} could not be reached"))
    clock = clock_check(carrier, reply.headers.get("date"), time.time() if now is None
                        else now)
    status = reply.status_code
    if status in (401, 403):
        return fail("credentials", f"{carrier} refused {keys} (HTTP {status})"), clock
    if 200 <= status < 300:
        return ok("credentials", f"{carrier} accepted {keys}"), clock
    return fail("credentials", f"present, but {carrier} answered HTTP {status} to an "
                               "authenticated read"), clock


async def check_models(config: VoiceCallConfig, environ: Mapping[str, str],
                       http: httpx.AsyncClient, today: date | None = None) -> Check:
    refs = model_lifecycle.configured_models(config, environ)
    keyed = [ref for ref in refs if ref.api_key]
    if not keyed:
        return skip("models", "no API key set: models not looked up ("
                              + ", ".join(f"{r.key} {r.model}" for r in refs) + ")")
    findings = await model_lifecycle.check_models(
        http, keyed, today or model_lifecycle.today_utc())
    detail = "; ".join(f.detail for f in findings)
    unkeyed = [ref for ref in refs if not ref.api_key]
    if unkeyed:
        detail += "; not looked up (no key): " + ", ".join(r.key for r in unkeyed)
    return ok("models", detail) if all(f.ok for f in findings) else fail("models", detail)
