"""The values of the fake Telnyx: who the remote party is and what they say, the records of what
happened (REST requests, webhook deliveries, each call as the carrier sees it), an event waiting
to be sent, and the rules that inject quirks. Plain data; no I/O and nothing that runs.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import trio

Outcome = Literal["answer", "busy", "no-answer", "reject"]
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

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


def _take_event(rules: Iterable[_Rule], item: _Outgoing, call: FakeCall) -> bool:
    return any(rule.take_event(item.event_type, call.call_control_id) for rule in rules)

