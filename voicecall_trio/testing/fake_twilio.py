"""``FakeTwilio``: a local Twilio, for tests, demos and ``scripts/bench.py``.

It is two things at once, both on loopback:

* the REST subset the daemon uses, served over real HTTP with Basic auth
  (``AccountSid:AuthToken``) and Twilio-shaped JSON errors ``{code, message, more_info,
  status}``: ``POST .../Calls.json`` (create), ``POST .../Calls/{sid}.json`` (``Status=completed``
  or ``canceled`` hangs up, ``Twiml=`` or ``Url=`` replaces what a live call is doing) and
  ``GET .../Calls/{sid}.json``;
* the carrier side of every call: it sends the status callbacks the create asked for, fetches
  the TwiML from ``Url`` when the callee answers and follows it as Twilio does. Every webhook is
  signed with the auth token exactly as Twilio signs it (``compute_signature`` over the URL it
  posts to and the form parameters).

Following TwiML: ``<Say>`` text is recorded (``FakeCall.said``); a ``<Gather>`` is answered
with the callee's next scripted line as ``SpeechResult`` + ``Confidence`` (or ``Digits``); a
``<Redirect>`` is followed; ``<Pause>`` waits; ``<Hangup/>`` (or the end of a document) ends the
call with a ``completed`` callback; ``<Reject>`` refuses an inbound call (ends ``busy`` or
``no-answer`` by its ``reason``, nothing is answered); ``<Connect><Stream>`` is recorded and the
call then stays connected until it is updated or hung up (no media is streamed). A REST update
interrupts whatever verb is running, as on Twilio.

Time: every simulated duration (ringing, speaking, ``<Pause>``, a ``<Gather>`` timeout) is
multiplied by ``time_scale`` on the trio clock. With the default ``0`` nothing waits, except
that a wait that could only repeat itself (a ``<Pause>`` right before a ``<Redirect>``, the
daemon's hold loop; a ``<Gather>`` when the callee has nothing more to say) lasts until the
daemon updates the call or someone hangs up, so a test never spins.

Quirks (``Quirks``, or the attributes of ``fake.quirks`` at any time):
``duplicate`` sends a webhook kind twice (the identical request, after the first answer);
``retry`` sends a second identical request while the first is in flight and follows the
second answer (Twilio retrying a request it gave up on); ``out_of_order`` delivers the
pre-answer status callbacks after the answer (or after the final status);
``sign_url`` signs the URL exactly as posted, without its port (``"no-port"``) or with the
scheme's default port (``"default-port"``), the forms Twilio is known to sign.
``fail_rest`` makes the next REST request(s) fail with a status (a 5xx, or a 404 that
changes nothing). ``callee_hangup`` hangs up from the callee's side; the ``HANGUP`` script
entry does it when a ``<Gather>`` comes.

Twilio reaches a daemon on its public URL. ``tunnel(public, local)`` plays the tunnel: requests
for the public origin are signed for it, carry its ``Host`` (plus ``X-Forwarded-*``, as ngrok
adds them) and are sent to the local address.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import logging
import secrets
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urlencode, urljoin, urlsplit

import httpx
import msgspec
import trio

from ..providers.twilio_signature import compute_signature, port_variants
from .server import BackgroundService

__all__ = [
    "HANGUP",
    "SILENCE",
    "ApiRequest",
    "Callee",
    "Dtmf",
    "FakeCall",
    "FakeTwilio",
    "PreparedWebhook",
    "Quirks",
    "WebhookDelivery",
]

log = logging.getLogger("voicecall.testing.twilio")

API_VERSION = "2010-04-01"
FINAL_STATUSES = frozenset({"completed", "busy", "no-answer", "failed", "canceled"})
WEBHOOK_KINDS = frozenset({"status", "fetch", "inbound", "gather", "redirect"})
SignUrl = Literal["exact", "no-port", "default-port"]
Outcome = Literal["answered", "busy", "no-answer", "failed"]
SPEAK_S_PER_CHAR = 0.06  # how long the simulated voices take, before time_scale
MORE_INFO = "https://www.twilio.com/docs/errors/{code}"


# -- what a callee says -------------------------------------------------------------------


class _Marker:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


HANGUP = _Marker("HANGUP")  # script entry: the callee hangs up instead of answering
SILENCE = _Marker("SILENCE")  # script entry: the callee says nothing to this <Gather>


@dataclass(frozen=True, slots=True)
class Dtmf:
    """Script entry: the callee presses keys (``Digits``) instead of speaking."""

    digits: str


Line = str | Dtmf | _Marker


@dataclass
class Callee:
    """Who answers a number: whether they pick up, and what they say to each ``<Gather>``."""

    outcome: Outcome = "answered"
    script: Sequence[Line] = ()
    confidence: float = 0.92
    ring_s: float = 2.0  # before answering / busy / failed (no-answer rings for Timeout)


# -- records of what happened ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ApiRequest:
    """One REST request the fake received, and the status it answered."""

    method: str
    path: str
    form: tuple[tuple[str, str], ...]
    status: int
    action: Literal["create", "update", "fetch", "other"]
    call_sid: str | None = None

    def get(self, key: str) -> str | None:
        return next((v for k, v in self.form if k == key), None)

    def getall(self, key: str) -> list[str]:
        return [v for k, v in self.form if k == key]


@dataclass(frozen=True, slots=True)
class PreparedWebhook:
    """A signed request, ready to send: ``url`` is what Twilio posts to, ``target`` where
    the bytes go (the same unless a tunnel maps it)."""

    method: str
    url: str
    signed_url: str
    target: str
    headers: dict[str, str]
    body: bytes
    params: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class WebhookDelivery:
    """One webhook the fake sent, and what came back (``status`` None: no answer at all)."""

    kind: str  # status | fetch | inbound | gather | redirect | custom
    call_sid: str
    url: str
    signed_url: str
    signature: str
    params: tuple[tuple[str, str], ...]
    attempt: Literal["original", "duplicate", "retry"]
    status: int | None
    body: bytes
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    def param(self, key: str) -> str | None:
        return next((v for k, v in self.params if k == key), None)


@dataclass
class Quirks:
    duplicate: frozenset[str] = frozenset()  # webhook kinds sent twice (see WEBHOOK_KINDS)
    retry: frozenset[str] = frozenset()  # kinds re-sent while the first attempt is in flight
    out_of_order: bool = False  # pre-answer status callbacks arrive late
    sign_url: SignUrl = "exact"

    @classmethod
    def kinds(cls, value: bool | Iterable[str]) -> frozenset[str]:
        if value is True:
            return WEBHOOK_KINDS
        if value is False:
            return frozenset()
        return frozenset(value)


@dataclass(slots=True)
class _Doc:
    url: str | None  # where it came from; relative URLs resolve against it
    verbs: list[ET.Element]


_Ending = Literal["hangup", "end", "error", "gone", "reject", "reject-busy"]


@dataclass(eq=False)
class FakeCall:
    """One call as the fake carrier sees it."""

    sid: str
    direction: Literal["outbound-api", "inbound"]
    from_: str
    to: str
    url: str | None
    method: str
    status_callback: str | None
    status_events: frozenset[str]
    callee: Callee
    timeout_s: int = 60
    status: str = "queued"
    created_at: float = field(default_factory=time.time)
    answered_at: float | None = None
    ended_at: float | None = None
    said: list[str] = field(default_factory=list)  # every <Say> text, in order
    replies: list[str] = field(default_factory=list)  # lines the daemon acknowledged
    documents: list[str] = field(default_factory=list)  # every TwiML document received
    updates: list[str] = field(default_factory=list)  # TwiML received by REST update
    played: list[str] = field(default_factory=list)
    streams: list[dict[str, str]] = field(default_factory=list)  # url + <Parameter>s
    unsupported: list[str] = field(default_factory=list)  # verbs the fake skipped
    errors: list[str] = field(default_factory=list)  # "11200: ..." as Twilio's debugger
    rejected: str | None = None  # the <Reject> reason
    ended_by: Literal["twiml", "rest", "callee", "carrier", "error"] | None = None
    done: trio.Event = field(default_factory=trio.Event)  # final callback delivered
    initial_twiml: str | None = None  # create with Twiml= instead of Url=
    _sequence: int = 0
    _script_pos: int = 0
    _scope: trio.CancelScope | None = None
    _pending: _Doc | None = None
    _deferred: list[list[tuple[str, str]]] = field(default_factory=list)
    _owner: FakeTwilio | None = None

    @property
    def terminal(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def answered(self) -> bool:
        return self.answered_at is not None

    def next_line(self) -> Line | None:
        if self._script_pos >= len(self.callee.script):
            return None
        line = self.callee.script[self._script_pos]
        self._script_pos += 1
        return line

    def as_json(self, account_sid: str) -> dict[str, Any]:
        def stamp(at: float | None) -> str | None:
            return None if at is None else format_datetime(datetime.fromtimestamp(at, UTC))

        duration = None
        if self.ended_at is not None:
            duration = str(int(self.ended_at - self.answered_at) if self.answered_at else 0)
        return {
            "sid": self.sid,
            "account_sid": account_sid,
            "to": self.to,
            "from": self.from_,
            "status": self.status,
            "direction": self.direction,
            "api_version": API_VERSION,
            "date_created": stamp(self.created_at),
            "start_time": stamp(self.answered_at),
            "end_time": stamp(self.ended_at),
            "duration": duration,
            "uri": f"/{API_VERSION}/Accounts/{account_sid}/Calls/{self.sid}.json",
        }

    async def wait_for(self, predicate: Callable[[FakeCall], bool]) -> None:
        """Wait (on the fake's change notifications) until ``predicate(self)`` holds."""
        assert self._owner is not None
        await self._owner.wait_for(lambda: predicate(self))


# -- the fake -------------------------------------------------------------------------------


def _new_sid(prefix: str = "CA") -> str:
    return prefix + secrets.token_hex(16)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def _with_query(url: str, params: Iterable[tuple[str, str]]) -> str:
    query = urlencode(list(params))
    if not query:
        return url
    return f"{url}{'&' if '?' in url else '?'}{query}"


def _error(status: int, code: int, message: str) -> tuple[int, dict[str, Any]]:
    return status, {"code": code, "message": message, "more_info": MORE_INFO.format(code=code),
                    "status": status}


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


class FakeTwilio(BackgroundService):
    """A local Twilio. Start it with ``async with FakeTwilio(...) as fake`` (or
    ``fake = await nursery.start(FakeTwilio(...).run)``), point ``twilio.apiBaseUrl`` at
    ``fake.url``."""

    HANGUP = HANGUP
    SILENCE = SILENCE

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

    # -- running ----------------------------------------------------------------------------

    def _new_http_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(timeout=self.webhook_timeout_s)

    def _listening(self, base_url: str) -> None:
        self.url = base_url

    @asynccontextmanager
    async def running(self) -> AsyncIterator[FakeTwilio]:
        """``async with fake.running():`` (the same as ``async with fake:``)."""
        async with self:
            yield self


    # -- configuration ----------------------------------------------------------------------

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

    # -- observing --------------------------------------------------------------------------

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

    # -- the carrier side: callee actions, inbound calls --------------------------------------

    async def callee_hangup(self, sid: str) -> FakeCall:
        """The callee hangs up now; returns once the final status callback was delivered."""
        call = self.calls[sid]
        if call.answered:
            status = "completed"
        else:  # a callee who declines is busy; a caller who gives up has canceled
            status = "busy" if call.direction == "outbound-api" else "canceled"
        self._end(call, status, by="callee")
        await call.done.wait()
        return call

    def start_inbound(
        self,
        from_: str,
        to: str | None = None,
        *,
        url: str | None = None,
        status_callback: str | None = None,
        callee: Callee | None = None,
        sid: str | None = None,
    ) -> FakeCall:
        """Someone calls the number: POST the offer to its Voice URL, then follow the TwiML.

        ``status_callback`` is the number's "call status changes" URL (final status only);
        ``sid`` lets a test offer the same CallSid again.
        """
        target = url or self.voice_url
        if not target:
            raise ValueError("no Voice URL: pass url= or set FakeTwilio(voice_url=...)")
        call = FakeCall(
            sid=sid or _new_sid(), direction="inbound", from_=from_,
            to=to or self.phone_number, url=target, method="POST",
            status_callback=status_callback,
            status_events=frozenset({"completed"}) if status_callback else frozenset(),
            callee=callee or self.callee(from_), status="ringing", _owner=self,
        )
        self.calls[call.sid] = call
        self._spawn(self._inbound, call)
        self._notify()
        return call

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

    # -- sending webhooks ---------------------------------------------------------------------

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

    @staticmethod
    def _event_of(status: str) -> str:
        if status == "in-progress":
            return "answered"
        return "completed" if status in FINAL_STATUSES else status

    def _set_status(self, call: FakeCall, status: str) -> list[tuple[str, str]] | None:
        """Move the call; the status callback's params when one is due, else None."""
        call.status = status
        if status == "in-progress" and call.answered_at is None:
            call.answered_at = time.time()
        self._notify()
        if not call.status_callback or self._event_of(status) not in call.status_events:
            return None
        return self._status_params(call, number_level=call.direction == "inbound")

    async def _send_status(self, call: FakeCall, params: list[tuple[str, str]] | None) -> None:
        if params is not None and call.status_callback:
            await self._deliver(call.sid, "status", call.status_callback, params)

    def _end(self, call: FakeCall, status: str,
             by: Literal["twiml", "rest", "callee", "carrier", "error"]) -> None:
        """End a call (once): stop its TwiML and send the final callback in the background."""
        if call.terminal:
            return
        call.ended_at = time.time()
        call.ended_by = by
        params = self._set_status(call, status)
        if call._scope is not None:
            call._scope.cancel()
        if self._nursery is None or self._stop.is_set():
            call.done.set()  # shutting down: no more callbacks
            return
        self._nursery.start_soon(self._finish, call, params)

    async def _finish(self, call: FakeCall, params: list[tuple[str, str]] | None) -> None:
        try:
            await self._send_status(call, params)
            for late in call._deferred:  # out-of-order quirk: the early ones arrive last
                await self._send_status(call, late)
            call._deferred.clear()
        finally:
            call.done.set()
            self._notify()

    def _spawn(self, fn: Callable[..., Any], *args: Any) -> None:
        if self._nursery is None:
            raise RuntimeError("FakeTwilio is not running")
        self._nursery.start_soon(fn, *args)

    # -- simulated time -------------------------------------------------------------------------

    async def _wait(self, seconds: float, *, idle: bool = False) -> None:
        if self.time_scale <= 0:
            if idle:
                await trio.sleep_forever()  # only an update or a hangup ends this
            await trio.lowlevel.checkpoint()
            return
        await trio.sleep(max(0.0, seconds) * self.time_scale)

    # -- call lifecycles --------------------------------------------------------------------------

    async def _outbound(self, call: FakeCall) -> None:
        try:
            with trio.CancelScope() as scope:
                call._scope = scope
                await self._ring(call)
            call._scope = None
            if call.terminal or call.status != "in-progress":
                return
            first: _Doc | _Ending = "error"  # unless fetched (a REST update may cut in)
            if call.initial_twiml is not None:
                first = self._parse(call, call.initial_twiml, None)
            else:
                with trio.CancelScope() as scope:
                    call._scope = scope
                    first = await self._request(call, "fetch", call.url or "", call.method)
                call._scope = None
            if call.terminal:
                return
            for late in reversed(call._deferred):
                await self._send_status(call, late)
            call._deferred.clear()
            await self._follow(call, first)
        finally:
            call._scope = None
            if not call.terminal and not self._stop.is_set():
                self._end(call, "completed", by="carrier")

    async def _ring(self, call: FakeCall) -> None:
        for status in ("initiated", "ringing"):
            params = self._set_status(call, status)
            if self.quirks.out_of_order:
                if params is not None:
                    call._deferred.append(params)
            else:
                await self._send_status(call, params)
        outcome = call.callee.outcome
        ring_s = call.timeout_s if outcome == "no-answer" else min(call.callee.ring_s,
                                                                   call.timeout_s)
        await self._wait(ring_s)
        if call.terminal:
            return
        if outcome != "answered":
            self._end(call, outcome, by="callee")
            return
        params = self._set_status(call, "in-progress")
        if self.quirks.out_of_order:
            if params is not None:
                call._deferred.append(params)
        else:
            await self._send_status(call, params)

    async def _inbound(self, call: FakeCall) -> None:
        try:
            first: _Doc | _Ending = "error"
            with trio.CancelScope() as scope:
                call._scope = scope
                first = await self._request(call, "inbound", call.url or "", call.method)
            call._scope = None
            if not call.terminal:
                await self._follow(call, first)
        finally:
            call._scope = None
            if not call.terminal and not self._stop.is_set():
                self._end(call, "completed", by="carrier")

    async def _follow(self, call: FakeCall, step: _Doc | _Ending) -> None:
        """Run documents until the call ends; a REST update replaces the running one."""
        documents = 0
        while not call.terminal:
            if call._pending is not None:
                step, call._pending = call._pending, None
            if not isinstance(step, _Doc):
                self._close(call, step)
                return
            documents += 1
            if documents > self.max_documents_per_call:
                call.errors.append("FakeTwilio: too many documents (a redirect loop?)")
                self._end(call, "completed", by="error")
                return
            with trio.CancelScope() as scope:
                call._scope = scope
                step = await self._execute(call, step)
            call._scope = None
            if scope.cancelled_caught and call._pending is None and not call.terminal:
                step = "error"  # cancelled for no reason we know: end rather than guess

    def _close(self, call: FakeCall, ending: _Ending) -> None:
        if ending == "reject" or ending == "reject-busy":
            if call.answered:
                self._end(call, "completed", by="twiml")
            else:
                call.rejected = "busy" if ending == "reject-busy" else "rejected"
                self._end(call, "busy" if ending == "reject-busy" else "no-answer", by="twiml")
        elif ending == "error":
            self._end(call, "completed" if call.answered else "failed", by="error")
        elif ending != "gone":
            self._end(call, "completed", by="twiml")

    # -- TwiML ----------------------------------------------------------------------------------

    def _parse(self, call: FakeCall, text: str, url: str | None) -> _Doc | _Ending:
        call.documents.append(text)
        self._notify()
        try:
            root = ET.fromstring(text)
        except ET.ParseError as exc:
            call.errors.append(f"12100: Document parse failure ({exc})")
            return "error"
        if root.tag != "Response":
            call.errors.append(f"12100: root element is <{root.tag}>, not <Response>")
            return "error"
        return _Doc(url, list(root))

    async def _request(self, call: FakeCall, kind: str, url: str, method: str,
                       extra: Sequence[tuple[str, str]] = ()) -> _Doc | _Ending:
        """Ask the daemon for TwiML (a fetch, a Gather action, a Redirect)."""
        delivery = await self._deliver(call.sid, kind, url,
                                       [*self._call_params(call), *extra], method)
        if not delivery.ok:
            what = delivery.error or f"HTTP {delivery.status}"
            call.errors.append(f"11200: HTTP retrieval failure ({what}) for {url}")
            return "error"
        return self._parse(call, delivery.body.decode("utf-8", "replace"), url)

    def _answer_inbound(self, call: FakeCall) -> None:
        if call.direction == "inbound" and not call.answered:
            self._set_status(call, "in-progress")  # a number's callback wants only the end

    async def _execute(self, call: FakeCall, doc: _Doc) -> _Doc | _Ending:
        verbs = doc.verbs
        for index, verb in enumerate(verbs):
            following = verbs[index + 1].tag if index + 1 < len(verbs) else None
            if verb.tag != "Reject":
                self._answer_inbound(call)
            if verb.tag == "Say":
                await self._say(call, verb)
            elif verb.tag == "Play":
                call.played.append((verb.text or "").strip())
            elif verb.tag == "Pause":
                await self._wait(_number(verb.get("length"), 1.0), idle=following == "Redirect")
            elif verb.tag == "Gather":
                result = await self._gather(call, verb, doc)
                if result is not None:
                    return result
            elif verb.tag == "Redirect":
                target = urljoin(doc.url or "", (verb.text or "").strip())
                return await self._request(call, "redirect", target, verb.get("method", "POST"))
            elif verb.tag == "Hangup":
                return "hangup"
            elif verb.tag == "Reject":
                return "reject-busy" if verb.get("reason") == "busy" else "reject"
            elif verb.tag == "Connect":
                for stream in verb.iter("Stream"):
                    info = {"url": stream.get("url", "")}
                    info.update({p.get("name", ""): p.get("value", "")
                                 for p in stream.iter("Parameter")})
                    call.streams.append(info)
                self._notify()
                await trio.sleep_forever()  # no media here: connected until updated or ended
            else:
                call.unsupported.append(verb.tag)
        return "end"

    async def _say(self, call: FakeCall, verb: ET.Element) -> None:
        text = verb.text or ""
        call.said.append(text)
        self._notify()
        await self._wait(len(text) * SPEAK_S_PER_CHAR)

    async def _gather(self, call: FakeCall, verb: ET.Element, doc: _Doc) -> _Doc | _Ending | None:
        for child in verb:
            if child.tag == "Say":
                await self._say(call, child)
            elif child.tag == "Play":
                call.played.append((child.text or "").strip())
            elif child.tag == "Pause":
                await self._wait(_number(child.get("length"), 1.0))
        action = urljoin(doc.url or "", verb.get("action") or doc.url or "")
        method = verb.get("method", "POST")
        line = call.next_line()
        if line is HANGUP:
            self._end(call, "completed", by="callee")
            return "gone"
        extra: list[tuple[str, str]] = []
        if isinstance(line, str):
            await self._wait(len(line) * SPEAK_S_PER_CHAR)
            extra = [("SpeechResult", line), ("Confidence", f"{call.callee.confidence:.7f}")]
        elif isinstance(line, Dtmf):
            extra = [("Digits", line.digits), ("FinishedOnKey", "")]
        else:  # silence, or nothing left to say
            await self._wait(_number(verb.get("timeout"), 5.0), idle=line is None)
            if verb.get("actionOnEmptyResult") != "true":
                return None  # Twilio goes on with the next verb
        result = await self._request(call, "gather", action, method, extra)
        if isinstance(line, str | Dtmf) and result != "error":
            call.replies.append(line if isinstance(line, str) else line.digits)
            self._notify()
        return result

    # -- the REST API ---------------------------------------------------------------------------

    async def _asgi(self, scope: dict[str, Any], receive: Callable[[], Any],
                    send: Callable[[dict[str, Any]], Any]) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}
        status, doc, extra = self._handle_rest(scope["method"], scope["path"], headers,
                                               b"".join(chunks))
        payload = msgspec.json.encode(doc)
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", b"application/json; charset=utf-8"),
            (b"content-length", str(len(payload)).encode()), *extra]})
        await send({"type": "http.response.body", "body": payload})

    def _authorized(self, headers: dict[str, str]) -> bool:
        scheme, _, encoded = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return secrets.compare_digest(f"{user}:{password}".encode(),
                                      f"{self.account_sid}:{self.auth_token}".encode())

    def _handle_rest(self, method: str, path: str, headers: dict[str, str], body: bytes
                     ) -> tuple[int, dict[str, Any], list[tuple[bytes, bytes]]]:
        form = tuple(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        prefix = f"/{API_VERSION}/Accounts/"
        rest = path[len(prefix):] if path.startswith(prefix) else ""
        account, _, resource = rest.partition("/")
        sid: str | None = None
        action: Literal["create", "update", "fetch", "other"] = "other"
        if resource == "Calls.json" and method == "POST":
            action = "create"
        elif resource.startswith("Calls/") and resource.endswith(".json"):
            sid = unquote(resource[len("Calls/"):-len(".json")])
            if method == "POST":
                action = "update"
            elif method == "GET":
                action = "fetch"
        status, doc, extra = self._route(method, path, headers, form, unquote(account), action,
                                         sid)
        self.api_requests.append(ApiRequest(method, path, form, status, action, sid))
        self._notify()
        return status, doc, extra

    def _route(self, method: str, path: str, headers: dict[str, str],
               form: tuple[tuple[str, str], ...], account: str,
               action: Literal["create", "update", "fetch", "other"], sid: str | None
               ) -> tuple[int, dict[str, Any], list[tuple[bytes, bytes]]]:
        if not self._authorized(headers):
            status, doc = _error(401, 20003, "Authenticate")
            return status, doc, [(b"www-authenticate", b'Basic realm="Twilio API"')]
        not_found = _error(404, 20404, f"The requested resource {path} was not found")
        if account != self.account_sid or action == "other":
            return (*not_found, [])
        for failure in self._failures:
            if (failure.remaining > 0 and failure.action in (None, action)
                    and failure.call_sid in (None, sid)):
                failure.remaining -= 1
                if failure.remaining == 0:
                    self._failures.remove(failure)
                return (*_error(failure.status, failure.code, failure.message), [])
        if action == "create":
            return (*self._create(dict(form), [v for k, v in form if k == "StatusCallbackEvent"]),
                    [])
        call = self.calls.get(sid or "")
        if call is None:
            return (*not_found, [])
        if action == "fetch":
            return 200, call.as_json(self.account_sid), []
        return (*self._update(call, dict(form)), [])

    def _create(self, form: dict[str, str], events: list[str]) -> tuple[int, dict[str, Any]]:
        to, from_ = form.get("To", ""), form.get("From", "")
        if not to:
            return _error(400, 21201, "No 'To' number is specified")
        if not from_:
            return _error(400, 21213, "No 'From' number is specified")
        if not to.startswith("+") or not to[1:].isdigit():
            return _error(400, 21211, f"Invalid 'To' Phone Number: {to}")
        url, twiml = form.get("Url"), form.get("Twiml")
        if not url and not twiml:
            return _error(400, 21205, "Url parameter is required")
        subscribed = {e for value in events for e in value.split()}
        if form.get("StatusCallback") and not subscribed:
            subscribed = {"completed"}
        try:
            timeout = int(form.get("Timeout", "60"))
        except ValueError:
            return _error(400, 21216, "Timeout must be an integer")
        call = FakeCall(
            sid=_new_sid(), direction="outbound-api", from_=from_, to=to, url=url,
            method=form.get("Method", "POST").upper(),
            status_callback=form.get("StatusCallback") or None,
            status_events=frozenset(subscribed), callee=self.callee(to),
            timeout_s=max(1, min(timeout, 600)), initial_twiml=twiml, _owner=self,
        )
        self.calls[call.sid] = call
        self._spawn(self._outbound, call)
        return 201, call.as_json(self.account_sid)

    def _update(self, call: FakeCall, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        wanted = form.get("Status")
        if wanted is not None:
            if wanted not in ("completed", "canceled"):
                return _error(400, 21218, f"Invalid Status: {wanted}")
            if call.status in ("queued", "initiated", "ringing"):
                self._end(call, "canceled", by="rest")
            elif call.status == "in-progress" and wanted == "completed":
                self._end(call, "completed", by="rest")
            return 200, call.as_json(self.account_sid)  # an ended call stays as it was
        twiml, url = form.get("Twiml"), form.get("Url")
        if twiml is None and url is None:
            return 200, call.as_json(self.account_sid)
        if call.status != "in-progress":
            return _error(400, 21220, "Call is not in-progress. Cannot redirect.")
        if twiml is not None:
            call.updates.append(twiml)
            parsed = self._parse(call, twiml, None)
            if not isinstance(parsed, _Doc):
                return _error(400, 12100, "Document parse failure")
        else:
            method = form.get("Method", "POST")
            redirect = ET.Element("Redirect", {"method": method})
            redirect.text = url
            parsed = _Doc(None, [redirect])
        call._pending = parsed
        if call._scope is not None:
            call._scope.cancel()
        self._notify()
        return 200, call.as_json(self.account_sid)


def _number(value: str | None, default: float) -> float:
    try:
        return float(value) if value is not None else default
    except ValueError:
        return default
