"""The values of the fake Twilio: who the callee is, what they say, the quirks in force, and the
records of what happened (REST requests, webhook deliveries, each call as the carrier sees it).

Plain data and the little logic that reads it (a call's next scripted line, its Twilio JSON); no
I/O and nothing that runs. Every other module of the fake builds on these.
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any, Literal, Protocol

import trio

API_VERSION = "2010-04-01"
FINAL_STATUSES = frozenset({"completed", "busy", "no-answer", "failed", "canceled"})
WEBHOOK_KINDS = frozenset({"status", "fetch", "inbound", "gather", "redirect", "connect"})
SignUrl = Literal["exact", "no-port", "default-port"]
Outcome = Literal["answered", "busy", "no-answer", "failed"]
SPEAK_S_PER_CHAR = 0.06  # how long the simulated voices take, before time_scale
MORE_INFO = "https://www.twilio.com/docs/errors/{code}"
FRAME_BYTES = 160  # one 20 ms media frame of 8 kHz mu-law, as Twilio sends them
FRAME_S = 0.02
ULAW_SILENCE = b"\xff"  # mu-law zero: what Twilio streams while nobody speaks
#: How much audio a stream record keeps each way by default (10 minutes); beyond it only
#: the counts grow (``FakeTwilio(stream_record_bytes=...)``; a benchmark may pass 0).
MAX_RECORDED_BYTES = 8000 * 600


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
    #: mu-law the callee says on a media stream, from its first frame (``hello_ulaw()``);
    #: ``fake.play_audio(sid, ...)`` queues more at any time. Silence before and after.
    stream_audio: bytes = b""


@dataclass(frozen=True, slots=True)
class ApiRequest:
    """One REST request the fake received, and the status it answered."""

    method: str
    path: str
    form: tuple[tuple[str, str], ...]
    status: int
    action: Literal["create", "update", "fetch", "account", "other"]
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

StreamState = Literal["connecting", "open", "closed", "refused", "failed", "unroutable"]


@dataclass(eq=False)
class FakeStream:
    """One media WebSocket the fake opened for a call (``<Connect><Stream>``, or by hand), and
    everything that went over it. Times are ``trio.current_time()``.

    ``state``: ``refused`` is an upgrade answered with an HTTP status (``refused``),
    ``failed`` a socket or handshake error (``error``), ``unroutable`` a host the fake
    cannot reach (no tunnel, not loopback: it never resolves names).
    """

    call_sid: str
    stream_sid: str
    url: str  # as in the TwiML (what is signed)
    parameters: dict[str, str]  # the <Parameter>s, sent as start.customParameters
    signature: str | None  # the X-Twilio-Signature sent (None: no header)
    state: StreamState = "connecting"
    refused: int | None = None
    error: str | None = None
    opened_at: float | None = None
    closed_at: float | None = None
    frames_sent: int = 0  # inbound media frames (callee audio or silence)
    sent: bytearray = field(default_factory=bytearray)  # their payload bytes, in order
    received: bytearray = field(default_factory=bytearray)  # outbound media from the daemon
    received_bytes: int = 0  # counts on past the recording limit
    arrivals: list[tuple[float, bytes]] = field(default_factory=list)  # each media payload
    marks: list[str] = field(default_factory=list)  # mark names the daemon sent
    echoed: list[tuple[float, str]] = field(default_factory=list)  # marks the fake echoed
    clears: list[float] = field(default_factory=list)
    cleared_bytes: int = 0  # unplayed audio dropped by clears
    dtmf_sent: list[str] = field(default_factory=list)
    stop_sent: bool = False
    close_code: int | None = None
    close_reason: str | None = None
    closed_by: Literal["daemon", "fake", "drop"] | None = None
    bad_messages: int = 0  # from the daemon: not JSON, unknown event, wrong streamSid, ...
    problems: list[str] = field(default_factory=list)  # the first few, for a test to read
    _ending: Literal["stop", "drop"] | None = None
    _late_stop: bool = False
    _ended: trio.Event = field(default_factory=trio.Event)  # stop or drop requested
    _wake: trio.Event = field(default_factory=trio.Event)  # a mark or clear to handle
    _dtmf: list[str] = field(default_factory=list)  # digits waiting for the next frame
    _seq: int = 0

    @property
    def open(self) -> bool:
        return self.state == "open"

    @property
    def audio(self) -> bytes:
        """The daemon's media payloads, joined (what the callee would have heard, uncut)."""
        return bytes(self.received)

    @property
    def echoed_names(self) -> list[str]:
        return [name for _, name in self.echoed]

    def end(self, how: Literal["stop", "drop"]) -> None:
        """Ask the stream's task to send ``stop`` and close, or to drop the socket."""
        if self._ending is None:
            self._ending = how
            self._ended.set()
            self._wake.set()


class _Watched(Protocol):
    """What a ``FakeCall`` needs of its fake: change notifications to wait on."""

    async def wait_for(self, predicate: Callable[[], bool]) -> None: ...


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
    media: list[FakeStream] = field(default_factory=list)  # media WebSockets opened
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
    _owner: _Watched | None = None
    _audio: deque[bytes] = field(default_factory=deque)  # callee frames not yet streamed
    _stream_audio_queued: bool = False
    _media_changed: trio.Event = field(default_factory=trio.Event)  # a stream's state moved

    @property
    def terminal(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def answered(self) -> bool:
        return self.answered_at is not None

    @property
    def stream(self) -> FakeStream | None:
        """The newest open media stream: the one that carries the callee's audio."""
        return next((s for s in reversed(self.media) if s.open), None)

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

