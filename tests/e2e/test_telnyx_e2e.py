"""End to end on Telnyx: a whole in-process daemon (real Unix socket, real HTTP server) against
``FakeTelnyx`` (real REST server, real signed webhooks over loopback).

Waiting is always on a condition: a request reaching the fake, a delivery answered by the
daemon, a call record changing in the supervisor. ``trio.fail_after`` only bounds a test that
would otherwise hang.
"""

from __future__ import annotations

import base64
import logging
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec
import nacl.signing
import pytest
import trio

from voicecall_trio.events import CallAnswered
from voicecall_trio.journal_lines import encode_record
from voicecall_trio.model import CallRecord, CallState, TranscriptEntry, apply, new_record
from voicecall_trio.policy import DEFAULT_GREETING
from voicecall_trio.providers.telnyx.rest import command_id
from voicecall_trio.providers.telnyx.shell import TelnyxProvider
from voicecall_trio.rpc.protocol import RpcError
from voicecall_trio.testing import RunningDaemon, running_daemon
from voicecall_trio.testing.fake_telnyx import Callee, FakeTelnyx

FROM = "+15550001234"
CALLEE = "+14155550100"
CALLER = "+14155551234"
API_KEY = "KEY"
LIMIT_S = 15  # bounds a hanging test; never a synchronisation


@pytest.fixture
def store() -> Iterator[Path]:
    """A short store path: the control socket lives in it (108-byte limit)."""
    path = Path(tempfile.mkdtemp(prefix="vct", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def telnyx_config(fake: FakeTelnyx, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "provider": "telnyx",
        "fromNumber": FROM,
        "telnyx": {
            "apiKey": API_KEY,
            "connectionId": fake.connection_id,
            "publicKey": fake.public_key,
            "apiBaseUrl": fake.url,
        },
        "outbound": {"notifyHangupDelaySec": 0.1},
        "shutdownGraceSeconds": 2,
    }
    config.update(overrides)
    return config


@asynccontextmanager
async def in_process_daemon(
    overrides: dict[str, Any], *, store: Path
) -> AsyncIterator[RunningDaemon]:
    async with running_daemon(overrides, store=store) as daemon:
        yield daemon


@asynccontextmanager
async def telnyx_daemon(
    fake: FakeTelnyx, store: Path, **overrides: Any
) -> AsyncIterator[RunningDaemon]:
    """The daemon on port 0; once it listens, the provider and the fake learn its URL."""
    async with in_process_daemon(telnyx_config(fake, **overrides), store=store) as daemon:
        provider = daemon.handle.provider
        assert isinstance(provider, TelnyxProvider)
        provider.set_public_url(daemon.base_url)  # what a tunnel would report
        fake.webhook_url = daemon.webhook_url  # the Call Control App's webhook URL
        yield daemon


async def wait_record(
    daemon: RunningDaemon, call_id: str, predicate: Callable[[CallRecord], bool]
) -> CallRecord:
    """Wait on the supervisor until the call's record satisfies ``predicate``."""
    supervisor = daemon.handle.supervisor
    call = supervisor.live.get(call_id)
    if call is not None:
        return await call.wait_until(predicate)
    record = supervisor.get_record(call_id)
    assert record is not None and predicate(record), record
    return record


async def status_of(daemon: RunningDaemon, call_id: str) -> dict[str, Any]:
    result = await daemon.rpc("voicecall.status", {"callId": call_id})
    assert result["found"] is True
    call = result["call"]
    assert isinstance(call, dict)
    return call


def texts(call: dict[str, Any], speaker: str) -> list[str]:
    return [e["text"] for e in call.get("transcript", []) if e["speaker"] == speaker]


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# -- outbound ------------------------------------------------------------------------------


async def test_notify_call_dials_speaks_and_hangs_up(store: Path) -> None:
    with trio.fail_after(LIMIT_S):
        async with FakeTelnyx(api_key=API_KEY) as fake, telnyx_daemon(fake, store) as d:
            result = await d.rpc("voicecall.initiate", {
                "to": CALLEE, "message": "Your parcel arrives today.", "mode": "notify"})
            call_id = result["callId"]
            assert result["initiated"] is True

            create = await fake.wait_request("create")
            assert create.authorized
            assert create.json["connection_id"] == "conn"
            assert create.json["to"] == CALLEE
            assert create.json["from"] == FROM
            assert create.json["webhook_url"] == d.webhook_url
            assert create.json["webhook_url_method"] == "POST"
            assert create.json["client_state"] == b64(call_id)
            assert create.json["timeout_secs"] == 30
            call = fake.find_call(call_id)
            assert call is not None
            ccid = call.call_control_id

            speak = await fake.wait_request("speak", ccid)
            assert speak.json["payload"] == "Your parcel arrives today."
            assert speak.json["payload_type"] == "text"
            assert speak.json["client_state"] == b64(call_id)
            hangup = await fake.wait_request("hangup", ccid)
            assert hangup.command_id == command_id(call_id, "hangup")
            delivered = await fake.wait_delivery("call.hangup", ccid)
            assert delivered.status == 200

            final = await status_of(d, call_id)
            assert final["state"] == "hangup-bot"
            assert final["providerCallId"] == ccid
            assert final["answeredAt"] is not None
            assert texts(final, "bot") == ["Your parcel arrives today."]
            # in this order, each once; no transcription in notify mode
            assert [r.action for r in fake.requests] == ["create", "speak", "hangup"]
            assert all(r.authorized and r.status == 200 for r in fake.requests)
            assert [x.event_type for x in fake.deliveries] == [
                "call.initiated", "call.answered", "call.speak.started",
                "call.speak.ended", "call.hangup"]
            assert all(x.status == 200 for x in fake.deliveries)


async def test_conversation_continue_returns_the_callees_words(store: Path) -> None:
    script = ["Hi, who is calling?", "Tuesday at nine works for me."]
    with trio.fail_after(LIMIT_S):
        async with (
            FakeTelnyx(callee=Callee(script=script, interim=True)) as fake,
            telnyx_daemon(fake, store) as d,
        ):
            call_id = (await d.rpc("voicecall.initiate", {
                "to": CALLEE, "message": "Hello, this is your assistant.",
                "mode": "conversation"}))["callId"]
            # the greeting is spoken with transcription on; the callee answers it
            await wait_record(d, call_id, lambda r: any(
                e.speaker == "user" for e in r.transcript))
            reply = await d.rpc("voicecall.continue", {
                "callId": call_id, "message": "When can we meet?"})
            assert reply == {"success": True, "transcript": "Tuesday at nine works for me."}

            ccid = (await fake.wait_call(call_id)).call_control_id
            assert len(fake.requests_for("transcription_start", ccid)) == 1
            start = fake.requests_for("transcription_start", ccid)[0]
            assert start.json["transcription_tracks"] == "inbound"
            assert [r.json["payload"] for r in fake.requests_for("speak", ccid)] == [
                "Hello, this is your assistant.", "When can we meet?"]

            await d.rpc("voicecall.end", {"callId": call_id})
            await fake.wait_delivery("call.hangup", ccid)
            final = await status_of(d, call_id)
            assert final["state"] == "hangup-bot"
            assert texts(final, "user") == script
            assert texts(final, "bot") == ["Hello, this is your assistant.",
                                           "When can we meet?"]
            assert len(fake.requests_for("hangup", ccid)) == 1


async def test_callee_hangup_ends_the_call_as_hangup_user(store: Path) -> None:
    with trio.fail_after(LIMIT_S):
        async with FakeTelnyx() as fake, telnyx_daemon(fake, store) as d:
            call_id = (await d.rpc("voicecall.initiate", {
                "to": CALLEE, "message": "Hello there.", "mode": "conversation"}))["callId"]
            ccid = (await fake.wait_call(call_id)).call_control_id
            await fake.wait_request("transcription_start", ccid)
            live = d.handle.supervisor.live[call_id]
            fake.callee_hangup(ccid)
            record = await wait_record(d, call_id, lambda r: r.terminal)
            assert record.end_reason == "hangup-user"
            delivered = await fake.wait_delivery("call.hangup", ccid)
            assert delivered.status == 200
            hangup = msgspec.json.decode(delivered.body)["data"]["payload"]
            assert (hangup["hangup_cause"], hangup["hangup_source"]) == (
                "normal_clearing", "callee")
            await live.task_done.wait()
            assert (await status_of(d, call_id))["state"] == "hangup-user"
            assert fake.requests_for("hangup") == []  # the carrier ended it: no hangup sent
            assert d.handle.supervisor.active_count == 0


@pytest.mark.parametrize(("outcome", "reason"), [("busy", "busy"),
                                                 ("no-answer", "no-answer"),
                                                 ("reject", "failed")])
async def test_unanswered_outcomes_end_the_call(store: Path, outcome: Any, reason: str
                                                ) -> None:
    with trio.fail_after(LIMIT_S):
        async with (
            FakeTelnyx(callee=Callee(outcome=outcome)) as fake,
            telnyx_daemon(fake, store) as d,
        ):
            call_id = (await d.rpc("voicecall.initiate", {
                "to": CALLEE, "message": "Hi", "mode": "notify"}))["callId"]
            record = await wait_record(d, call_id, lambda r: r.terminal)
            assert record.end_reason == reason
            assert record.answered_at is None
            assert [r.action for r in fake.requests] == ["create"]


async def test_delayed_answer_on_command_and_out_of_order_initiated(store: Path) -> None:
    with trio.fail_after(LIMIT_S):
        async with (
            FakeTelnyx(callee=Callee(answer_delay=None)) as fake,
            telnyx_daemon(fake, store) as d,
        ):
            fake.hold_next("call.initiated")  # delivered only after call.answered
            call_id = (await d.rpc("voicecall.initiate", {
                "to": CALLEE, "message": "Late news.", "mode": "notify"}))["callId"]
            call = await fake.wait_call(call_id)
            assert fake.deliveries == []  # ringing: call.initiated is held back
            fake.answer(call.call_control_id)
            await fake.wait_request("hangup", call.call_control_id)
            final = await status_of(d, call_id)
            assert final["state"] == "hangup-bot"
            assert [x.event_type for x in fake.deliveries][:2] == [
                "call.answered", "call.initiated"]


async def test_late_speak_started_does_not_rewind_a_listening_call(store: Path) -> None:
    with trio.fail_after(LIMIT_S):
        async with FakeTelnyx() as fake, telnyx_daemon(fake, store) as d:
            fake.hold_next("call.speak.started")  # arrives after call.speak.ended
            call_id = (await d.rpc("voicecall.initiate", {
                "to": CALLEE, "message": "Hello.", "mode": "conversation"}))["callId"]
            ccid = (await fake.wait_call(call_id)).call_control_id
            await fake.wait_delivery("call.speak.started", ccid)
            await fake.wait_delivery("call.transcription", ccid)
            record = await wait_record(d, call_id, lambda r: any(
                e.speaker == "user" for e in r.transcript))
            assert record.state is CallState.LISTENING
            assert [x.event_type for x in fake.deliveries][2:4] == [
                "call.speak.ended", "call.speak.started"]


async def test_speak_5xx_is_retried_with_the_same_command_id(store: Path) -> None:
    with trio.fail_after(LIMIT_S):
        async with FakeTelnyx() as fake, telnyx_daemon(fake, store) as d:
            fake.fail_next(1, status=503, action="speak")
            call_id = (await d.rpc("voicecall.initiate", {
                "to": CALLEE, "message": "Retry me.", "mode": "notify"}))["callId"]
            ccid = (await fake.wait_call(call_id)).call_control_id
            await fake.wait_request("hangup", ccid)
            speaks = fake.requests_for("speak", ccid)
            assert [r.status for r in speaks] == [503, 200]
            assert len({r.command_id for r in speaks}) == 1
            assert speaks[0].command_id is not None
            assert len(fake.deliveries_for("call.speak.started", ccid)) == 1
            final = await status_of(d, call_id)
            assert final["state"] == "hangup-bot"
            assert texts(final, "bot") == ["Retry me."]


async def test_create_call_5xx_is_not_retried(store: Path) -> None:
    with trio.fail_after(LIMIT_S):
        async with FakeTelnyx() as fake, telnyx_daemon(fake, store) as d:
            fake.fail_next(1, status=500, action="create")
            with pytest.raises(RpcError) as caught:
                await d.rpc("voicecall.initiate", {"to": CALLEE, "message": "Hi"})
            assert caught.value.code == -32004
            assert [(r.action, r.status) for r in fake.requests] == [("create", 500)]
            assert fake.calls == {}
            assert d.handle.supervisor.active_count == 0


async def test_wrong_api_key_is_a_provider_error(store: Path) -> None:
    with trio.fail_after(LIMIT_S):
        async with FakeTelnyx(api_key="OTHER") as fake, telnyx_daemon(fake, store) as d:
            with pytest.raises(RpcError) as caught:
                await d.rpc("voicecall.initiate", {"to": CALLEE, "message": "Hi"})
            assert caught.value.code == -32004
            assert "10009" in caught.value.message
            assert [(r.authorized, r.status) for r in fake.requests] == [(False, 401)]


# -- inbound -------------------------------------------------------------------------------


@pytest.mark.parametrize("quirk", ["duplicate", "retry"])
async def test_inbound_open_is_answered_once_and_greeted(store: Path, quirk: str) -> None:
    with trio.fail_after(LIMIT_S):
        async with (
            FakeTelnyx() as fake,
            telnyx_daemon(fake, store, inboundPolicy="open") as d,
        ):
            if quirk == "duplicate":
                fake.duplicate_next("call.initiated")  # the same signed bytes twice
            else:
                fake.retry_next("call.initiated")  # same event id, new signature, later
            ccid = fake.start_inbound(CALLER, FROM)
            await fake.wait_delivery("call.initiated", ccid, count=2)
            speak = await fake.wait_request("speak", ccid)
            assert speak.json["payload"] == DEFAULT_GREETING
            await fake.wait_request("transcription_start", ccid)

            answers = fake.requests_for("answer", ccid)
            assert len(answers) == 1
            call = fake.calls[ccid]
            assert call.answered and call.call_id is not None
            assert answers[0].json["client_state"] == b64(call.call_id)
            assert fake.requests_for("reject") == []
            offers = fake.deliveries_for("call.initiated", ccid)
            assert [x.status for x in offers] == [200, 200]
            assert [x.attempt for x in offers] == ([1, 1] if quirk == "duplicate" else [1, 2])

            record = await wait_record(d, call.call_id, lambda r: r.state.connected)
            assert record.direction == "inbound"
            assert (record.from_, record.to) == (CALLER, FROM)
            status = await d.rpc("voicecall.status", {})
            assert [c["callId"] for c in status["calls"]] == [call.call_id]


async def test_inbound_caller_talks_then_hangs_up(store: Path) -> None:
    with trio.fail_after(LIMIT_S):
        async with (
            FakeTelnyx() as fake,
            telnyx_daemon(fake, store, inboundPolicy="allowlist", allowFrom=[CALLER],
                          inboundGreeting="Assistant here.") as d,
        ):
            ccid = fake.start_inbound(CALLER, FROM, script=["Is my table booked?"])
            await fake.wait_delivery("call.transcription", ccid)
            call_id = fake.calls[ccid].call_id
            assert call_id is not None
            fake.send_event(ccid, "call.dtmf.received", {"digit": "5"})
            await fake.wait_delivery("call.dtmf.received", ccid)
            fake.callee_hangup(ccid)
            record = await wait_record(d, call_id, lambda r: r.terminal)
            assert record.end_reason == "hangup-user"
            assert [(e.speaker, e.text) for e in record.transcript] == [
                ("bot", "Assistant here."), ("user", "Is my table booked?")]
            assert record.metadata.get("dtmf") == "5"
            assert fake.calls[ccid].hangup_source == "caller"
            assert fake.requests_for("hangup") == []


async def test_inbound_answer_refused_by_telnyx_ends_as_error_and_hangs_up(
    store: Path
) -> None:
    with trio.fail_after(LIMIT_S):
        async with (
            FakeTelnyx() as fake,
            telnyx_daemon(fake, store, inboundPolicy="open") as d,
        ):
            fake.fail_next(1, status=422, action="answer")
            ccid = fake.start_inbound(CALLER, FROM)
            await fake.wait_delivery("call.hangup", ccid)
            assert [(r.action, r.status) for r in fake.requests] == [
                ("answer", 422), ("hangup", 200)]
            (record,) = d.handle.supervisor.session.values()
            assert record.state is CallState.ERROR
            assert "answer failed" in record.metadata["lastError"]


@pytest.mark.parametrize(("policy", "extra"), [("disabled", {}),
                                               ("allowlist", {"allowFrom": ["+15559990000"]})])
async def test_inbound_refused_is_rejected_exactly_once(
    store: Path, policy: str, extra: dict[str, Any]
) -> None:
    with trio.fail_after(LIMIT_S):
        async with (
            FakeTelnyx() as fake,
            telnyx_daemon(fake, store, inboundPolicy=policy, **extra) as d,
        ):
            fake.duplicate_next("call.initiated")
            fake.retry_next("call.initiated")
            ccid = fake.start_inbound(CALLER, FROM)
            await fake.wait_delivery("call.hangup", ccid)
            await fake.wait_delivery("call.initiated", ccid, count=3)
            assert [r.action for r in fake.requests] == ["reject"]
            assert fake.requests[0].json["cause"] == "CALL_REJECTED"
            assert all(x.status == 200 for x in fake.deliveries)
            assert (await d.rpc("voicecall.status", {}))["calls"] == []
            assert d.handle.supervisor.active_count == 0


# -- webhook signatures through the real HTTP server --------------------------------------


async def test_bad_signatures_get_401_and_the_daemon_stays_healthy(
    store: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="voicecall")
    with trio.fail_after(LIMIT_S):
        async with (
            FakeTelnyx() as fake,
            telnyx_daemon(fake, store, inboundPolicy="open") as d,
        ):
            fake.add_call("v3:forged", direction="inbound", from_=CALLER, to=FROM,
                          answered=False)
            body = fake.event_body("v3:forged", "call.initiated", {
                "direction": "incoming", "state": "parked", "from": CALLER, "to": FROM})
            now = int(time.time())
            other = nacl.signing.SigningKey.generate()
            good = fake.sign(body, now)
            altered = bytearray(body)
            altered[body.index(b"+14155551234") + 1] ^= 0x01  # one byte of the caller
            cases: dict[str, tuple[bytes, dict[str, str]]] = {
                "other key": (body, fake.sign(body, now, key=other)),
                "400 s old": (body, fake.sign(body, now - 400)),
                "400 s ahead": (body, fake.sign(body, now + 400)),
                "body altered": (bytes(altered), good),
                "malformed base64": (body, {**good, "telnyx-signature-ed25519": "%%not-b64%%"}),
                "truncated signature": (body, {
                    **good, "telnyx-signature-ed25519": good["telnyx-signature-ed25519"][:40]}),
                "timestamp not a number": (body, {**good, "telnyx-timestamp": "12ab"}),
                "no signature header": (body, {"content-type": "application/json",
                                               "telnyx-timestamp": str(now)}),
            }
            for name, (payload, headers) in cases.items():
                caplog.clear()
                response = await fake.post_webhook(payload, headers)
                assert response.status_code == 401, name
                refused = [r for r in caplog.records if "refused" in r.getMessage()]
                assert len(refused) == 1, (name, [r.getMessage() for r in caplog.records])
                health = await d.rpc("daemon.health")
                assert health["ok"] is True and health["activeCalls"] == 0, name
            assert fake.requests == []  # nothing forged reached the carrier API
            assert (await d.rpc("voicecall.status", {}))["calls"] == []

            # the genuine delivery still works afterwards, once
            response = await fake.post_webhook(body, good)
            assert response.status_code == 200
            again = await fake.post_webhook(body, good)
            assert again.status_code == 200 and again.json()["duplicate"] is True
            await fake.wait_request("answer", "v3:forged")
            assert len(fake.requests_for("answer")) == 1


async def test_key_forms_der_and_pem_are_accepted(store: Path) -> None:
    with trio.fail_after(LIMIT_S):
        async with FakeTelnyx() as fake:
            for form in (fake.public_key_der, fake.public_key_pem):
                config = telnyx_config(fake, inboundPolicy="disabled")
                config["telnyx"] = {**config["telnyx"], "publicKey": form}
                async with in_process_daemon(config, store=store) as d:
                    fake.webhook_url = d.webhook_url
                    ccid = fake.start_inbound(CALLER, FROM)
                    assert (await fake.wait_delivery("call.hangup", ccid)).status == 200
                    assert fake.deliveries_for("call.initiated", ccid)[0].status == 200


# -- restart reconciliation ---------------------------------------------------------------


def write_journal(store: Path, record: CallRecord) -> None:
    store.mkdir(parents=True, exist_ok=True)
    (store / "calls.jsonl").write_bytes(encode_record(record))


def write_live_call(store: Path, ccid: str, *, mode: str = "conversation") -> CallRecord:
    """The journal as a daemon killed mid-call leaves it: an answered, listening call."""
    now = int(time.time() * 1000)
    record = new_record(provider="telnyx", direction="outbound", from_=FROM, to=CALLEE,
                        provider_call_id=ccid, at=now - 2000,
                        metadata={"mode": mode, "initialMessage": "Hello from before.",
                                  "initialSpoken": True}, call_id=str(uuid.uuid4()))
    record = msgspec.structs.replace(
        record, state=CallState.LISTENING, answered_at=now - 1000,
        transcript=(TranscriptEntry(now - 900, "bot", "Hello from before."),))
    store.mkdir(parents=True, exist_ok=True)
    (store / "calls.jsonl").write_bytes(encode_record(record))
    return record


async def test_restart_resumes_a_call_the_carrier_still_has(store: Path) -> None:
    with trio.fail_after(LIMIT_S):
        async with FakeTelnyx(callee=Callee(script=["I am still here."])) as fake:
            record = write_live_call(store, "v3:alive")
            fake.add_call("v3:alive", from_=FROM, to=CALLEE, call_id=record.call_id,
                          callee=fake.callee)
            async with telnyx_daemon(fake, store) as d:
                assert [(r.method, r.action) for r in fake.requests] == [("GET", "get")]
                assert fake.requests[0].call_control_id == "v3:alive"
                status = await d.rpc("voicecall.status", {})
                assert [(c["callId"], c["state"]) for c in status["calls"]] == [
                    (record.call_id, "listening")]

                reply = await d.rpc("voicecall.continue", {
                    "callId": record.call_id, "message": "Are you there?"})
                assert reply["transcript"] == "I am still here."
                assert fake.calls["v3:alive"].spoken == ["Are you there?"]  # no re-greeting
                await d.rpc("voicecall.end", {"callId": record.call_id})
                await fake.wait_delivery("call.hangup", "v3:alive")
                assert (await status_of(d, record.call_id))["state"] == "hangup-bot"
            assert fake.requests_for("create") == []


async def test_restart_ends_a_call_the_carrier_has_ended(store: Path) -> None:
    with trio.fail_after(LIMIT_S):
        async with FakeTelnyx() as fake:
            record = write_live_call(store, "v3:gone")
            fake.add_call("v3:gone", call_id=record.call_id, alive=False)
            async with telnyx_daemon(fake, store) as d:
                assert [r.action for r in fake.requests] == ["get"]
                final = await status_of(d, record.call_id)
                assert final["state"] in ("completed", "hangup-user")
                assert final["endedAt"] is not None
                assert (await d.rpc("voicecall.status", {}))["calls"][0]["state"] == (
                    final["state"])
                assert d.handle.supervisor.active_count == 0
            assert [r.action for r in fake.requests] == ["get"]  # no hangup, no dial


async def test_restart_ends_a_call_the_carrier_does_not_know(store: Path) -> None:
    with trio.fail_after(LIMIT_S):
        async with FakeTelnyx() as fake:
            record = write_live_call(store, "v3:unknown")
            async with telnyx_daemon(fake, store) as d:
                assert [(r.action, r.status) for r in fake.requests] == [("get", 404)]
                final = await status_of(d, record.call_id)
                assert final["state"] in ("completed", "error")
            assert fake.requests_for("create") == []


# -- the daemon's clock, not the carrier's (issue 8, item 4) -------------------------------

@pytest.mark.parametrize("skew_s", [-360.0, -3600.0, 3600.0])
async def test_a_skewed_occurred_at_leaves_the_answered_call_live(store: Path, skew_s: float
                                                                  ) -> None:
    """Correctly signed events whose ``occurred_at`` is 6 min / 1 h old (a delayed retry) or
    1 h ahead: the answered call stays live, ``answeredAt`` is the daemon's time."""
    with trio.fail_after(LIMIT_S):
        async with (
            FakeTelnyx(api_key=API_KEY, clock_skew_s=skew_s) as fake,
            telnyx_daemon(fake, store) as d,
        ):
            call_id = (await d.rpc("voicecall.initiate", {
                "to": CALLEE, "message": "Hello there.", "mode": "conversation"}))["callId"]
            ccid = (await fake.wait_call(call_id)).call_control_id
            answered = await fake.wait_delivery("call.answered", ccid)
            assert answered.status == 200
            # the daemon acted on the answer (greeting spoken, transcription started), or
            # ended the call at once when a timer counted from the carrier's clock
            await fake.wait_for(lambda: bool(fake.requests_for("transcription_start", ccid)
                                             or fake.requests_for("hangup", ccid)))
            call = await status_of(d, call_id)
            assert call["state"] not in ("timeout", "hangup-bot", "error"), call
            assert abs(call["answeredAt"] - time.time() * 1000) < 1000
            assert abs(call["metadata"]["carrierAnsweredAt"]
                       - (call["answeredAt"] + skew_s * 1000)) < 2000
            assert fake.requests_for("hangup", ccid) == []
            await d.rpc("voicecall.end", {"callId": call_id})
            await fake.wait_delivery("call.hangup", ccid)
            assert (await status_of(d, call_id))["endReason"] == "hangup-bot"


async def test_restart_keeps_a_call_answered_recently_by_a_delayed_event(store: Path) -> None:
    """Killed mid-call: the journal holds a call the daemon answered 10 s ago from a Telnyx
    event whose ``occurred_at`` was 6 minutes old (a delayed retry; maxDurationSeconds is
    300). After the restart the call is resumed, not ended as ``timeout``."""
    now = int(time.time() * 1000)
    record = new_record(provider="telnyx", direction="outbound", from_=FROM, to=CALLEE,
                        provider_call_id="v3:delayed", at=now - 20_000,
                        metadata={"mode": "conversation", "initialSpoken": True},
                            call_id=str(uuid.uuid4()))
    record = apply(record, CallAnswered(id="late", timestamp=now - 370_000), now - 10_000)
    write_journal(store, record)
    with trio.fail_after(LIMIT_S):
        async with FakeTelnyx() as fake:
            fake.add_call("v3:delayed", from_=FROM, to=CALLEE, call_id=record.call_id,
                          callee=fake.callee)
            async with telnyx_daemon(fake, store) as d:
                status = await d.rpc("voicecall.status", {})
                assert [c["callId"] for c in status["calls"]] == [record.call_id]
                call = await status_of(d, record.call_id)
                assert call["state"] == "answered" and call["answeredAt"] == now - 10_000
                assert fake.requests_for("hangup") == []
                await d.rpc("voicecall.end", {"callId": record.call_id})
                await fake.wait_delivery("call.hangup", "v3:delayed")
                assert (await status_of(d, record.call_id))["endReason"] == "hangup-bot"
            assert fake.requests_for("create") == []
