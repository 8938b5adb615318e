"""The call supervisor on trio's MockClock: timers, limits, cleanup and recovery."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from rigs import rig

from voicecall_trio.errors import (
    CallNotConnected,
    CallNotFound,
    ConcurrencyLimit,
    InvalidInput,
    TranscriptTimeout,
)
from voicecall_trio.events import CallAnswered, CallInitiated
from voicecall_trio.model import CallState, apply, new_record
from voicecall_trio.providers import InboundDecision
from voicecall_trio.replay import replay_bytes, replay_file


async def test_notify_call_hangs_up_after_the_delay(tmp_path: Path, autojump_clock: Any) -> None:
    async with rig(tmp_path, outbound={"notifyHangupDelaySec": 3}) as r:
        t0 = trio.current_time()
        record = await r.sup.initiate("+15555550123", "Your table is ready", "notify")
        assert await r.ended(record.call_id) == "hangup-bot"
        elapsed = trio.current_time() - t0
        speak = len("Your table is ready") * 0.010
        assert elapsed == pytest.approx(0.3 + speak + 3, abs=0.05)
        states = await r.journal_states(record.call_id)
        assert states[0] == "initiated" and states[-1] == "hangup-bot"
        final = r.sup.get_record(record.call_id)
        assert final is not None and final.transcript[0].text == "Your table is ready"
        assert r.mock.hangups == [final.provider_call_id]


async def test_max_duration_ends_the_call_as_timeout(tmp_path: Path, autojump_clock: Any) -> None:
    async with rig(tmp_path, maxDurationSeconds=5) as r:
        record = await r.sup.initiate("+15555550123", "Hi", "conversation")
        assert await r.ended(record.call_id) == "timeout"
        final = r.sup.get_record(record.call_id)
        assert final is not None and final.answered_at is not None and final.ended_at is not None
        assert final.ended_at - final.answered_at == pytest.approx(5000, abs=5)


async def test_continue_returns_the_callees_next_words(tmp_path: Path,
                                                       autojump_clock: Any) -> None:
    script = ["first line", "second line", "third line"]
    async with rig(tmp_path, mock={"callerScript": script}) as r:
        record = await r.sup.initiate("+15555550123", "Hello", "conversation")
        call = r.sup.live[record.call_id]
        await call.wait_until(lambda rec: any(e.text == "first line" for e in rec.transcript))
        assert await r.sup.continue_call(record.call_id, "How are you?") == "second line"
        await r.sup.end(record.call_id)
        assert await r.ended(record.call_id) == "hangup-bot"
        await r.sup.end(record.call_id)  # ending an ended call is fine


async def test_continue_times_out_and_allows_one_waiter(tmp_path: Path,
                                                        autojump_clock: Any) -> None:
    async with rig(tmp_path, transcriptTimeoutMs=1000, mock={"replyDelayMs": 5000}) as r:
        record = await r.sup.initiate("+15555550123", "Hello", "conversation")
        call = r.sup.live[record.call_id]
        await call.wait_until(lambda rec: rec.state.connected)
        errors: list[Exception] = []

        async def second() -> None:
            await trio.testing.wait_all_tasks_blocked()
            try:
                await r.sup.continue_call(record.call_id, "again")
            except CallNotConnected as exc:
                errors.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(second)
            with pytest.raises(TranscriptTimeout):
                await r.sup.continue_call(record.call_id, "Anyone there?")
        assert errors and "already waiting" in str(errors[0])


async def test_concurrency_limit_and_slot_release(tmp_path: Path, autojump_clock: Any) -> None:
    async with rig(tmp_path) as r:
        first = await r.sup.initiate("+15555550123", "One", "conversation")
        with pytest.raises(ConcurrencyLimit, match=r"Maximum concurrent calls \(1\) reached"):
            await r.sup.initiate("+15555550124", "Two", "conversation")
        await r.sup.end(first.call_id)
        second = await r.sup.initiate("+15555550124", "Two", "conversation")
        assert second.call_id != first.call_id


async def test_bad_input_is_rejected_before_dialling(tmp_path: Path, autojump_clock: Any) -> None:
    async with rig(tmp_path) as r:
        with pytest.raises(InvalidInput, match=r"E\.164"):
            await r.sup.initiate("12345", "x", None)
        with pytest.raises(CallNotFound):
            await r.sup.continue_call("nope", "x")
        with pytest.raises(CallNotFound):
            await r.sup.end("nope")
        assert r.mock.dialled == []


@pytest.mark.parametrize("outcome", ["busy", "no-answer", "failed"])
async def test_carrier_outcomes_end_the_call_without_a_hangup(
    tmp_path: Path, autojump_clock: Any, outcome: str
) -> None:
    async with rig(tmp_path, mock={"outcome": outcome}) as r:
        record = await r.sup.initiate("+15555550123", "Hi", "notify")
        assert await r.ended(record.call_id) == outcome
        assert r.mock.hangups == []


async def test_cancellation_still_hangs_up_and_journals(tmp_path: Path,
                                                        autojump_clock: Any) -> None:
    async with rig(tmp_path) as r:
        record = await r.sup.initiate("+15555550123", "Hello", "conversation")
        await r.sup.live[record.call_id].wait_until(lambda rec: rec.state.connected)
        assert r.sup._nursery is not None
        r.sup._nursery.cancel_scope.cancel()  # a crash-like stop of the whole supervisor
        await trio.testing.wait_all_tasks_blocked()
    assert (await r.journal_states(record.call_id))[-1] == "hangup-bot"
    assert len(r.mock.hangups) == 1


async def test_the_callee_hangs_up_when_the_script_runs_out(tmp_path: Path,
                                                            autojump_clock: Any) -> None:
    async with rig(tmp_path, mock={"callerScript": ["only line"]}) as r:
        record = await r.sup.initiate("+15555550123", "Hello", "conversation")
        await r.sup.live[record.call_id].wait_until(
            lambda rec: any(e.speaker == "user" for e in rec.transcript))
        await r.sup.speak(record.call_id, "Anything else?")
        assert await r.ended(record.call_id) == "hangup-user"


async def test_inbound_policy(tmp_path: Path, autojump_clock: Any) -> None:
    async with rig(tmp_path, inboundPolicy="allowlist", allowFrom=["+15550001111"],
                   inboundGreeting="Hello caller") as r:
        refused = await r.mock.simulate_inbound("+15550009999")
        anonymous = await r.mock.simulate_inbound("anonymous")
        assert refused.decision is anonymous.decision is InboundDecision.REJECT
        accepted = await r.mock.simulate_inbound("+15550001111")
        assert accepted.decision is InboundDecision.ACCEPT and accepted.record is not None
        call = r.sup.live[accepted.record.call_id]
        record = await call.wait_until(lambda rec: len(rec.transcript) >= 2)
        assert record.transcript[0].text == "Hello caller" and record.direction == "inbound"
        offer = CallInitiated(id="dup", provider_call_id=accepted.record.provider_call_id,
                              direction="inbound", from_="+15550001111")
        again = await r.sup.offer_inbound(offer)
        assert again.duplicate and len(r.sup.live) == 1
    ids = {line.split('"callId":"')[1].split('"')[0]
           for line in r.path.read_text().splitlines()}
    assert ids == {accepted.record.call_id}  # refused calls were never journaled


async def test_disabled_policy_refuses_everyone(tmp_path: Path, autojump_clock: Any) -> None:
    async with rig(tmp_path) as r:
        outcome = await r.mock.simulate_inbound("+15550001111")
        assert outcome.decision is InboundDecision.REJECT and not r.sup.live


async def test_recovery_never_dials_and_ends_what_cannot_resume(
    tmp_path: Path, autojump_clock: Any
) -> None:
    now_ms = int(trio.current_time() * 1000)
    undialled = new_record(provider="mock", direction="outbound", from_="+1555", to="+1556",
                           call_id="undialled", at=now_ms)
    stale = apply(new_record(provider="mock", direction="outbound", from_="+1555", to="+1556",
                             call_id="stale", provider_call_id="p-stale", at=now_ms - 900_000),
                  CallAnswered(id="a"), now_ms - 900_000)  # answered, on the daemon's clock
    lost = apply(new_record(provider="mock", direction="outbound", from_="+1555", to="+1556",
                            call_id="lost", provider_call_id="p-lost", at=now_ms),
                 CallAnswered(id="a"), now_ms)
    from voicecall_trio.journal_lines import encode_record

    replayed = replay_bytes(b"".join(encode_record(x) for x in (undialled, stale, lost)))
    async with rig(tmp_path, replayed) as r:
        reasons = {cid: r.sup.get_record(cid).state.value  # type: ignore[union-attr]
                   for cid in ("undialled", "stale", "lost")}
        assert reasons == {"undialled": "error", "stale": "timeout", "lost": "error"}
        assert r.mock.dialled == [] and not r.sup.live
    assert not replay_file(r.path).live  # every recovered call is terminal on disk


async def test_subscribers_see_each_change(tmp_path: Path, autojump_clock: Any) -> None:
    async with rig(tmp_path, outbound={"notifyHangupDelaySec": 0}) as r:
        events = r.sup.subscribe()
        record = await r.sup.initiate("+15555550123", "Hi", "notify")
        await r.ended(record.call_id)
        seen = []
        while True:
            try:
                seen.append(events.receive_nowait())
            except trio.WouldBlock:
                break
        types = [e["type"] for e in seen]
        assert types[0] == "call.dialled" and types[-1] == "call.ended"
        assert {"call.ringing", "call.answered", "call.speaking"} <= set(types)
        assert seen[-1]["state"] == CallState.HANGUP_BOT.value
