"""``FakeTelnyx``: a local Telnyx Call Control v2 carrier, for tests, demos and benchmarks.

It serves the REST subset the daemon uses (on loopback, port 0)::

    POST /v2/calls                                   -> data.call_control_id
    POST /v2/calls/{id}/actions/{answer,reject,speak,transcription_start,
                                 transcription_stop,hangup}
    GET  /v2/calls/{id}                              -> data.is_alive

checks ``Authorization: Bearer <api key>``, records every request, and then behaves like
Telnyx: it sends Ed25519-signed webhooks (``timestamp|raw body``, with a key pair the test
owns) to the daemon: ``call.initiated``, ``call.answered``, ``call.speak.started`` /
``call.speak.ended`` after each speak, ``call.transcription`` with the callee's next
scripted line once transcription is on, and ``call.hangup``.

Webhooks of one call are delivered one at a time, in order, each after the previous one was
answered (so a test sees a deterministic sequence); different calls are independent. The
quirks a real carrier has are injected on demand: a delivery sent twice byte for byte
(``duplicate_next``), a Telnyx retry of the same event later with a new signature
(``retry_next``), an event held back until after the call's next one (``hold_next``), 5xx
answers to the next REST requests (``fail_next``), and a callee who hangs up
(``callee_hangup``).

Use::

    async with FakeTelnyx() as fake:     # or: fake = await nursery.start(FakeTelnyx().run)
        config = {"provider": "telnyx", "telnyx": {"apiKey": fake.api_key,
                  "connectionId": fake.connection_id, "publicKey": fake.public_key,
                  "apiBaseUrl": fake.url}, ...}
        ...
        fake.webhook_url = daemon_webhook_url        # the connection's webhook URL (inbound)
        ccid = fake.start_inbound("+14155551234", "+15550001234")
        await fake.wait_request("answer", ccid)

Nothing here reaches beyond loopback; everything waits on events, never on sleeps (the
only timers are the optional ``answer_delay`` / ``speak_duration`` of the simulated callee).
"""

from __future__ import annotations

import base64
import json
import logging
import math
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import unquote

import httpx
import nacl.signing
import trio

from .server import BackgroundService

__all__ = ["Callee", "Delivery", "FakeCall", "FakeTelnyx", "RecordedRequest"]

log = logging.getLogger("voicecall.testing.telnyx")

Outcome = Literal["answer", "busy", "no-answer", "reject"]
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

ACTIONS = frozenset(
    {"answer", "reject", "speak", "transcription_start", "transcription_stop", "hangup"}
)
CALL_ENDED = ("90018", "Call has already ended")
_ED25519_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")
_DEFAULT_SCRIPT = ("Hello, this is the callee.", "Yes, that works for me.", "Goodbye!")
# hangup_cause -> outcome of an unanswered outbound call
_OUTCOME_CAUSE: dict[str, str] = {
    "busy": "user_busy",
    "no-answer": "timeout",
    "reject": "call_rejected",
}


@dataclass
class Callee:
    """How the remote party of a call behaves.

    ``answer_delay``: seconds until it answers an outbound call (``None``: only when the test
    calls ``FakeTelnyx.answer``); ``outcome`` other than ``answer`` ends the ringing call
    with ``user_busy`` / ``timeout`` / ``call_rejected`` after that delay instead.
    ``script``: what it says, one line after each thing the bot says while transcription is
    on. ``interim``: also send a non-final transcription before each final one.
    """

    answer_delay: float | None = 0.0
    outcome: Outcome = "answer"
    script: Sequence[str] = _DEFAULT_SCRIPT
    interim: bool = False


@dataclass(frozen=True)
class RecordedRequest:
    """One REST request the fake received, and what it answered."""

    method: str
    path: str  # as received, e.g. /v2/calls/v3:abc/actions/speak
    call_control_id: str | None
    action: str | None  # "create", "get", or the action name
    json: Any
    command_id: str | None
    authorized: bool
    status: int


@dataclass(frozen=True)
class Delivery:
    """One webhook POST the fake made, and the daemon's answer (status 0: not delivered)."""

    event_type: str
    event_id: str
    call_control_id: str
    attempt: int
    status: int
    body: bytes
    headers: Mapping[str, str]
    copy: bool = False  # the byte-identical second send of a duplicated delivery


@dataclass
class _Outgoing:
    event_type: str
    event_id: str
    occurred_at: str
    payload: dict[str, Any]
    attempt: int = 1


@dataclass
class FakeCall:
    """A call as the fake carrier sees it."""

    call_control_id: str
    direction: Literal["outbound", "inbound"]
    from_: str
    to: str
    callee: Callee
    client_state: str | None = None
    webhook_url: str | None = None
    state: str = "bridging"  # bridging/parked -> answered -> hangup
    alive: bool = True
    answered: bool = False
    transcribing: bool = False
    speaking: int = 0  # speaks started and not yet ended
    owed_reply: bool = False  # a speak ended before transcription was on
    script: list[str] = field(default_factory=list)
    hangup_cause: str | None = None
    hangup_source: str | None = None
    command_ids: set[str] = field(default_factory=set)
    spoken: list[str] = field(default_factory=list)  # what the bot said, in order
    start_time: str = ""
    call_leg_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    call_session_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    _queue: trio.MemorySendChannel[_Outgoing] | None = field(default=None, repr=False)
    _held: list[_Outgoing] = field(default_factory=list, repr=False)

    @property
    def call_id(self) -> str | None:
        """The daemon's call id, decoded from ``client_state`` (``base64(callId)``)."""
        if not self.client_state:
            return None
        try:
            return base64.b64decode(self.client_state, validate=True).decode("utf-8")
        except ValueError:
            return None


@dataclass
class _Rule:
    remaining: int
    event_type: str | None = None
    action: str | None = None
    status: int = 503
    call_control_id: str | None = None

    def take_event(self, event_type: str, ccid: str) -> bool:
        if self.remaining <= 0 or self.event_type not in (None, event_type):
            return False
        if self.call_control_id not in (None, ccid):
            return False
        self.remaining -= 1
        return True

    def take_request(self, action: str | None, ccid: str | None) -> bool:
        if self.remaining <= 0 or self.action not in (None, action):
            return False
        if self.call_control_id not in (None, ccid):
            return False
        self.remaining -= 1
        return True


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _error(status: int, code: str, title: str, detail: str = "") -> tuple[int, Any]:
    err: dict[str, Any] = {"code": code, "title": title}
    if detail:
        err["detail"] = detail
    return status, {"errors": [err]}


class FakeTelnyx(BackgroundService):
    """A Telnyx Call Control v2 simulator on loopback (see the module docstring)."""

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

    # -- keys and addresses ------------------------------------------------------------------

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

    # -- lifecycle ---------------------------------------------------------------------------

    def _new_http_client(self) -> httpx.AsyncClient:
        # No keep-alive by default: an idle connection held open to the daemon would make
        # its HTTP server wait out its graceful timeout at shutdown. Pass ``http=`` to reuse
        # connections (benchmarks).
        return httpx.AsyncClient(timeout=10.0,
                                 limits=httpx.Limits(max_keepalive_connections=0))

    def _listening(self, base_url: str) -> None:
        self._base_url = base_url


    # -- waiting -----------------------------------------------------------------------------

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

    # -- quirks ------------------------------------------------------------------------------

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

    # -- the simulated world -----------------------------------------------------------------

    def callee_for(self, number: str) -> Callee:
        return self.callees.get(number, self.callee)

    def add_call(
        self,
        call_control_id: str | None = None,
        *,
        direction: Literal["outbound", "inbound"] = "outbound",
        from_: str = "+15550001234",
        to: str = "+14155551234",
        call_id: str | None = None,
        alive: bool = True,
        answered: bool = True,
        callee: Callee | None = None,
        webhook_url: str | None = None,
    ) -> FakeCall:
        """A call the carrier already has (e.g. from before a daemon restart); no webhook."""
        call = self._new_call(
            call_control_id, direction=direction, from_=from_, to=to,
            callee=callee or self.callee_for(to if direction == "outbound" else from_),
            webhook_url=webhook_url,
        )
        if call_id is not None:
            call.client_state = base64.b64encode(call_id.encode()).decode("ascii")
        call.answered = answered
        call.state = "answered" if answered else call.state
        if not alive:
            call.alive, call.state = False, "hangup"
            call.hangup_cause, call.hangup_source = "normal_clearing", "callee"
        self._notify()
        return call

    def start_inbound(
        self,
        from_: str,
        to: str,
        *,
        script: Sequence[str] | None = None,
        webhook_url: str | None = None,
    ) -> str:
        """Someone calls ``to``: send ``call.initiated`` (incoming, parked); returns its id.

        The daemon is then expected to answer (``call.answered`` follows) or reject
        (``call.hangup`` with ``call_rejected`` follows)."""
        caller = replace(self.callee_for(from_), answer_delay=None)
        if script is not None:
            caller = replace(caller, script=tuple(script))
        call = self._new_call(None, direction="inbound", from_=from_, to=to, callee=caller,
                              webhook_url=webhook_url)
        call.state = "parked"
        self._emit(call, "call.initiated", direction="incoming", state="parked",
                   caller_id_name=from_, **self._parties(call))
        return call.call_control_id

    def answer(self, call_control_id: str) -> None:
        """The remote party of an outbound call picks up now."""
        self._answer(self._call(call_control_id))

    def callee_hangup(self, call_control_id: str, *, cause: str = "normal_clearing") -> None:
        """The remote party hangs up (``hangup_source`` is whichever side it is)."""
        call = self._call(call_control_id)
        source = "callee" if call.direction == "outbound" else "caller"
        self._end(call, cause, source)

    def say(self, call_control_id: str, text: str, *, is_final: bool = True) -> bool:
        """The remote party says ``text`` now; sent only while transcription is on."""
        call = self._call(call_control_id)
        if not (call.alive and call.transcribing):
            return False
        self._transcript(call, text, is_final=is_final)
        return True

    def send_event(
        self, call_control_id: str, event_type: str, payload: Mapping[str, Any] | None = None
    ) -> str:
        """Queue any event for a call (e.g. ``call.dtmf.received`` with ``{"digit": "5"}``);
        ``payload`` adds to the call's common fields. Returns the event id."""
        call = self._call(call_control_id)
        return self._emit(call, event_type, **dict(payload or {}))

    def release_held(self) -> None:
        """Queue again every event held back by ``hold_next``, in their original order."""
        for call in self.calls.values():
            held, call._held = call._held, []
            for item in held:
                self._enqueue(call, item)

    # -- signing and raw webhooks ------------------------------------------------------------

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

    # -- internals: calls and events ---------------------------------------------------------

    def _call(self, call_control_id: str) -> FakeCall:
        try:
            return self.calls[call_control_id]
        except KeyError:
            raise KeyError(f"FakeTelnyx knows no call {call_control_id!r}") from None

    def _new_call(
        self,
        call_control_id: str | None,
        *,
        direction: Literal["outbound", "inbound"],
        from_: str,
        to: str,
        callee: Callee,
        webhook_url: str | None,
    ) -> FakeCall:
        ccid = call_control_id or "v3:" + secrets.token_urlsafe(24)
        call = FakeCall(ccid, direction, from_, to, callee, webhook_url=webhook_url,
                        script=list(callee.script), start_time=_iso(self._clock()))
        self.calls[ccid] = call
        if self._nursery is not None:
            send, receive = trio.open_memory_channel[_Outgoing](math.inf)
            call._queue = send
            self._nursery.start_soon(self._worker, call, receive)
        return call

    def _parties(self, call: FakeCall) -> dict[str, Any]:
        return {"from": call.from_, "to": call.to, "start_time": call.start_time}

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

    def _emit(self, call: FakeCall, event_type: str, **payload: Any) -> str:
        item = self._outgoing(call, event_type, payload)
        self._enqueue(call, item)
        return item.event_id

    def _enqueue(self, call: FakeCall, item: _Outgoing) -> None:
        if call._queue is None:
            raise RuntimeError("FakeTelnyx is not running")
        call._queue.send_nowait(item)

    def _answer(self, call: FakeCall) -> None:
        if not call.alive or call.answered:
            return
        call.answered, call.state = True, "answered"
        self._emit(call, "call.answered", state="answered", **self._parties(call))
        self._notify()

    def _end(self, call: FakeCall, cause: str, source: str) -> None:
        if not call.alive:
            return
        call.alive, call.state, call.transcribing = False, "hangup", False
        call.hangup_cause, call.hangup_source = cause, source
        self._emit(call, "call.hangup", state="hangup", hangup_cause=cause,
                   hangup_source=source,
                   sip_hangup_cause="200" if cause == "normal_clearing" else "487",
                   **self._parties(call))
        self._notify()

    def _transcript(self, call: FakeCall, text: str, *, is_final: bool) -> None:
        self._emit(call, "call.transcription", transcription_data={
            "confidence": 0.97 if is_final else 0.71,
            "is_final": is_final,
            "transcript": text,
            "transcription_track": "inbound",
        })

    def _reply(self, call: FakeCall) -> None:
        """The remote party answers what the bot just said (when it has lines left)."""
        call.owed_reply = False
        if not call.script or not call.alive:
            return
        text = call.script.pop(0)
        if call.callee.interim:
            words = text.split()
            self._transcript(call, " ".join(words[: max(1, len(words) // 2)]), is_final=False)
        self._transcript(call, text, is_final=True)

    def _speak_started(self, call: FakeCall, text: str) -> None:
        call.speaking += 1
        call.spoken.append(text)
        self._emit(call, "call.speak.started")
        if self.speak_duration <= 0:
            self._speak_ended(call)
        else:
            assert self._nursery is not None
            self._nursery.start_soon(self._speak_later, call)

    async def _speak_later(self, call: FakeCall) -> None:
        await trio.sleep(self.speak_duration)
        self._speak_ended(call)

    def _speak_ended(self, call: FakeCall) -> None:
        call.speaking = max(0, call.speaking - 1)
        if not call.alive:
            return
        self._emit(call, "call.speak.ended", status="completed")
        if call.transcribing:
            self._reply(call)
        else:
            call.owed_reply = True

    async def _ring(self, call: FakeCall) -> None:
        await trio.sleep(call.callee.answer_delay or 0.0)
        self._pick_up(call)

    def _pick_up(self, call: FakeCall) -> None:
        """The ringing ends as the callee decided: answered, busy, no answer, rejected."""
        if call.callee.outcome == "answer":
            self._answer(call)
        else:
            self._end(call, _OUTCOME_CAUSE[call.callee.outcome], "callee")

    # -- internals: delivery -----------------------------------------------------------------

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

    # -- internals: REST ---------------------------------------------------------------------

    async def _asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
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
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", ())}
        status, payload = self._handle(scope["method"], scope["path"], headers,
                                       b"".join(chunks))
        data = json.dumps(payload).encode("utf-8")
        await send({
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"),
                        (b"content-length", str(len(data)).encode("ascii"))],
        })
        await send({"type": "http.response.body", "body": data})

    def _handle(
        self, method: str, path: str, headers: Mapping[str, str], raw: bytes
    ) -> tuple[int, Any]:
        route = _route(method, path)
        ccid, action = route if route is not None else (None, None)
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
        authorized = headers.get("authorization") == f"Bearer {self.api_key}"
        status, payload = self._respond(route, method, body, authorized, raw)
        command_id = body.get("command_id") if isinstance(body, dict) else None
        self.requests.append(RecordedRequest(method, path, ccid, action, body, command_id,
                                             authorized, status))
        self._notify()
        return status, payload

    def _respond(
        self, route: tuple[str | None, str] | None, method: str, body: Any,
        authorized: bool, raw: bytes,
    ) -> tuple[int, Any]:
        if route is None:
            return _error(404, "10005", "Resource not found")
        if not authorized:
            return _error(401, "10009", "Authentication failed",
                          "The API key is missing or wrong.")
        ccid, action = route
        for rule in self._fail:
            if rule.take_request(action, ccid):
                return _error(rule.status, "10011", "Service unavailable",
                              "injected by FakeTelnyx.fail_next")
        if method == "POST" and (raw and not isinstance(body, dict)):
            return _error(400, "10015", "Bad request", "The body is not a JSON object.")
        params: dict[str, Any] = body if isinstance(body, dict) else {}
        if action == "create":
            return self._create(params)
        assert ccid is not None
        call = self.calls.get(ccid)
        if call is None:
            return _error(404, "10005", "Resource not found", "Unknown call_control_id.")
        if action == "get":
            return 200, {"data": self._call_data(call)}
        return self._action(call, action, params)

    def _call_data(self, call: FakeCall) -> dict[str, Any]:
        return {
            "record_type": "call",
            "call_control_id": call.call_control_id,
            "call_leg_id": call.call_leg_id,
            "call_session_id": call.call_session_id,
            "client_state": call.client_state,
            "is_alive": call.alive,
            "start_time": call.start_time,
        }

    def _create(self, params: Mapping[str, Any]) -> tuple[int, Any]:
        missing = [k for k in ("connection_id", "to", "from") if not params.get(k)]
        if missing:
            return _error(422, "10032", "Missing parameter", f"{missing[0]} is required")
        if params["connection_id"] != self.connection_id:
            return _error(422, "10015", "Invalid connection_id")
        to = str(params["to"])
        call = self._new_call(None, direction="outbound", from_=str(params["from"]), to=to,
                              callee=self.callee_for(to),
                              webhook_url=params.get("webhook_url") or None)
        call.client_state = params.get("client_state") or None
        if params.get("command_id"):
            call.command_ids.add(str(params["command_id"]))
        self._emit(call, "call.initiated", direction="outgoing", state="bridging",
                   **self._parties(call))
        if call.callee.answer_delay == 0:
            self._pick_up(call)
        elif call.callee.answer_delay is not None:
            assert self._nursery is not None
            self._nursery.start_soon(self._ring, call)
        self._notify()
        return 200, {"data": {**self._call_data(call), "call_duration": 0}}

    def _action(self, call: FakeCall, action: str, params: Mapping[str, Any]
                ) -> tuple[int, Any]:
        command_id = params.get("command_id")
        if command_id and command_id in call.command_ids:
            return 200, {"data": {"result": "ok"}}  # Telnyx ignores a repeated command_id
        if not call.alive:
            return _error(422, *CALL_ENDED)
        if command_id:
            call.command_ids.add(str(command_id))
        if params.get("client_state"):
            call.client_state = str(params["client_state"])
        if action == "answer":
            if call.direction != "inbound" or call.answered:
                return _error(422, "90034", "Call is not in a state to be answered")
            self._answer(call)
        elif action == "reject":
            if call.direction != "inbound" or call.answered:
                return _error(422, "90034", "Call is not in a state to be rejected")
            self._end(call, "call_rejected", "callee")
        elif action == "hangup":
            self._end(call, "normal_clearing",
                      "caller" if call.direction == "outbound" else "callee")
        elif action == "speak":
            if not call.answered:
                return _error(422, "90034", "Call is not answered yet")
            if not params.get("payload"):
                return _error(422, "10032", "Missing parameter", "payload is required")
            self._speak_started(call, str(params["payload"]))
        elif action == "transcription_start":
            call.transcribing = True
            if call.owed_reply and not call.speaking:
                self._reply(call)
        elif action == "transcription_stop":
            call.transcribing = False
        self._notify()
        return 200, {"data": {"result": "ok"}}


def _take_event(rules: Iterable[_Rule], item: _Outgoing, call: FakeCall) -> bool:
    return any(rule.take_event(item.event_type, call.call_control_id) for rule in rules)


def _route(method: str, path: str) -> tuple[str | None, str] | None:
    """``(call_control_id, action)`` for a path the fake serves, else ``None``."""
    parts = [unquote(p) for p in path.strip("/").split("/")]
    if parts and parts[0] == "v2":
        parts = parts[1:]
    if not parts or parts[0] != "calls":
        return None
    if len(parts) == 1 and method == "POST":
        return None, "create"
    if len(parts) == 2 and method == "GET":
        return parts[1], "get"
    if len(parts) == 4 and parts[2] == "actions" and parts[3] in ACTIONS and method == "POST":
        return parts[1], parts[3]
    return None
