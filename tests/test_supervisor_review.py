"""Regression tests for the supervisor findings of the first code review."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio
import trio.testing
from rigs import rig

from voicecall_trio.calls import MAX_ENDED_REMEMBERED, RING_GRACE_S
from voicecall_trio.events import CallInitiated, CallSpeech
from voicecall_trio.model import CallRecord, end_record, new_record
from voicecall_trio.providers.base import InboundDecision
from voicecall_trio.providers.mock import MockProvider


class SlowDialMock(MockProvider):
    """A carrier whose answer to the dial request takes a while."""

    dialling: trio.Event
    hung_up: trio.Event

    async def dial(self, record: CallRecord) -> str:
        self.dialling.set()
        await trio.sleep(5)  # the carrier's answer is slow (virtual time)
        return await super().dial(record)

    async def hangup(self, record: CallRecord) -> None:
        await super().hangup(record)
        self.hung_up.set()


async def test_a_cancelled_initiate_never_leaves_a_call_up_at_the_carrier(
    tmp_path: Path, autojump_clock: Any
) -> None:
    async with rig(tmp_path) as r:
        slow = SlowDialMock(r.sup.config)
        slow.dialling, slow.hung_up = trio.Event(), trio.Event()
        r.sup.provider = slow
        async with trio.open_nursery() as nursery:
            await nursery.start(slow.run, r.sup)
            with trio.CancelScope() as client:

                async def client_goes_away() -> None:
                    await slow.dialling.wait()
                    client.cancel()  # the RPC client went away mid-dial

                nursery.start_soon(client_goes_away)
                await r.sup.initiate("+15555550123", "Hi", "conversation")
            await slow.hung_up.wait()
            # the dial completed (shielded), so the call we placed was also hung up
            (call_id,) = slow.dialled
            record = r.sup.get_record(call_id)
            assert record is not None and record.provider_call_id and record.terminal
            assert slow.hangups == [record.provider_call_id]
            nursery.cancel_scope.cancel()


async def test_a_dialling_call_counts_once_against_the_limit(
    tmp_path: Path, autojump_clock: Any
) -> None:
    async with rig(tmp_path, maxConcurrentCalls=2) as r:
        slow = SlowDialMock(r.sup.config)
        slow.dialling, slow.hung_up = trio.Event(), trio.Event()
        r.sup.provider = slow
        async with trio.open_nursery() as nursery:
            await nursery.start(slow.run, r.sup)
            nursery.start_soon(r.sup.initiate, "+15555550123", "One", "conversation")
            await trio.testing.wait_all_tasks_blocked()
            second = await r.sup.initiate("+15555550124", "Two", "conversation")
            assert second.provider_call_id
            nursery.cancel_scope.cancel()


async def test_concurrent_inbound_offers_respect_the_limit(
    tmp_path: Path, autojump_clock: Any
) -> None:
    async with rig(tmp_path, inboundPolicy="open") as r:
        outcomes = []

        async def offer(n: int) -> None:
            event = CallInitiated(id=f"o{n}", provider_call_id=f"p{n}", direction="inbound",
                                  from_=f"+1555000000{n}")
            outcomes.append((await r.sup.offer_inbound(event)).decision)

        async with trio.open_nursery() as nursery:
            for n in range(3):
                nursery.start_soon(offer, n)
        assert sorted(d.value for d in outcomes) == ["accept", "reject", "reject"]
        assert len(r.sup.live) == 1


async def test_a_duplicate_offer_during_setup_waits_and_is_a_duplicate(
    tmp_path: Path, autojump_clock: Any
) -> None:
    async with rig(tmp_path, inboundPolicy="open") as r:
        event = CallInitiated(id="o", provider_call_id="p", direction="inbound",
                              from_="+15550001111")
        results = []

        async def offer() -> None:
            results.append(await r.sup.offer_inbound(event))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(offer)
            nursery.start_soon(offer)
        assert sorted(o.duplicate for o in results) == [False, True]
        assert all(o.decision is InboundDecision.ACCEPT for o in results)
        assert len(r.sup.live) == 1


async def test_an_unanswered_call_gives_up_instead_of_holding_the_slot(
    tmp_path: Path, autojump_clock: Any
) -> None:
    async with rig(tmp_path, ringTimeoutMs=1000, mock={"answerDelayMs": 10_000_000}) as r:
        t0 = trio.current_time()
        record = await r.sup.initiate("+15555550123", "Hi", "notify")
        assert await r.ended(record.call_id) == "no-answer"
        assert trio.current_time() - t0 < 1 + RING_GRACE_S + 1
        assert len(r.mock.hangups) == 1  # the ringing call is cancelled at the carrier
        await r.sup.initiate("+15555550124", "Next", "notify")  # the slot is free


async def test_interim_transcripts_are_published_but_not_journaled(
    tmp_path: Path, autojump_clock: Any
) -> None:
    async with rig(tmp_path) as r:
        record = await r.sup.initiate("+15555550123", "Hello", "conversation")
        call = r.sup.live[record.call_id]
        await call.wait_until(lambda rec: any(e.speaker == "user" for e in rec.transcript))
        before = len(await r.journal_states(record.call_id))
        for n in range(20):
            await r.sup.deliver(CallSpeech(id=f"i{n}", call_id=record.call_id, text="hm",
                                           is_final=False))
        assert len(await r.journal_states(record.call_id)) == before


async def test_ended_calls_kept_in_memory_are_bounded(tmp_path: Path,
                                                      autojump_clock: Any) -> None:
    async with rig(tmp_path, mock={"answerDelayMs": 1}, outbound={"notifyHangupDelaySec": 0},
                   ) as r:
        for n in range(MAX_ENDED_REMEMBERED + 50):
            old = end_record(new_record(provider="mock", direction="outbound", from_="+1555",
                                        to="+1556", call_id=f"old{n}",
                                        provider_call_id=f"p-old{n}"), "completed")
            r.sup.session[old.call_id] = old
        record = await r.sup.initiate("+15555550123", "Hi", "notify")
        await r.ended(record.call_id)
        assert len(r.sup.session) == MAX_ENDED_REMEMBERED
        assert record.call_id in r.sup.session  # the newest stay
        assert "old0" not in r.sup.session and r.sup.find(provider_call_id="p-old0") is None
