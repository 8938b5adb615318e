"""What to do with each call found live in the journal after a restart: pure decisions.

The supervisor asks ``before_carrier`` first (some calls can be settled from the record
alone), then, for the others, asks the carrier and takes ``after_carrier``'s verdict. Neither
function does I/O, so the whole reconciliation policy is a table, tested as one. The rule
that matters most: nothing here can ever lead to a call being dialled again.

Every time compared here is the daemon's own: ``answeredAt`` and ``startedAt`` are recorded
on the daemon's clock when it learned of the answer (``model.apply``), never the carrier's
timestamp, so a delayed retry or a carrier clock an hour off cannot make a young call look
older than ``maxDurationSeconds`` at restart (nor an old one young).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .events import EndReason
from .model import CallRecord
from .providers import RemoteCallState, RemoteStatus


@dataclass(frozen=True, slots=True)
class Verdict:
    action: Literal["end", "resume", "ask-carrier"]
    reason: EndReason | None = None  # with "end"
    hang_up: bool = False  # with "end": the carrier may still have the call
    why: str = ""  # one log line's worth


ASK_CARRIER = Verdict("ask-carrier")


def before_carrier(record: CallRecord, now_s: float, max_duration_s: float) -> Verdict:
    if not record.provider_call_id:
        # journaled before the dial, crashed before the carrier answered: never dial again
        return Verdict("end", "error", why="never reached the carrier before the restart")
    started = (record.answered_at or record.started_at) / 1000
    if now_s - started > max_duration_s:
        return Verdict("end", "timeout", hang_up=True,
                       why="older than maxDurationSeconds at restart")
    return ASK_CARRIER


def after_carrier(remote: RemoteCallState | None) -> Verdict:
    """``remote`` is None when the carrier could not be asked (outage): resume, so that a
    call still live at the carrier is not abandoned; its timers end it if it is not."""
    if remote is None:
        return Verdict("resume", why="carrier state unknown (request failed); resumed")
    if remote.status is RemoteStatus.ENDED:
        return Verdict("end", remote.end_reason or "completed", why="the carrier ended it")
    if remote.status is RemoteStatus.UNKNOWN:
        return Verdict("end", "error", why="the carrier no longer knows this call")
    return Verdict("resume", why="live at the carrier; resumed")
