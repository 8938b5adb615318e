"""The call record and its state machine, as pure data and pure functions.

A call's life is one table (``TRANSITIONS``) and one function (``apply``): given a record and
an event, return the next record. Nothing here does I/O, so the whole lifecycle is tested
with plain values, in the manner of h11's state table. ``apply`` is idempotent per event id
and a terminal record never changes again; those two rules are what make duplicate and
replayed webhooks harmless.

Two more rules make carrier input harmless: every time the daemon acts on is the daemon's
own (``apply``'s ``at``), never a carrier timestamp; and text stored in a record is valid
Unicode (a lone surrogate becomes U+FFFD), so a record can always be encoded.

Field names and state names are the seed's (``calls.jsonl`` readers keep working).
"""

from __future__ import annotations

import enum
import time
import uuid
from typing import Any

import msgspec

from .events import (
    MAX_CARRIER_TIMESTAMP_MS,
    CallActive,
    CallAnswered,
    CallDtmf,
    CallEnded,
    CallError,
    CallEvent,
    CallInitiated,
    CallMachineDetection,
    CallRinging,
    CallSpeaking,
    CallSpeech,
    CallSpoken,
    Direction,
    EndReason,
    carrier_text,
    valid_unicode,
)
from .states import CONNECTED_STATE_NAMES, LIVE_STATE_NAMES, TERMINAL_STATE_NAMES

MAX_REMEMBERED_EVENT_IDS = 256
MAX_DTMF_CHARS = 256  # the digits a call's metadata keeps (the latest ones)
# metadata keys for the carrier's own clock, kept for diagnostics only: nothing acts on them
CARRIER_TIME_KEYS: dict[str, str] = {"answered": "carrierAnsweredAt", "ended": "carrierEndedAt"}


class CallState(enum.StrEnum):
    INITIATED = "initiated"
    RINGING = "ringing"
    ANSWERED = "answered"
    ACTIVE = "active"
    SPEAKING = "speaking"
    LISTENING = "listening"
    # terminal states; their names double as end reasons
    COMPLETED = "completed"
    HANGUP_USER = "hangup-user"
    HANGUP_BOT = "hangup-bot"
    TIMEOUT = "timeout"
    ERROR = "error"
    FAILED = "failed"
    NO_ANSWER = "no-answer"
    BUSY = "busy"
    VOICEMAIL = "voicemail"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES

    @property
    def connected(self) -> bool:
        """The callee is on the line (the bot can speak)."""
        return self in CONNECTED_STATES


TERMINAL_STATES: frozenset[CallState] = frozenset(CallState(n) for n in TERMINAL_STATE_NAMES)
CONNECTED_STATES: frozenset[CallState] = frozenset(CallState(n) for n in CONNECTED_STATE_NAMES)
assert {s.value for s in CallState} == set(LIVE_STATE_NAMES) | TERMINAL_STATE_NAMES

_S = CallState
# Allowed moves between live states. Any live state may also move to any terminal state;
# a terminal state moves nowhere. Backwards moves (e.g. a late "ringing" after "answered")
# are not listed, so out-of-order webhooks cannot rewind a call.
TRANSITIONS: dict[CallState, frozenset[CallState]] = {
    _S.INITIATED: frozenset({_S.RINGING, _S.ANSWERED, _S.ACTIVE, _S.SPEAKING, _S.LISTENING}),
    _S.RINGING: frozenset({_S.ANSWERED, _S.ACTIVE, _S.SPEAKING, _S.LISTENING}),
    _S.ANSWERED: frozenset({_S.ACTIVE, _S.SPEAKING, _S.LISTENING}),
    _S.ACTIVE: frozenset({_S.SPEAKING, _S.LISTENING}),
    _S.SPEAKING: frozenset({_S.LISTENING, _S.ACTIVE}),
    _S.LISTENING: frozenset({_S.SPEAKING}),
}


def can_move(current: CallState, target: CallState) -> bool:
    if current.terminal:
        return False
    if target.terminal:
        return True
    return target in TRANSITIONS.get(current, frozenset())


class TranscriptEntry(msgspec.Struct, rename="camel", frozen=True):
    timestamp: int
    speaker: str  # "bot" | "user"
    text: str
    is_final: bool = True


class CallRecord(msgspec.Struct, rename="camel", omit_defaults=True, frozen=True, kw_only=True):
    """One line of ``calls.jsonl``: a full snapshot of a call."""

    call_id: str
    provider: str
    direction: Direction
    state: CallState
    from_: str = msgspec.field(name="from")
    to: str = ""
    started_at: int = 0
    provider_call_id: str | None = None
    session_key: str | None = None
    answered_at: int | None = None
    ended_at: int | None = None
    end_reason: EndReason | None = None
    transcript: tuple[TranscriptEntry, ...]  # always written, even when empty
    processed_event_ids: tuple[str, ...] = ()
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)

    @property
    def terminal(self) -> bool:
        return self.state.terminal


def now_ms() -> int:
    return int(time.time() * 1000)


def new_call_id() -> str:
    return str(uuid.uuid4())


def new_record(
    *,
    provider: str,
    direction: Direction,
    from_: str,
    to: str,
    metadata: dict[str, Any] | None = None,
    call_id: str | None = None,
    provider_call_id: str | None = None,
    at: int | None = None,
) -> CallRecord:
    return CallRecord(
        call_id=call_id or new_call_id(),
        provider=provider,
        direction=direction,
        state=CallState.INITIATED,
        from_=from_,
        to=to,
        started_at=at if at is not None else now_ms(),
        provider_call_id=provider_call_id,
        transcript=(),
        metadata=dict(metadata or {}),
    )


def _moved(record: CallRecord, target: CallState, at: int, **changes: Any) -> CallRecord:
    if not can_move(record.state, target):
        return msgspec.structs.replace(record, **changes) if changes else record
    if target.terminal:
        changes.setdefault("ended_at", at)
        changes.setdefault("end_reason", target.value)
    if target is CallState.ANSWERED and record.answered_at is None:
        changes["answered_at"] = at
    return msgspec.structs.replace(record, state=target, **changes)


def apply(record: CallRecord, event: CallEvent, at: int | None = None) -> CallRecord:
    """Return the record after ``event``; the same object when the event changes nothing.

    ``at`` is when the daemon learned of the event, on the daemon's clock (callers with a
    clock pass it; ``now_ms()`` is only a fallback). Every time in the record that the
    daemon acts on (``answeredAt``, ``endedAt``, transcript times) is ``at``, never the
    carrier's ``event.timestamp``: a delayed retry or a carrier clock an hour off must not
    start a call's ``maxDurationSeconds`` in the past or the future. The carrier's time of
    an answer or an end is kept in ``metadata`` (``carrierAnsweredAt``, ``carrierEndedAt``)
    for diagnostics only.
    """
    if record.terminal or event.id in record.processed_event_ids:
        return record
    at = at if at is not None else now_ms()
    changes: dict[str, Any] = {}
    if event.provider_call_id and not record.provider_call_id:
        changes["provider_call_id"] = event.provider_call_id
    nxt = _apply_kind(record, event, at, changes)
    if nxt is record:
        return record
    nxt = _note_carrier_time(record, nxt, event.timestamp)
    ids = (*record.processed_event_ids, event.id)[-MAX_REMEMBERED_EVENT_IDS:]
    return msgspec.structs.replace(nxt, processed_event_ids=ids)


def _note_carrier_time(before: CallRecord, after: CallRecord, carrier_ms: int) -> CallRecord:
    """Record the carrier's timestamp of an answer or an end (at most two keys, ever)."""
    if not 0 < carrier_ms <= MAX_CARRIER_TIMESTAMP_MS:
        return after
    key = None
    if after.terminal:
        key = CARRIER_TIME_KEYS["ended"]
    elif after.answered_at is not None and before.answered_at is None:
        key = CARRIER_TIME_KEYS["answered"]
    if key is None:
        return after
    return with_metadata(after, **{key: carrier_ms})


def _apply_kind(
    record: CallRecord, event: CallEvent, at: int, changes: dict[str, Any]
) -> CallRecord:
    match event:
        case CallRinging():
            return _moved(record, CallState.RINGING, at, **changes)
        case CallAnswered():
            return _moved(record, CallState.ANSWERED, at, **changes)
        case CallActive():
            return _moved(record, CallState.ACTIVE, at, **changes)
        case CallSpeaking(text=text):
            text = valid_unicode(text)
            if text:
                changes["transcript"] = (*record.transcript, TranscriptEntry(at, "bot", text))
            return _moved(record, CallState.SPEAKING, at, **changes)
        case CallSpoken():
            return _moved(record, CallState.LISTENING, at, **changes)
        case CallSpeech(text=text, is_final=is_final):
            text = valid_unicode(text)
            if is_final and text:
                changes["transcript"] = (*record.transcript, TranscriptEntry(at, "user", text))
            if record.state is CallState.SPEAKING or not record.state.connected:
                # a callee who speaks is on the line, and the bot is now listening
                target = CallState.LISTENING
                if not record.state.connected:
                    changes.setdefault("answered_at", record.answered_at or at)
                return _moved(record, target, at, **changes)
            return msgspec.structs.replace(record, **changes) if changes else _touch(record)
        case CallDtmf(digits=digits):
            meta = dict(record.metadata)
            meta["dtmf"] = (str(meta.get("dtmf", "")) + carrier_text(digits))[-MAX_DTMF_CHARS:]
            return msgspec.structs.replace(record, metadata=meta, **changes)
        case CallMachineDetection(result=result):
            meta = dict(record.metadata)
            meta["answeredBy"] = carrier_text(result)
            return msgspec.structs.replace(record, metadata=meta, **changes)
        case CallEnded(reason=reason):
            return _moved(record, CallState(reason), at, **changes)
        case CallError(error=error, retryable=retryable):
            meta = dict(record.metadata)
            meta["lastError"] = carrier_text(error)
            if retryable:
                return msgspec.structs.replace(record, metadata=meta, **changes)
            return _moved(record, CallState.ERROR, at, metadata=meta, **changes)
        case CallInitiated():
            return msgspec.structs.replace(record, **changes) if changes else _touch(record)
    return record


def _touch(record: CallRecord) -> CallRecord:
    """A copy, so that the event id is still remembered although nothing else changed."""
    return msgspec.structs.replace(record)


def end_record(record: CallRecord, reason: EndReason, at: int | None = None) -> CallRecord:
    """Force a live record into a terminal state (supervisor decisions, crash recovery)."""
    return _moved(record, CallState(reason), at if at is not None else now_ms())


def with_metadata(record: CallRecord, **items: Any) -> CallRecord:
    meta = dict(record.metadata)
    meta.update(items)
    return msgspec.structs.replace(record, metadata=meta)


def last_user_text_after(record: CallRecord, index: int) -> str | None:
    """The first final user transcript entry at position ``index`` or later."""
    for entry in record.transcript[index:]:
        if entry.speaker == "user" and entry.is_final:
            return entry.text
    return None


def record_to_builtins(record: CallRecord) -> dict[str, Any]:
    out = msgspec.to_builtins(record)
    assert isinstance(out, dict)
    out.pop("processedEventIds", None)
    return out
