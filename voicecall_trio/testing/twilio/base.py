"""The fake Twilio's state and the primitives every layer above uses: configuration (callees,
tunnels, injected REST failures), change notifications to wait on, the simulated clock, spawning
into the fake's nursery. It sends nothing and answers nothing itself.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
import trio

from ..server import BackgroundService
from .values import (
    MAX_RECORDED_BYTES,
    ApiRequest,
    Callee,
    FakeCall,
    Quirks,
    WebhookDelivery,
)

#: Opens the byte stream a media WebSocket runs over: (host, port) -> stream. The default is
#: ``trio.open_tcp_stream``; a test may hand back one end of a memory stream pair instead.
StreamConnector = Callable[[str, int], Awaitable[trio.abc.Stream]]


def _new_sid(prefix: str = "CA") -> str:
    return prefix + secrets.token_hex(16)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


@dataclass(frozen=True, slots=True)
class _Route:
    local: str  # origin the tunnel delivers to
    forwarded_headers: bool


@dataclass
class _Failure:
    status: int
    code: int
    message: str
    action: str | None
    call_sid: str | None
    remaining: int


async def _open_tcp(host: str, port: int) -> trio.abc.Stream:
    return await trio.open_tcp_stream(host, port)


class FakeTwilioBase(BackgroundService):
    """The fake's state and primitives (see the module docstring); ``FakeTwilio`` adds the rest."""

    def __init__(
        self,
        *,
        account_sid: str = "AC" + "0" * 32,
        auth_token: str = "fake-twilio-auth-token",
        phone_number: str = "+15005550006",
        voice_url: str | None = None,
        time_scale: float = 0.0,
        quirks: Quirks | None = None,
        default_callee: Callee | None = None,
        webhook_timeout_s: float = 15.0,
        keep_alive: bool = False,
        max_documents_per_call: int = 10_000,
        http: httpx.AsyncClient | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        clock_skew_s: float = 0.0,
        stream_autoconnect: bool = True,
        connect_stream: StreamConnector | None = None,
        stream_handshake_timeout_s: float = 10.0,
        stream_record_bytes: int = MAX_RECORDED_BYTES,
    ) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.phone_number = phone_number  # the number inbound calls are placed to
        self.voice_url = voice_url  # the number's Voice URL (console setting) for inbound
        self.time_scale = time_scale
        self.quirks = quirks or Quirks()
        self.default_callee = default_callee or Callee()
        self.callees: dict[str, Callee] = {}
        self.webhook_timeout_s = webhook_timeout_s
        # Off by default: an idle keep-alive connection holds a Hypercorn server's shutdown
        # for its whole graceful timeout, which would slow every test that stops a daemon.
        self.keep_alive = keep_alive
        self.max_documents_per_call = max_documents_per_call
        #: Added to the ``Timestamp`` of status callbacks: a carrier clock that is off, or a
        #: callback delivered late (negative: in the past). Signatures are not affected.
        self.clock_skew_s = clock_skew_s
        #: Off: ``<Connect><Stream>`` is only recorded and holds the call; a test opens the
        #: stream itself (``open_stream``), e.g. unsigned or with a wrong token.
        self.stream_autoconnect = stream_autoconnect
        self.connect_stream: StreamConnector = connect_stream or _open_tcp
        self.stream_handshake_timeout_s = stream_handshake_timeout_s
        #: audio each stream record keeps each way (``sent``, ``received`` + ``arrivals``)
        self.stream_record_bytes = stream_record_bytes
        self.url = ""  # http://127.0.0.1:PORT once running: twilio.apiBaseUrl
        self.calls: dict[str, FakeCall] = {}
        self.api_requests: list[ApiRequest] = []
        self.deliveries: list[WebhookDelivery] = []
        self.tunnels: dict[str, _Route] = {}
        self._failures: list[_Failure] = []
        self._changed = trio.Event()
        self._stop = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._http: httpx.AsyncClient | None = http  # webhooks go out through this client
        self._host, self._port = host, port
        self._idempotency = itertools.count(1)


    def _new_http_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(timeout=self.webhook_timeout_s)

    def _listening(self, base_url: str) -> None:
        self.url = base_url


    def tunnel(self, public: str, local: str, *, forwarded_headers: bool = True) -> None:
        """Deliver requests for ``public``'s origin to ``local``'s origin (like ngrok)."""
        self.tunnels[_origin(public)] = _Route(_origin(local), forwarded_headers)

    def callee(self, number: str) -> Callee:
        return self.callees.get(number, self.default_callee)

    def fail_rest(
        self,
        status: int = 500,
        *,
        times: int = 1,
        action: Literal["create", "update", "fetch"] | None = None,
        call_sid: str | None = None,
        code: int | None = None,
        message: str | None = None,
    ) -> None:
        """The next ``times`` matching REST requests fail with ``status`` and change nothing."""
        default = {404: (20404, "The requested resource was not found"),
                   429: (20429, "Too Many Requests")}.get(
            status, (20500, "An internal server error has occurred"))
        self._failures.append(_Failure(status, code or default[0], message or default[1],
                                       action, call_sid, times))


    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Wait until ``predicate()`` holds; re-checked after every change the fake sees."""
        while not predicate():
            await self._changed.wait()

    async def wait_call(self, predicate: Callable[[FakeCall], bool] = lambda c: True
                        ) -> FakeCall:
        """The first call (in creation order) matching ``predicate``, once there is one."""
        found: list[FakeCall] = []

        def match() -> bool:
            found[:] = [c for c in self.calls.values() if predicate(c)][:1]
            return bool(found)

        await self.wait_for(match)
        return found[0]

    def requests_for(self, action: str | None = None, call_sid: str | None = None
                     ) -> list[ApiRequest]:
        return [r for r in self.api_requests
                if (action is None or r.action == action)
                and (call_sid is None or r.call_sid == call_sid)]

    def deliveries_for(self, call_sid: str | None = None, kind: str | None = None
                       ) -> list[WebhookDelivery]:
        return [d for d in self.deliveries
                if (call_sid is None or d.call_sid == call_sid)
                and (kind is None or d.kind == kind)]

    def _spawn(self, fn: Callable[..., Any], *args: Any) -> None:
        if self._nursery is None:
            raise RuntimeError("FakeTwilio is not running")
        self._nursery.start_soon(fn, *args)


    async def _wait(self, seconds: float, *, idle: bool = False) -> None:
        if self.time_scale <= 0:
            if idle:
                await trio.sleep_forever()  # only an update or a hangup ends this
            await trio.lowlevel.checkpoint()
            return
        await trio.sleep(max(0.0, seconds) * self.time_scale)

