"""The shared test kit: its small pieces do what their docs say, and compose in memory."""

from __future__ import annotations

import time
import uuid

import httpx
import msgspec
import pytest
import trio
import trio.testing

from voicecall_trio.config import build_config
from voicecall_trio.events import CallAnswered, CallEnded, CallInitiated
from voicecall_trio.model import CallRecord, CallState, new_record
from voicecall_trio.providers import (
    InboundDecision,
    RemoteCallState,
    RemoteStatus,
    WebhookRequest,
    WebhookResponse,
)
from voicecall_trio.providers.telnyx.shell import TelnyxProvider
from voicecall_trio.providers.twilio.shell import TwilioProvider
from voicecall_trio.testing import FakeDirectory, FakeProvider, FakeTelnyx, FakeTwilio
from voicecall_trio.testing.fake_telnyx import Callee as TelnyxCallee
from voicecall_trio.testing.fake_twilio import Callee
from voicecall_trio.web import create_app

AT = 1_800_000_000_000
VIRTUAL_BOUND_S = 120  # on the autojump clock: a call that hangs fails instead of waiting forever


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


async def test_a_twilio_call_runs_in_memory_on_the_autojump_clock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """FakeTwilio, the real Twilio shell and the real webhook gate, wired in memory: no socket,
    so the fake's ringing and speaking take virtual time only."""
    fake = FakeTwilio(time_scale=1.0, default_callee=Callee(script=("Tomorrow at nine",)))
    config = build_config({
        "provider": "twilio", "fromNumber": "+15550001111",
        "twilio": {"accountSid": fake.account_sid, "authToken": fake.auth_token,
                   "apiBaseUrl": "http://twilio.test"},
        "publicUrl": "https://voice.example.com/voice/webhook",
    }, {})
    record = new_record(provider="twilio", direction="outbound", from_="+15550001111",
                        to="+15550002222", metadata={"mode": "conversation",
                                                     "initialMessage": "Your package arrived."},
                                                         call_id=str(uuid.uuid4()),
                                                             at=int(time.time() * 1000))
    directory = FakeDirectory(record)
    async with httpx.AsyncClient(transport=fake.transport()) as http:
        provider = TwilioProvider(config, http)
        app = create_app(config, provider, directory)
        with trio.fail_after(VIRTUAL_BOUND_S):
            async with fake.in_memory("http://twilio.test", deliver_to=app):
                start = trio.current_time()
                sid = await provider.dial(record)
                placed = directory.add(msgspec.structs.replace(  # as the supervisor records it
                    directory.records[record.call_id], provider_call_id=sid))
                call = fake.calls[sid]
                await call.wait_for(lambda c: c.replies == ["Tomorrow at nine"])
                assert trio.current_time() - start >= 2.0  # Callee.ring_s, on the virtual clock
                await provider.hangup(placed)
                await call.done.wait()
    assert call.said[0] == "Your package arrived." and call.ended_by == "rest"
    final = directory.records[record.call_id]
    assert final.terminal and [t.text for t in final.transcript][-1] == "Tomorrow at nine"
    assert all(d.ok for d in fake.deliveries) and fake.deliveries[0].kind == "status"


async def test_a_telnyx_call_runs_in_memory_on_the_autojump_clock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeTelnyx(callee=TelnyxCallee(answer_delay=3.0, script=("Yes, that works.",)))
    record = new_record(provider="telnyx", direction="outbound", from_="+15550001111",
                        to="+15550002222", metadata={"initialMessage": "Hi"},
                            call_id=str(uuid.uuid4()), at=int(time.time() * 1000))
    directory = FakeDirectory(record)
    config = build_config({
        "provider": "telnyx", "fromNumber": "+15550001111",
        "telnyx": {"apiKey": fake.api_key, "connectionId": fake.connection_id,
                   "publicKey": fake.public_key, "apiBaseUrl": "http://telnyx.test/v2"},
        "publicUrl": "https://voice.example.com/voice/webhook",
    }, {})
    async with httpx.AsyncClient(transport=fake.transport()) as http:
        provider = TelnyxProvider(config, http)
        app = create_app(config, provider, directory)
        with trio.fail_after(VIRTUAL_BOUND_S):
            async with fake.in_memory("http://telnyx.test", deliver_to=app):
                assert fake.url == "http://telnyx.test/v2"
                start = trio.current_time()
                ccid = await provider.dial(record)
                placed = directory.add(msgspec.structs.replace(
                    directory.records[record.call_id], provider_call_id=ccid))
                await fake.wait_delivery("call.answered", ccid)
                assert trio.current_time() - start >= 3.0  # answer_delay, on the virtual clock
                await provider.speak(placed, "Hi", listen=True)
                await fake.wait_delivery("call.transcription", ccid)
                await provider.hangup(placed)
                await fake.wait_delivery("call.hangup", ccid)
    final = directory.records[record.call_id]
    assert final.terminal and [t.text for t in final.transcript][-1] == "Yes, that works."
    assert all(d.status == 200 for d in fake.deliveries)
