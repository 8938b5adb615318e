"""The shared test kit's small pieces (FakeDirectory, FakeProvider) do what their docs say."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from voicecall_trio.events import CallAnswered, CallEnded, CallInitiated
from voicecall_trio.model import CallRecord, CallState, new_record
from voicecall_trio.providers.base import (
    InboundDecision,
    RemoteCallState,
    RemoteStatus,
    WebhookRequest,
    WebhookResponse,
)
from voicecall_trio.testing import FakeDirectory, FakeProvider

AT = 1_800_000_000_000


def offer(ccid: str = "CA1", event_id: str = "ev-offer") -> CallInitiated:
    return CallInitiated(id=event_id, call_id=None, provider_call_id=ccid, timestamp=AT,
                         direction="inbound", from_="+15550001111", to="+15550002222")


def outbound(ccid: str | None = "CA9") -> CallRecord:
    return new_record(provider="twilio", direction="outbound", from_="+15550002222",
                      to="+15550001111", provider_call_id=ccid, call_id="out-1", at=AT)


async def test_deliver_finds_the_call_by_call_id_then_carrier_id_and_stamps_its_clock() -> None:
    directory = FakeDirectory(outbound(), clock=lambda: AT + 5)
    by_id = await directory.deliver(CallAnswered(id="e1", call_id="out-1", timestamp=0))
    assert by_id is not None and by_id.state is CallState.ANSWERED and by_id.answered_at == AT + 5
    by_carrier = await directory.deliver(CallEnded(id="e2", call_id="gone", provider_call_id="CA9",
                                                   timestamp=0, reason="completed"))
    assert by_carrier is not None and by_carrier.terminal
    assert await directory.deliver(CallAnswered(id="e3", call_id=None, timestamp=0)) is None
    assert directory.kinds() == ["CallAnswered", "CallEnded", "CallAnswered"]


async def test_an_accepted_offer_is_a_new_inbound_call_once_per_carrier_id() -> None:
    directory = FakeDirectory(provider="telnyx", metadata={"initialMessage": "Hi"},
                              clock=lambda: AT, ids=lambda: "in-1")
    first = await directory.offer_inbound(offer())
    assert first.decision is InboundDecision.ACCEPT and not first.duplicate
    assert first.record is not None and first.record.call_id == "in-1"
    assert (first.record.provider, first.record.metadata) == ("telnyx", {"initialMessage": "Hi"})
    assert "ev-offer" in first.record.processed_event_ids  # the offer is applied, as upstream
    again = await directory.offer_inbound(offer(event_id="ev-offer-2"))
    assert again.duplicate and again.record == first.record and len(directory.records) == 1
    assert len(directory.offers) == 2


async def test_a_rejected_offer_stays_rejected_and_a_known_call_is_a_duplicate() -> None:
    directory = FakeDirectory(outbound(), accept=False)
    for duplicate in (False, True):
        outcome = await directory.offer_inbound(offer("CA1"))
        assert (outcome.decision, outcome.record, outcome.duplicate) == (
            InboundDecision.REJECT, None, duplicate)
    known = await directory.offer_inbound(offer("CA9"))
    assert known.decision is InboundDecision.ACCEPT and known.duplicate
    assert directory.records.keys() == {"out-1"}


async def test_every_write_goes_through_store() -> None:
    written: list[str] = []

    class Checked(FakeDirectory):
        def store(self, record: CallRecord) -> CallRecord:
            written.append(record.call_id)
            return super().store(record)

    directory = Checked(outbound(), ids=lambda: "in-1")
    await directory.deliver(CallAnswered(id="e1", call_id="out-1", timestamp=0))
    await directory.offer_inbound(offer())
    assert written == ["out-1", "in-1"]  # the record passed in is held, not stored


async def test_deliver_delay_is_on_the_trio_clock(autojump_clock: trio.testing.MockClock) -> None:
    directory = FakeDirectory(outbound(), deliver_delay=2.0)
    start = trio.current_time()
    await directory.deliver(CallAnswered(id="e1", call_id="out-1", timestamp=0))
    assert trio.current_time() - start == pytest.approx(2.0)


def request(body: bytes) -> WebhookRequest:
    return WebhookRequest("POST", "/voice/webhook", "", {"x-sig": "s"}, body)


async def test_fake_provider_obeys_its_reply_and_records_what_it_was_asked() -> None:
    def reply(req: WebhookRequest) -> WebhookResponse:
        if req.body == b"boom":
            raise RuntimeError("carrier module bug")
        return WebhookResponse(202, req.body)

    provider = FakeProvider(reply)
    directory = FakeDirectory()
    assert (await provider.handle_webhook(request(b"a"), directory)).body == b"a"
    with pytest.raises(RuntimeError):
        await provider.handle_webhook(request(b"boom"), directory)
    assert [r.body for r in provider.seen] == [b"a", b"boom"]
    record = outbound()
    assert [await provider.dial(record), await provider.dial(record)] == ["fake-1", "fake-2"]
    await provider.speak(record, "Hello", listen=True)
    await provider.hangup(record)
    assert provider.spoken == [(record, "Hello", True)] and provider.hung_up == [record]
    provider.remote = RemoteCallState(RemoteStatus.LIVE)
    assert (await provider.fetch_state(record)).status is RemoteStatus.LIVE
    assert (await FakeProvider().handle_webhook(request(b""), directory)).body == b"<Response/>"


async def test_fake_provider_holds_webhooks_until_released() -> None:
    provider = FakeProvider(hold=trio.Event())
    answers: list[int] = []

    async def one() -> None:
        answers.append((await provider.handle_webhook(request(b"x"), FakeDirectory())).status)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(one)
        await trio.testing.wait_all_tasks_blocked()
        assert len(provider.seen) == 1 and answers == []
        assert provider.hold is not None
        provider.hold.set()
    assert answers == [200]
    async with trio.open_nursery() as nursery:
        await nursery.start(provider.run, FakeDirectory())  # ready at once
        nursery.cancel_scope.cancel()
