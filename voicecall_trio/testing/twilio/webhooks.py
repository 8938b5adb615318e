"""The fake Twilio's signed-webhook sender: builds the request Twilio would send (parameters,
``X-Twilio-Signature`` over the URL form the ``sign_url`` quirk picks, tunnel routing and its
``X-Forwarded-*`` headers), sends it with the ``duplicate`` / ``retry`` quirks, and records every
delivery. It decides nothing about calls.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Literal
from urllib.parse import urlencode, urlsplit

import httpx
import trio

from ...providers.twilio.signature import compute_signature, port_variants
from .base import FakeTwilioBase, _origin
from .values import (
    API_VERSION,
    FakeCall,
    PreparedWebhook,
    SignUrl,
    WebhookDelivery,
)

log = logging.getLogger("voicecall.testing.twilio")


def _with_query(url: str, params: Iterable[tuple[str, str]]) -> str:
    query = urlencode(list(params))
    if not query:
        return url
    return f"{url}{'&' if '?' in url else '?'}{query}"


class WebhookSender(FakeTwilioBase):
    """Signs and sends webhooks, with the quirks in force; records each ``WebhookDelivery``."""

    async def post_webhook(self, url: str, params: Iterable[tuple[str, str]] | dict[str, str],
                           *, kind: str = "custom", call_sid: str = "",
                           method: str = "POST") -> WebhookDelivery:
        """Send one signed webhook (with the current quirks) and record it."""
        pairs = list(params.items()) if isinstance(params, dict) else list(params)
        return await self._deliver(call_sid, kind, url, pairs, method)

    def prepare_webhook(self, url: str, params: Iterable[tuple[str, str]],
                        method: str = "POST", *, sign_url: SignUrl | None = None
                        ) -> PreparedWebhook:
        """Sign a webhook as Twilio would (for benchmarks that send their own)."""
        pairs = tuple(params)
        variant = sign_url or self.quirks.sign_url
        signed_params: tuple[tuple[str, str], ...] = ()
        if method.upper() == "GET":
            url, body, signed_params = _with_query(url, pairs), b"", ()
        else:
            body, signed_params = urlencode(pairs).encode(), pairs
        signed_url = url
        if variant != "exact":
            forms = port_variants(url)
            signed_url = forms[0] if variant == "no-port" else forms[-1]
        signature = compute_signature(self.auth_token, signed_url, signed_params)
        headers = {
            "X-Twilio-Signature": signature,
            "I-Twilio-Idempotency-Token": f"fake-{next(self._idempotency)}",
            "User-Agent": "TwilioProxy/1.1",
        }
        if method.upper() != "GET":
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        if not self.keep_alive:
            headers["Connection"] = "close"
        target = url
        route = self.tunnels.get(_origin(url))
        if route is not None:
            parts = urlsplit(url)
            target = route.local + url[len(f"{parts.scheme}://{parts.netloc}"):]
            headers["Host"] = parts.netloc
            if route.forwarded_headers:
                headers["X-Forwarded-Proto"] = parts.scheme
                headers["X-Forwarded-Host"] = parts.netloc
                headers["X-Forwarded-For"] = "203.0.113.10"
        return PreparedWebhook(method.upper(), url, signed_url, target, headers, body, pairs)


    async def _deliver(self, call_sid: str, kind: str, url: str,
                       params: list[tuple[str, str]], method: str = "POST") -> WebhookDelivery:
        prepared = self.prepare_webhook(url, params, method)
        if kind in self.quirks.retry:
            results: dict[str, WebhookDelivery] = {}

            async def attempt(tag: Literal["original", "retry"]) -> None:
                results[tag] = await self._send(prepared, kind, call_sid, tag)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(attempt, "original")
                nursery.start_soon(attempt, "retry")
            return results["retry"]
        first = await self._send(prepared, kind, call_sid, "original")
        if kind in self.quirks.duplicate:
            await self._send(prepared, kind, call_sid, "duplicate")
        return first

    async def _send(self, prepared: PreparedWebhook, kind: str, call_sid: str,
                    attempt: Literal["original", "duplicate", "retry"]) -> WebhookDelivery:
        assert self._http is not None, "FakeTwilio is not running"
        status: int | None = None
        body = b""
        error = None
        try:
            response = await self._http.request(prepared.method, prepared.target,
                                                content=prepared.body or None,
                                                headers=prepared.headers)
            status, body = response.status_code, response.content
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            error = f"{type(exc).__name__}: {exc}"
            log.info("webhook %s to %s failed: %s", kind, prepared.url, error)
        delivery = WebhookDelivery(kind, call_sid, prepared.url, prepared.signed_url,
                                   prepared.headers["X-Twilio-Signature"], prepared.params,
                                   attempt, status, body, error)
        self.deliveries.append(delivery)
        self._notify()
        return delivery

    def _call_params(self, call: FakeCall) -> list[tuple[str, str]]:
        params = [
            ("AccountSid", self.account_sid),
            ("ApiVersion", API_VERSION),
            ("CallSid", call.sid),
            ("CallStatus", call.status),
            ("Direction", call.direction),
            ("From", call.from_),
            ("To", call.to),
            ("Caller", call.from_),
            ("Called", call.to),
            ("FromCountry", "US"),
            ("ToCountry", "US"),
        ]
        if call.direction == "inbound":
            params += [("CallerCountry", "US"), ("CalledCountry", "US"), ("CalledCity", ""),
                       ("StirVerstat", "TN-Validation-Passed-A")]
        return params

    def _status_params(self, call: FakeCall, *, number_level: bool = False
                       ) -> list[tuple[str, str]]:
        params = self._call_params(call)
        if not number_level:
            params += [("CallbackSource", "call-progress-events"),
                       ("SequenceNumber", str(call._sequence))]
            call._sequence += 1
        stamp = datetime.now(UTC) + timedelta(seconds=self.clock_skew_s)
        params.append(("Timestamp", format_datetime(stamp)))
        if call.terminal:
            answered = call.answered_at
            seconds = int((call.ended_at or time.time()) - answered) if answered else 0
            params.append(("CallDuration", str(seconds)))
            if call.status == "failed":
                params += [("ErrorCode", "32009"), ("ErrorMessage", "Call failed (FakeTwilio)")]
        return params
