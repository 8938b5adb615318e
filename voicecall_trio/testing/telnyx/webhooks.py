"""The fake Telnyx's signed-webhook sender: builds an event's envelope, signs it with Ed25519 over
``timestamp|body`` as Telnyx does, and delivers a call's events one at a time, in order, through
its queue, applying the armed quirks (held back, sent twice byte for byte, retried later with a
new signature); records every delivery. It decides nothing about calls.
"""

from __future__ import annotations

import base64
import json
import logging
import uuid
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import httpx
import nacl.signing
import trio

from .base import FakeTelnyxBase
from .values import Delivery, FakeCall, _iso, _Outgoing, _take_event

log = logging.getLogger("voicecall.testing.telnyx")


class WebhookSender(FakeTelnyxBase):
    """Signs, queues and delivers webhooks; records each ``Delivery``."""

    def sign(
        self,
        body: bytes,
        timestamp: int | str | None = None,
        *,
        key: nacl.signing.SigningKey | None = None,
    ) -> dict[str, str]:
        """The headers Telnyx sends: Ed25519 over ``"<timestamp>|" + body``."""
        ts = str(int(self._clock()) if timestamp is None else timestamp)
        signer = key or self.signing_key
        signature = signer.sign(ts.encode("ascii") + b"|" + body).signature
        return {
            "content-type": "application/json",
            "telnyx-signature-ed25519": base64.b64encode(signature).decode("ascii"),
            "telnyx-timestamp": ts,
        }

    def event_body(
        self,
        call_control_id: str,
        event_type: str,
        payload: Mapping[str, Any] | None = None,
        *,
        attempt: int = 1,
    ) -> bytes:
        """A webhook body for a call, as the fake would send it (nothing is sent)."""
        call = self.calls.get(call_control_id)
        item = self._outgoing(call, event_type, payload or {},
                              call_control_id=call_control_id)
        item.attempt = attempt
        url = call.webhook_url if call is not None else None
        return self._encode(item, url or self.webhook_url)

    async def post_webhook(
        self,
        body: bytes,
        headers: Mapping[str, str] | None = None,
        *,
        url: str | None = None,
    ) -> httpx.Response:
        """POST raw bytes to the daemon (``headers`` default to a valid signature)."""
        target = url or self.webhook_url
        if target is None:
            raise RuntimeError("FakeTelnyx.webhook_url is not set")
        if self._http is None:
            raise RuntimeError("FakeTelnyx is not running")
        return await self._http.post(target, content=body,
                                     headers=dict(self.sign(body) if headers is None
                                                  else headers))

    def _outgoing(
        self, call: FakeCall | None, event_type: str, payload: Mapping[str, Any],
        *, call_control_id: str | None = None,
    ) -> _Outgoing:
        body: dict[str, Any] = {
            "call_control_id": call.call_control_id if call else call_control_id,
            "call_leg_id": call.call_leg_id if call else str(uuid.uuid4()),
            "call_session_id": call.call_session_id if call else str(uuid.uuid4()),
            "connection_id": self.connection_id,
            "client_state": call.client_state if call else None,
        }
        body.update(payload)
        occurred = _iso(self._clock() + self.clock_skew_s)
        return _Outgoing(event_type, str(uuid.uuid4()), occurred, body)

    def _enqueue(self, call: FakeCall, item: _Outgoing) -> None:
        if call._queue is None:
            raise RuntimeError("FakeTelnyx is not running")
        call._queue.send_nowait(item)

    def _encode(self, item: _Outgoing, url: str | None) -> bytes:
        envelope = {
            "data": {
                "record_type": "event",
                "event_type": item.event_type,
                "id": item.event_id,
                "occurred_at": item.occurred_at,
                "payload": item.payload,
            },
            "meta": {"attempt": item.attempt, "delivered_to": url},
        }
        return json.dumps(envelope, separators=(",", ":")).encode("utf-8")

    async def _worker(self, call: FakeCall, receive: trio.MemoryReceiveChannel[_Outgoing]
                      ) -> None:
        async with receive:
            async for item in receive:
                if _take_event(self._hold, item, call):
                    call._held.append(item)
                    continue
                await self._deliver(call, item)
                while call._held:
                    await self._deliver(call, call._held.pop(0))

    async def _deliver(self, call: FakeCall, item: _Outgoing) -> None:
        url = call.webhook_url or self.webhook_url
        body = self._encode(item, url)
        headers = self.sign(body)
        status = await self._post(url, body, headers)
        self._record(call, item, body, headers, status, copy=False)
        if _take_event(self._duplicate, item, call):
            status = await self._post(url, body, headers)
            self._record(call, item, body, headers, status, copy=True)
        if _take_event(self._retry, item, call):
            self._enqueue(call, replace(item, attempt=item.attempt + 1))

    async def _post(self, url: str | None, body: bytes, headers: Mapping[str, str]) -> int:
        if url is None:
            log.warning("fake telnyx: no webhook URL; event not delivered")
            return 0
        assert self._http is not None
        try:
            response = await self._http.post(url, content=body, headers=dict(headers))
        except httpx.HTTPError as exc:
            log.info("fake telnyx: webhook to %s failed: %s", url, type(exc).__name__)
            return 0
        return response.status_code

    def _record(self, call: FakeCall, item: _Outgoing, body: bytes,
                headers: Mapping[str, str], status: int, *, copy: bool) -> None:
        self.deliveries.append(Delivery(item.event_type, item.event_id, call.call_control_id,
                                        item.attempt, status, body, dict(headers), copy))
        self._notify()

