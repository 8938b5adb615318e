"""Restart reconciliation as a table: record (+ the carrier's answer) -> what to do."""

from __future__ import annotations

import uuid

import pytest

from voicecall_trio.events import CallAnswered
from voicecall_trio.model import CallRecord, apply, new_record
from voicecall_trio.providers import RemoteCallState, RemoteStatus
from voicecall_trio.recovery import after_carrier, before_carrier

NOW_S = 10_000.0


def record(*, dialled: bool = True, started_s: float = NOW_S - 10,
           answered_s: float | None = None, carrier_skew_s: float = 0.0) -> CallRecord:
    """``answered_s`` is when the daemon learned of the answer; the carrier's webhook said
    ``answered_s + carrier_skew_s`` (a delayed retry, or a carrier clock off)."""
    r = new_record(provider="twilio", direction="outbound", from_="+15550001111",
                   to="+15550002222", provider_call_id="CA1" if dialled else None,
                   at=int(started_s * 1000), call_id=str(uuid.uuid4()))
    if answered_s is not None:
        carrier_ms = int((answered_s + carrier_skew_s) * 1000)
        r = apply(r, CallAnswered(id="a", timestamp=carrier_ms), int(answered_s * 1000))
    return r


@pytest.mark.parametrize(("rec", "action", "reason", "hang_up"), [
    (record(dialled=False), "end", "error", False),  # never dialled: never dial again
    (record(started_s=NOW_S - 400), "end", "timeout", True),  # too old: end, hang up
    (record(started_s=NOW_S - 900, answered_s=NOW_S - 100), "ask-carrier", None, False),
    (record(answered_s=NOW_S - 301), "end", "timeout", True),
    # answered 10 s before the restart by a webhook whose carrier timestamp was 6 min old
    # (a delayed retry): the call is young, so the carrier is asked, not the call ended
    (record(started_s=NOW_S - 20, answered_s=NOW_S - 10, carrier_skew_s=-360),
     "ask-carrier", None, False),
    # and a carrier clock an hour ahead does not make an old call look young
    (record(started_s=NOW_S - 400, answered_s=NOW_S - 350, carrier_skew_s=3600),
     "end", "timeout", True),
    (record(), "ask-carrier", None, False),
])
def test_before_asking_the_carrier(rec: CallRecord, action: str, reason: str | None,
                                   hang_up: bool) -> None:
    verdict = before_carrier(rec, NOW_S, max_duration_s=300)
    assert (verdict.action, verdict.reason, verdict.hang_up) == (action, reason, hang_up)
    assert verdict.action != "dial"  # there is no such action: a restart never dials


@pytest.mark.parametrize(("remote", "action", "reason"), [
    (RemoteCallState(RemoteStatus.LIVE, answered=True), "resume", None),
    (RemoteCallState(RemoteStatus.ENDED, "busy"), "end", "busy"),
    (RemoteCallState(RemoteStatus.ENDED), "end", "completed"),
    (RemoteCallState(RemoteStatus.UNKNOWN), "end", "error"),
    (None, "resume", None),  # the carrier could not be asked: don't abandon a live call
])
def test_after_asking_the_carrier(remote: RemoteCallState | None, action: str,
                                  reason: str | None) -> None:
    verdict = after_carrier(remote)
    assert (verdict.action, verdict.reason) == (action, reason) and verdict.why
