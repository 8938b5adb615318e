"""The call record and its state machine, as pure data and pure functions.

A call's life is one table (``EVENT_TRANSITIONS``) and one function (``apply``): given a
record, an event and the time, return the next record. Nothing here does I/O, reads a clock or
makes an id, so the whole lifecycle is tested with plain values, in the manner of h11's
``_state.py``. Every rule about a call's state lives in this module:

Rule 1: ``EVENT_TRANSITIONS[state][event kind]`` is where an event moves a live call. An event
  kind missing from a state's row does not move it (a late "ringing" after "answered" cannot
  rewind a call); its other effects (a transcript line, metadata) still apply.
Rule 2: from any live state, a call may end: ``CallEnded`` moves it to the state named by its
  reason, a non-retryable ``CallError`` to ``error``; ``end_record`` forces the same for the
  supervisor's own decisions. A terminal record never changes again (``states.py`` names the
  terminal states, once).
Rule 3: ``apply`` is idempotent per event id: the ids it applied are remembered in the record.
  Together with rule 2 this is what makes duplicate and replayed webhooks harmless.
Rule 4: every time the daemon acts on is the caller's ``at`` (the daemon's clock), never a
  carrier timestamp; the carrier's time of an answer or an end is kept for diagnostics only.
Rule 5: text stored in a record is valid Unicode (a lone surrogate becomes U+FFFD), so a record
  can always be encoded.
Rule 6: ``spoken`` counts the utterances the carrier reported finished (``CallSpoken`` events
  that changed the record); notify mode hangs up after the first one.
Rule 7: an event that only confirms a state the daemon entered itself (``CONFIRMATIONS``: the
  supervisor marks a call speaking before it asks the carrier to speak) is late once the call
  has left that state, and a carrier shell drops it (``is_late_confirmation``) instead of
  delivering it: Telnyx's ``call.speak.started`` arriving after ``call.speak.ended`` would turn
  a listening call back to speaking. Whether a call was answered, which decides who hung up,
  is ``was_answered``.

Field names and state names are the seed's (``calls.jsonl`` readers keep working).
"""

from __future__ import annotations

import enum
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
    CallInterrupted,
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
# Rule 1: where each event kind moves a live call. Terminal moves (rule 2) are not listed: any
# live state may end. ``CallSpeech`` moves a call only when the bot was speaking (the callee
# talks over it) or nobody had answered yet (a callee who speaks is on the line); otherwise a
# transcript line leaves the state alone.
_LIVE_EVENTS: dict[type[CallEvent], CallState] = {
    CallRinging: _S.RINGING,
    CallAnswered: _S.ANSWERED,
    CallActive: _S.ACTIVE,
    CallSpeaking: _S.SPEAKING,
    CallSpoken: _S.LISTENING,
    CallSpeech: _S.LISTENING,
}
EVENT_TRANSITIONS: dict[CallState, dict[type[CallEvent], CallState]] = {
    _S.INITIATED: dict(_LIVE_EVENTS),
    _S.RINGING: {k: v for k, v in _LIVE_EVENTS.items() if k is not CallRinging},
    _S.ANSWERED: {CallActive: _S.ACTIVE, CallSpeaking: _S.SPEAKING, CallSpoken: _S.LISTENING},
    _S.ACTIVE: {CallSpeaking: _S.SPEAKING, CallSpoken: _S.LISTENING},
    _S.SPEAKING: {CallSpoken: _S.LISTENING, CallActive: _S.ACTIVE, CallSpeech: _S.LISTENING,
                  CallInterrupted: _S.LISTENING},
    _S.LISTENING: {CallSpeaking: _S.SPEAKING},
}
# The live states each live state may move to (derived from the table above).
TRANSITIONS: dict[CallState, frozenset[CallState]] = {
    state: frozenset(row.values()) for state, row in EVENT_TRANSITIONS.items()
}
# Rule 7: events that confirm a state the daemon set before asking the carrier for it, and
# that state. Arriving when the call is no longer in it, such an event is late.
CONFIRMATIONS: dict[type[CallEvent], CallState] = {CallSpeaking: _S.SPEAKING}
# Events whose id is remembered even when they change nothing else, so a redelivery is
# recognised as one (a repeated transcript, a repeated offer).
_REMEMBERED_WHEN_IDLE: tuple[type[CallEvent], ...] = (CallSpeech, CallInitiated)


def can_move(current: CallState, target: CallState) -> bool:
    if current.terminal:
        return False
    if target.terminal:
        return True
    return target in TRANSITIONS.get(current, frozenset())


class TranscriptEntry(msgspec.Struct, rename="camel", frozen=True):
    """One line of the transcript. ``interrupted``/``heardMs`` (a bot line the callee talked
    over, and how much of it they heard) are written only when set (``UNSET`` is omitted), so
    lines keep the seed's four fields otherwise. Which bot line a barge-in cuts is told by
    ``metadata.lastUtterance``, the id of the latest ``CallSpeaking``."""

    timestamp: int
    speaker: str  # "bot" | "user"
    text: str
    is_final: bool = True
    interrupted: bool | msgspec.UnsetType = msgspec.UNSET
    heard_ms: int | msgspec.UnsetType = msgspec.UNSET


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
    spoken: int = 0  # utterances the carrier reported finished (rule 6); not shown over RPC

    @property
    def terminal(self) -> bool:
        return self.state.terminal


def new_record(
    *,
    call_id: str,
    at: int,
    provider: str,
    direction: Direction,
    from_: str,
    to: str,
    metadata: dict[str, Any] | None = None,
    provider_call_id: str | None = None,
) -> CallRecord:
    """A fresh ``initiated`` record. The id and the start time come from the caller (the
    supervisor's id source and clock): this module never makes either."""
    return CallRecord(
        call_id=call_id,
        provider=provider,
        direction=direction,
        state=CallState.INITIATED,
        from_=from_,
        to=to,
        started_at=at,
        provider_call_id=provider_call_id,
        transcript=(),
        metadata=dict(metadata or {}),
    )


def apply(record: CallRecord, event: CallEvent, at: int) -> CallRecord:
    """Return the record after ``event``; the same object when the event changes nothing.

    ``at`` is when the daemon learned of the event, on the daemon's clock (rule 4). Every
    time in the record that the daemon acts on (``answeredAt``, ``endedAt``, transcript
    times) is ``at``, never the carrier's ``event.timestamp``: a delayed retry or a carrier
    clock an hour off must not start a call's ``maxDurationSeconds`` in the past or the
    future. The carrier's time of an answer or an end is kept in ``metadata``
    (``carrierAnsweredAt``, ``carrierEndedAt``) for diagnostics only.
    """
    if record.terminal or event.id in record.processed_event_ids:
        return record
    changes: dict[str, Any] = {}
    if event.provider_call_id and not record.provider_call_id:
        changes["provider_call_id"] = event.provider_call_id
    nxt = _apply_kind(record, event, at, changes)
    if nxt is record:
        return record
    if isinstance(event, CallSpoken):  # rule 6
        nxt = msgspec.structs.replace(nxt, spoken=record.spoken + 1)
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


def target_state(state: CallState, event: CallEvent) -> CallState | None:
    """Where ``event`` moves a call in ``state`` (rules 1 and 2), or None: it stays."""
    if state.terminal:
        return None
    match event:
        case CallEnded(reason=reason):
            return CallState(reason)
        case CallError(retryable=retryable):
            return None if retryable else CallState.ERROR
    return EVENT_TRANSITIONS[state].get(type(event))


def is_late_confirmation(record: CallRecord, event: CallEvent) -> bool:
    """True for an event that only confirms a state (rule 7) the call is no longer in."""
    confirmed = CONFIRMATIONS.get(type(event))
    return confirmed is not None and record.state is not confirmed


def was_answered(record: CallRecord) -> bool:
    """Whether the callee picked up: an answer was recorded, or the call is connected."""
    return record.answered_at is not None or record.state.connected


def _apply_kind(
    record: CallRecord, event: CallEvent, at: int, changes: dict[str, Any]
) -> CallRecord:
    """The event's effects besides the move (transcript, metadata), then the move."""
    match event:
        case CallSpeaking(text=text):
            text = valid_unicode(text)
            if text:
                changes["transcript"] = (*record.transcript, TranscriptEntry(at, "bot", text))
                meta = dict(record.metadata)
                meta["lastUtterance"] = event.id  # which bot line a barge-in cuts
                changes["metadata"] = meta
        case CallInterrupted(utterance=utterance, heard_ms=heard_ms):
            marked = _mark_interrupted(record, utterance, max(0, heard_ms))
            if marked is not None:
                changes["transcript"] = marked
        case CallSpeech(text=text, is_final=is_final):
            text = valid_unicode(text)
            if is_final and text:
                changes["transcript"] = (*record.transcript, TranscriptEntry(at, "user", text))
            if not record.state.connected:  # a callee who speaks is on the line
                changes.setdefault("answered_at", record.answered_at or at)
        case CallDtmf(digits=digits):
            meta = dict(record.metadata)
            meta["dtmf"] = (str(meta.get("dtmf", "")) + carrier_text(digits))[-MAX_DTMF_CHARS:]
            changes["metadata"] = meta
        case CallMachineDetection(result=result):
            meta = dict(record.metadata)
            meta["answeredBy"] = carrier_text(result)
            changes["metadata"] = meta
        case CallError(error=error):
            meta = dict(record.metadata)
            meta["lastError"] = carrier_text(error)
            changes["metadata"] = meta
    target = target_state(record.state, event)
    if target is not None:
        return _moved(record, target, at, changes)
    if changes:
        return msgspec.structs.replace(record, **changes)
    return _touch(record) if isinstance(event, _REMEMBERED_WHEN_IDLE) else record


def _mark_interrupted(record: CallRecord, utterance: str, heard_ms: int
                      ) -> tuple[TranscriptEntry, ...] | None:
    """The transcript with its last bot line marked as cut short (its text stays whole).

    Only when that line is the utterance that was playing (``metadata.lastUtterance``): a
    late barge-in report for an older line marks nothing."""
    if utterance and record.metadata.get("lastUtterance") != utterance:
        return None
    for i in range(len(record.transcript) - 1, -1, -1):
        entry = record.transcript[i]
        if entry.speaker == "bot":
            cut = msgspec.structs.replace(entry, interrupted=True, heard_ms=heard_ms)
            return (*record.transcript[:i], cut, *record.transcript[i + 1:])
    return None


def _moved(record: CallRecord, target: CallState, at: int, changes: dict[str, Any]
           ) -> CallRecord:
    if target.terminal:
        changes.setdefault("ended_at", at)
        changes.setdefault("end_reason", target.value)
    if target is CallState.ANSWERED and record.answered_at is None:
        changes["answered_at"] = at
    return msgspec.structs.replace(record, state=target, **changes)


def _touch(record: CallRecord) -> CallRecord:
    """A copy, so that the event id is still remembered although nothing else changed."""
    return msgspec.structs.replace(record)


def end_record(record: CallRecord, reason: EndReason, at: int) -> CallRecord:
    """Force a live record into a terminal state (supervisor decisions, crash recovery)."""
    if record.terminal:
        return record
    return _moved(record, CallState(reason), at, {})


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
    out.pop("spoken", None)
    return out
