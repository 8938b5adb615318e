"""The fake Telnyx's state and what every layer above uses: configuration (the key pair, callees,
the quirk rules a test arms), addresses, change notifications and the ``wait_*`` helpers built on
them. It sends nothing and answers nothing itself.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable

import httpx
import nacl.signing
import trio

from ..server import BackgroundService
from .values import _ED25519_SPKI_PREFIX, Callee, Delivery, FakeCall, RecordedRequest, _Rule


class FakeTelnyxBase(BackgroundService):
    """The fake's state and primitives (see the module docstring); ``FakeTelnyx`` adds the rest."""

    def __init__(
        self,
        *,
        api_key: str = "KEY",
        connection_id: str = "conn",
        signing_key: nacl.signing.SigningKey | None = None,
        webhook_url: str | None = None,
        callee: Callee | None = None,
        speak_duration: float = 0.0,
        clock: Callable[[], float] = time.time,
        host: str = "127.0.0.1",
        port: int = 0,
        http: httpx.AsyncClient | None = None,
        clock_skew_s: float = 0.0,
    ) -> None:
        self.api_key = api_key
        self.connection_id = connection_id
        self.signing_key = signing_key or nacl.signing.SigningKey.generate()
        #: Where webhooks go when a call carries no ``webhook_url`` of its own (as the
        #: Call Control App's webhook URL in the portal); inbound calls always use it.
        self.webhook_url = webhook_url
        #: The default remote party; ``callees[number]`` overrides it per number.
        self.callee = callee or Callee()
        self.callees: dict[str, Callee] = {}
        self.speak_duration = speak_duration
        #: Added to each event's ``occurred_at`` (not to ``telnyx-timestamp``, which must stay
        #: in the window): a delayed retry (negative) or a carrier clock that is off.
        self.clock_skew_s = clock_skew_s
        self.calls: dict[str, FakeCall] = {}
        self.requests: list[RecordedRequest] = []
        self.deliveries: list[Delivery] = []
        self._clock = clock
        self._host = host
        self._port = port
        self._http = http
        self._base_url: str | None = None
        self._nursery: trio.Nursery | None = None
        self._stop = trio.Event()
        self._changed = trio.Event()
        self._fail: list[_Rule] = []
        self._duplicate: list[_Rule] = []
        self._retry: list[_Rule] = []
        self._hold: list[_Rule] = []

    @property
    def public_key(self) -> str:
        """The raw 32-byte Ed25519 public key, base64: what the Telnyx portal shows."""
        return base64.b64encode(bytes(self.signing_key.verify_key)).decode("ascii")

    @property
    def public_key_der(self) -> str:
        """The same key as base64 DER SubjectPublicKeyInfo."""
        der = _ED25519_SPKI_PREFIX + bytes(self.signing_key.verify_key)
        return base64.b64encode(der).decode("ascii")

    @property
    def public_key_pem(self) -> str:
        """The same key as PEM text."""
        return f"-----BEGIN PUBLIC KEY-----\n{self.public_key_der}\n-----END PUBLIC KEY-----\n"

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` (only once running)."""
        if self._base_url is None:
            raise RuntimeError("FakeTelnyx is not running")
        return self._base_url

    @property
    def url(self) -> str:
        """The REST base URL to put in ``telnyx.apiBaseUrl`` (``.../v2``)."""
        return self.base_url + "/v2"

    def _new_http_client(self) -> httpx.AsyncClient:
        # No keep-alive by default: an idle connection held open to the daemon would make
        # its HTTP server wait out its graceful timeout at shutdown. Pass ``http=`` to reuse
        # connections (benchmarks).
        return httpx.AsyncClient(timeout=10.0,
                                 limits=httpx.Limits(max_keepalive_connections=0))

    def _listening(self, base_url: str) -> None:
        self._base_url = base_url


    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Return once ``predicate()`` holds (checked after every request and delivery)."""
        while not predicate():
            await self._changed.wait()

    def requests_for(
        self, action: str | None = None, call_control_id: str | None = None
    ) -> list[RecordedRequest]:
        """Recorded requests, optionally only one action (``create``, ``get``, ``speak``...)."""
        return [
            r for r in self.requests
            if action in (None, r.action) and call_control_id in (None, r.call_control_id)
        ]

    def deliveries_for(
        self, event_type: str | None = None, call_control_id: str | None = None
    ) -> list[Delivery]:
        return [
            d for d in self.deliveries
            if event_type in (None, d.event_type)
            and call_control_id in (None, d.call_control_id)
        ]

    async def wait_request(
        self, action: str, call_control_id: str | None = None, *, count: int = 1
    ) -> RecordedRequest:
        """Wait for the ``count``-th request of ``action``; return it."""
        await self.wait_for(lambda: len(self.requests_for(action, call_control_id)) >= count)
        return self.requests_for(action, call_control_id)[count - 1]

    async def wait_delivery(
        self, event_type: str, call_control_id: str | None = None, *, count: int = 1
    ) -> Delivery:
        """Wait until the ``count``-th delivery of ``event_type`` was answered; return it."""
        await self.wait_for(
            lambda: len(self.deliveries_for(event_type, call_control_id)) >= count
        )
        return self.deliveries_for(event_type, call_control_id)[count - 1]

    async def wait_call(self, call_id: str) -> FakeCall:
        """The call the daemon placed as ``call_id`` (matched by its ``client_state``)."""
        await self.wait_for(lambda: self.find_call(call_id) is not None)
        found = self.find_call(call_id)
        assert found is not None
        return found

    def find_call(self, call_id: str) -> FakeCall | None:
        for call in self.calls.values():
            if call.call_id == call_id:
                return call
        return None

    def fail_next(
        self,
        n: int = 1,
        *,
        status: int = 503,
        action: str | None = None,
        call_control_id: str | None = None,
    ) -> None:
        """Answer the next ``n`` REST requests (of ``action``, if given) with ``status``."""
        self._fail.append(_Rule(n, action=action, status=status,
                                call_control_id=call_control_id))

    def duplicate_next(
        self, event_type: str | None = None, *, times: int = 1,
        call_control_id: str | None = None,
    ) -> None:
        """Send the next delivery of ``event_type`` twice, byte for byte (same signature)."""
        self._duplicate.append(_Rule(times, event_type=event_type,
                                     call_control_id=call_control_id))

    def retry_next(
        self, event_type: str | None = None, *, times: int = 1,
        call_control_id: str | None = None,
    ) -> None:
        """Re-send the next delivery of ``event_type`` later, as Telnyx retries do: same
        event id, ``meta.attempt`` + 1, a new timestamp and signature; it goes behind
        whatever is queued for the call by then."""
        self._retry.append(_Rule(times, event_type=event_type,
                                 call_control_id=call_control_id))

    def hold_next(
        self, event_type: str, *, times: int = 1, call_control_id: str | None = None
    ) -> None:
        """Deliver the next ``event_type`` out of order: right after the call's next event."""
        self._hold.append(_Rule(times, event_type=event_type,
                                call_control_id=call_control_id))

    def callee_for(self, number: str) -> Callee:
        return self.callees.get(number, self.callee)

    def _call(self, call_control_id: str) -> FakeCall:
        try:
            return self.calls[call_control_id]
        except KeyError:
            raise KeyError(f"FakeTelnyx knows no call {call_control_id!r}") from None

