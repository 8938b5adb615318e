"""Regression tests for the supervisor findings of the first code review."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
import trio.testing
from rigs import RecordingDisk, real_time_limit, rig

from voicecall_trio.call import RING_GRACE_S
from voicecall_trio.errors import InvalidInput
from voicecall_trio.events import CallAnswered, CallInitiated, CallSpeaking, CallSpeech
from voicecall_trio.journal_lines import encode_record
from voicecall_trio.model import (
    CallRecord,
    CallState,
    TranscriptEntry,
    apply,
    end_record,
    new_record,
)
from voicecall_trio.providers import InboundDecision, RemoteCallState, RemoteStatus
from voicecall_trio.providers.mock import MockProvider
from voicecall_trio.registry import MAX_ENDED_REMEMBERED
from voicecall_trio.replay import replay_bytes, replay_file

WAIT_S = 20  # real seconds: bounds each test below (a hang fails)


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
        now = int(time.time() * 1000)
        for n in range(MAX_ENDED_REMEMBERED + 50):
            old = end_record(new_record(provider="mock", direction="outbound", from_="+1555",
                                        to="+1556", call_id=f"old{n}",
                                        provider_call_id=f"p-old{n}", at=now), "completed",
                             at=now)
            r.sup.session[old.call_id] = old
        record = await r.sup.initiate("+15555550123", "Hi", "notify")
        await r.ended(record.call_id)
        assert len(r.sup.session) == MAX_ENDED_REMEMBERED
        assert record.call_id in r.sup.session  # the newest stay
        assert "old0" not in r.sup.session and r.sup.find(provider_call_id="p-old0") is None


# -- issue 8: records that cannot be journaled, ended calls, replays, write-ahead -------------


async def test_a_lone_surrogate_in_speak_is_refused_and_changes_nothing(
    tmp_path: Path, autojump_clock: Any
) -> None:
    async with (
        real_time_limit(WAIT_S),
        rig(tmp_path) as r,
    ):
        record = await r.sup.initiate("+15555550123", "Hello", "conversation")
        call = r.sup.live[record.call_id]
        await call.wait_until(lambda rec: rec.state.connected)
        before = call.record
        with pytest.raises(InvalidInput, match="lone surrogate"):
            await r.sup.speak(record.call_id, "See you \ud83d")
        with pytest.raises(InvalidInput):
            await r.sup.continue_call(record.call_id, "\udc00")
        assert call.record is before and r.sup.session[record.call_id] is before
        await r.sup.speak(record.call_id, "Still here")  # the call goes on
        assert r.sup.get_record(record.call_id).transcript[-1].text == "Still here"  # type: ignore[union-attr]
        await r.sup.end(record.call_id)
        assert await r.ended(record.call_id) == "hangup-bot"
        assert (await r.journal_states(record.call_id))[-1] == "hangup-bot"
    on_disk = replay_file(r.path)
    assert on_disk.bad_lines == [] and not on_disk.live


async def test_a_record_is_encoded_before_it_replaces_the_one_in_memory(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """Whatever text slips past the checks, memory and the journal never disagree."""
    async with real_time_limit(WAIT_S), rig(tmp_path) as r:
        record = await r.sup.initiate("+15555550123", "Hello", "conversation")
        call = r.sup.live[record.call_id]
        before = call.record
        queued = r.sup.journal._send.statistics().current_buffer_used
        # model.apply repairs text itself, so build the poisoned record past it
        poisoned = msgspec.structs.replace(before, transcript=(
            *before.transcript, TranscriptEntry(0, "bot", "cut \ud83d")))
        with pytest.raises(InvalidInput, match="cannot be journaled"):
            r.sup._store(call, poisoned, "call.speaking")
        assert call.record is before and r.sup.session[record.call_id] is before
        assert r.sup.journal._send.statistics().current_buffer_used == queued  # no line
        await r.sup.end(record.call_id)
        assert (await r.journal_states(record.call_id))[-1] == "hangup-bot"


async def test_carrier_transcripts_and_agent_replies_are_repaired_not_stored_raw(
    tmp_path: Path, autojump_clock: Any
) -> None:
    async def agent(params: dict[str, Any]) -> str:
        return "Sure \ud83d"  # an agent's reply cut inside an emoji

    async with real_time_limit(WAIT_S), rig(tmp_path, mock={"callerScript": []}) as r:
        r.sup.set_responder(agent)
        record = await r.sup.initiate("+15555550123", "Hello", "conversation")
        call = r.sup.live[record.call_id]
        await call.wait_until(lambda rec: rec.state.connected)
        await r.sup.deliver(CallSpeech(id="u1", call_id=record.call_id,
                                       text="book \udc00 it", is_final=True))
        done = await call.wait_until(
            lambda rec: any(e.text.startswith("Sure") for e in rec.transcript))
        texts = [e.text for e in done.transcript]
        assert "book \ufffd it" in texts and "Sure \ufffd" in texts
        await r.sup.end(record.call_id)
        assert (await r.journal_states(record.call_id))[-1] == "hangup-bot"
    assert replay_file(r.path).bad_lines == []


class DurableBeforeDial(MockProvider):
    """A carrier that checks, when asked to dial, that the record is already fsynced."""

    disk: RecordingDisk
    checked: list[bool]

    async def dial(self, record: CallRecord) -> str:
        durable = [json.loads(line) for line in self.disk.durable.splitlines()]
        self.checked.append(any(d["callId"] == record.call_id and d["state"] == "initiated"
                                for d in durable))
        return await super().dial(record)


async def test_the_record_of_an_outbound_call_is_fsynced_before_the_dial(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """DESIGN 6, write-ahead: fails if ``initiate`` only queues the record (``append``)."""
    disk = RecordingDisk()
    async with (
        real_time_limit(WAIT_S),
        rig(tmp_path, disk=disk, fsync=True, mock_class=DurableBeforeDial,
            maxConcurrentCalls=3) as r,
    ):
        assert isinstance(r.mock, DurableBeforeDial)
        r.mock.disk, r.mock.checked = disk, []
        for n in range(3):
            await r.sup.initiate(f"+1555555012{n}", "Hi", "notify")
        assert r.mock.checked == [True, True, True]


async def test_1200_ended_calls_stay_findable_in_one_run_after_rotation_and_a_restart(
    tmp_path: Path, autojump_clock: Any
) -> None:
    journal = {"maxBytes": 400_000, "keepFiles": 10}
    count = MAX_ENDED_REMEMBERED + 200
    ids = []
    async with real_time_limit(WAIT_S), rig(tmp_path, journal=journal) as r:
        for _ in range(count):
            record = await r.sup.initiate("+15555550123", "Hi", "conversation")
            await r.sup.end(record.call_id)
            ids.append(record.call_id)
        assert len(r.sup.session) == MAX_ENDED_REMEMBERED  # memory stays bounded
        assert 1 <= r.sup.journal.index.segment < 10  # rotated, nothing dropped yet
        for call_id in ids:
            found = await r.sup.lookup(call_id)
            assert found is not None and found.state is CallState.HANGUP_BOT, call_id
            await r.sup.end(call_id)  # ending an ended call is a success
    replayed = replay_file(r.path, keep_files=10)
    assert replayed.files >= 2 and not replayed.live
    async with real_time_limit(WAIT_S), rig(tmp_path, replayed, journal=journal) as again:
        for call_id in ids:
            found = await again.sup.lookup(call_id)
            assert found is not None and found.state is CallState.HANGUP_BOT, call_id
            await again.sup.end(call_id)
        assert again.mock.dialled == [] and not again.sup.live


@pytest.mark.parametrize("where", ["calls.jsonl", "a rotated file"])
async def test_a_known_carrier_id_is_never_offered_again_after_a_restart(
    tmp_path: Path, autojump_clock: Any, where: str
) -> None:
    journal = {"maxBytes": 20_000, "keepFiles": 3}
    offer = CallInitiated(id="twilio:CA1:offer", provider_call_id="CA1", direction="inbound",
                          from_="+15550001111")
    async with (
        real_time_limit(WAIT_S),
        rig(tmp_path, inboundPolicy="open", journal=journal) as r,
    ):
        first = await r.sup.offer_inbound(offer)
        assert first.decision is InboundDecision.ACCEPT and first.record is not None
        call_id = first.record.call_id
        await r.sup.end(call_id)
        await r.ended(call_id)
        if where == "a rotated file":
            for n in range(80):  # other calls' lines push it out of calls.jsonl
                r.sup.journal.append(end_record(new_record(
                    provider="mock", direction="outbound", from_="+1555", to="+1556",
                    call_id=f"filler{n}", metadata={"pad": "x" * 300}, at=int(time.time() * 1000)),
                    "completed", at=int(time.time() * 1000)))
            await r.sup.journal.flush()
    in_current = call_id.encode() in r.path.read_bytes()
    assert in_current is (where == "calls.jsonl")
    replayed = replay_file(r.path, keep_files=3)
    async with (
        real_time_limit(WAIT_S),
        rig(tmp_path, replayed, inboundPolicy="open", journal=journal) as again,
    ):
        replay = await again.sup.offer_inbound(offer)  # the same signed offer, replayed
        assert replay.duplicate and replay.record is not None
        assert replay.record.call_id == call_id and replay.record.terminal
        assert not again.sup.live and again.mock.dialled == []
        assert (await again.sup.offer_inbound(offer)).duplicate


async def test_a_replayed_offer_for_a_call_recovered_live_joins_it(
    tmp_path: Path, autojump_clock: Any
) -> None:
    now_ms = int(trio.current_time() * 1000)
    live = apply(new_record(provider="mock", direction="inbound", from_="+15550001111",
                            to="+1556", call_id="in1", provider_call_id="CA9", at=now_ms),
                 CallAnswered(id="a", timestamp=now_ms), now_ms)
    replayed = replay_bytes(encode_record(live))

    class StillLive(MockProvider):
        async def fetch_state(self, record: CallRecord) -> RemoteCallState:
            return RemoteCallState(RemoteStatus.LIVE, answered=True)

    async with (
        real_time_limit(WAIT_S),
        rig(tmp_path, replayed, inboundPolicy="open", mock_class=StillLive) as r,
    ):
        assert set(r.sup.live) == {"in1"}
        outcome = await r.sup.offer_inbound(CallInitiated(
            id="o", provider_call_id="CA9", direction="inbound", from_="+15550001111"))
        assert outcome.duplicate and outcome.record is not None
        assert outcome.record.call_id == "in1" and set(r.sup.live) == {"in1"}


async def test_the_end_of_a_call_is_journaled_even_if_its_record_was_poisoned(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """Defence in depth: should bad text ever reach a record, the terminal line is still
    written (repaired), so the call is not left live on disk."""
    async with real_time_limit(WAIT_S), rig(tmp_path) as r:
        record = await r.sup.initiate("+15555550123", "Hello", "conversation")
        call = r.sup.live[record.call_id]
        # a bug's doing
        call.set(apply(call.record, CallSpeaking(id="bad", text="cut \ud83d"), r.sup._now_ms()))
        await r.sup.end(record.call_id)
        assert await r.ended(record.call_id) == "hangup-bot"
        assert (await r.journal_states(record.call_id))[-1] == "hangup-bot"
    final = replay_file(r.path)
    assert not final.live and final.bad_lines == []
