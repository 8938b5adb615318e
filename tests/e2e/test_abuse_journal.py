"""Abuse of the supervisor's records and the journal, end to end (issue 8, items 5, 7, 8, 9).

Each test runs a whole in-process daemon (real Unix socket, real HTTP server on loopback port 0,
the shipped carrier simulators where a carrier is involved), abuses it, and checks that
``voicecall status`` (and, with a carrier, a signed webhook) still answers while it does.
Waits are on conditions; ``trio.fail_after`` only turns a hang into a failure.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from rigs import FlakyDisk

from voicecall_trio.providers.telnyx.shell import TelnyxProvider
from voicecall_trio.replay import replay_file
from voicecall_trio.rpc.protocol import RpcError
from voicecall_trio.testing import RunningDaemon, running_daemon
from voicecall_trio.testing.fake_telnyx import FakeTelnyx
from voicecall_trio.testing.fake_twilio import Callee, FakeTwilio

ACCOUNT = "AC" + "7" * 32
TOKEN = "abuse-journal-auth-token-0123456789"
FROM = "+15550001234"
CALLER = "+14155551234"
CALLEE = "+15555550123"
PUBLIC = "https://voice.example.com/voice/webhook"
LIMIT_S = 30


@pytest.fixture
def store() -> Iterator[Path]:
    """A short store path: the control socket lives in it (108-byte limit)."""
    path = Path(tempfile.mkdtemp(prefix="vcj", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@asynccontextmanager
async def twilio_daemon(fake: FakeTwilio, store: Path, **extra: Any
                        ) -> AsyncIterator[RunningDaemon]:
    config: dict[str, Any] = {
        "provider": "twilio", "fromNumber": FROM, "publicUrl": PUBLIC,
        "twilio": {"accountSid": ACCOUNT, "authToken": TOKEN, "apiBaseUrl": fake.url},
        "maxConcurrentCalls": 4, "shutdownGraceSeconds": 2, **extra,
    }
    async with running_daemon(config, store=store) as daemon:
        fake.tunnel(PUBLIC, daemon.base_url)
        yield daemon


@asynccontextmanager
async def telnyx_daemon(fake: FakeTelnyx, store: Path, **extra: Any
                        ) -> AsyncIterator[RunningDaemon]:
    config: dict[str, Any] = {
        "provider": "telnyx", "fromNumber": FROM, "shutdownGraceSeconds": 2,
        "telnyx": {"apiKey": "KEY", "connectionId": fake.connection_id,
                   "publicKey": fake.public_key, "apiBaseUrl": fake.url},
        **extra,
    }
    async with running_daemon(config, store=store) as daemon:
        provider = daemon.handle.provider
        assert isinstance(provider, TelnyxProvider)
        provider.set_public_url(daemon.base_url)
        fake.webhook_url = daemon.webhook_url
        yield daemon


async def task_done(daemon: RunningDaemon, call_id: str) -> None:
    call = daemon.handle.supervisor.live.get(call_id)
    if call is not None:
        await call.task_done.wait()


async def found(daemon: RunningDaemon, call_id: str) -> dict[str, Any]:
    reply = await daemon.rpc("voicecall.status", {"callId": call_id})
    assert reply["found"] is True, call_id
    call = reply["call"]
    assert isinstance(call, dict)
    return call


async def still_answering(daemon: RunningDaemon) -> None:
    """``voicecall status`` (both forms) and health answer."""
    assert isinstance((await daemon.rpc("voicecall.status"))["calls"], list)
    assert (await daemon.rpc("daemon.health"))["ok"] is True


async def twilio_status_webhook_answers(fake: FakeTwilio, sid: str) -> None:
    params = {"AccountSid": ACCOUNT, "CallSid": sid, "CallStatus": "completed", "From": FROM,
              "To": CALLEE, "Direction": "outbound-api", "ApiVersion": "2010-04-01"}
    delivery = await fake.post_webhook(PUBLIC, params, kind="status", call_sid=sid)
    assert delivery.status == 200


def journal_call_ids(store: Path) -> set[str]:
    return {json.loads(line)["callId"]
            for line in (store / "calls.jsonl").read_text().splitlines() if line.strip()}


# -- item 8: a replayed inbound offer after a restart -----------------------------------------


async def test_a_replayed_twilio_offer_after_restart_creates_no_call_and_sends_nothing(
        store: Path) -> None:
    """Twilio signatures carry no timestamp: a captured offer stays valid forever."""
    with trio.fail_after(LIMIT_S):
        async with FakeTwilio(account_sid=ACCOUNT, auth_token=TOKEN, phone_number=FROM,
                              voice_url=PUBLIC) as fake:
            async with twilio_daemon(fake, store, inboundPolicy="open") as first:
                fake.callees[CALLER] = Callee(script=["Hi, just checking."])
                twilio = fake.start_inbound(CALLER, status_callback=PUBLIC)
                await twilio.wait_for(lambda c: len(c.replies) == 1)
                (offer,) = fake.deliveries_for(twilio.sid, "inbound")
                (live,) = (await first.rpc("voicecall.status"))["calls"]
                call_id = live["callId"]
                await fake.callee_hangup(twilio.sid)
                await task_done(first, call_id)

            async with twilio_daemon(fake, store, inboundPolicy="open") as second:
                seen = len(fake.api_requests)
                replay = await fake.post_webhook(PUBLIC, offer.params, kind="inbound",
                                                 call_sid=twilio.sid)
                assert replay.status == 200
                assert [e.tag for e in ET.fromstring(replay.body)] == ["Hangup"]
                assert (await second.rpc("voicecall.status"))["calls"] == []
                assert (await second.rpc("daemon.health"))["activeCalls"] == 0
                assert (await found(second, call_id))["state"] == "completed"
                await twilio_status_webhook_answers(fake, twilio.sid)
                await still_answering(second)
                assert fake.api_requests[seen:] == []  # nothing sent to the carrier
    assert journal_call_ids(store) == {call_id}


async def test_a_replayed_telnyx_offer_after_restart_is_not_answered_again(
        store: Path) -> None:
    """Within the 300 s window the same signed bytes verify again after a restart."""
    with trio.fail_after(LIMIT_S):
        async with FakeTelnyx() as fake:
            async with telnyx_daemon(fake, store, inboundPolicy="open") as first:
                ccid = fake.start_inbound(CALLER, FROM)
                await fake.wait_request("answer", ccid)
                offer = await fake.wait_delivery("call.initiated", ccid)
                call_id = fake.calls[ccid].call_id
                assert call_id is not None
                fake.callee_hangup(ccid)
                await fake.wait_delivery("call.hangup", ccid)
                await task_done(first, call_id)

            async with telnyx_daemon(fake, store, inboundPolicy="open") as second:
                seen = len(fake.requests)
                response = await fake.post_webhook(offer.body, offer.headers)
                assert response.status_code == 200
                await still_answering(second)
                assert (await second.rpc("daemon.health"))["activeCalls"] == 0
                assert (await found(second, call_id))["state"] == "hangup-user"
                assert fake.requests[seen:] == []  # no second actions/answer, nothing at all
                assert len(fake.requests_for("answer", ccid)) == 1
    assert journal_call_ids(store) == {call_id}


# -- item 5: a lone surrogate cannot poison a call ---------------------------------------------


async def raw_rpc(daemon: RunningDaemon, line: bytes) -> dict[str, Any]:
    """Send one request line as raw bytes (a client that can send what ours would not)."""
    stream = await trio.open_unix_socket(str(daemon.handle.socket_path))
    async with stream:
        await stream.send_all(line + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = await stream.receive_some(65536)
            assert chunk, "the daemon closed the connection without a reply"
            data += chunk
    reply = json.loads(data)
    assert isinstance(reply, dict)
    return reply


async def test_a_lone_surrogate_in_speak_is_an_error_and_the_call_still_works(
        store: Path) -> None:
    with trio.fail_after(LIMIT_S):
        async with running_daemon({"mock": {"callerScript": []}}, store=store) as d:
            result = await d.rpc("voicecall.initiate", {"to": CALLEE, "message": "Hello",
                                                        "mode": "conversation"})
            call_id = result["callId"]
            call = d.handle.supervisor.live[call_id]
            await call.wait_until(lambda r: r.state.connected)
            for method in ("voicecall.speak", "voicecall.continue"):
                line = (b'{"jsonrpc":"2.0","id":7,"method":"' + method.encode()
                        + b'","params":{"callId":"' + call_id.encode()
                        + b'","message":"See you \\ud83d"}}')
                reply = await raw_rpc(d, line)
                assert reply["error"]["code"] in (-32602, -32006), reply  # never -32603
            listed = (await d.rpc("voicecall.status"))["calls"]
            assert [c["callId"] for c in listed] == [call_id]
            assert (await found(d, call_id))["state"] in ("answered", "active", "speaking",
                                                         "listening")
            assert await d.rpc("voicecall.speak", {"callId": call_id,
                                                   "message": "Still here"}) == {"success": True}
            assert await d.rpc("voicecall.end", {"callId": call_id}) == {"success": True}
            await task_done(d, call_id)
            assert (await found(d, call_id))["state"] == "hangup-bot"
    result = replay_file(store / "calls.jsonl")
    assert result.bad_lines == [] and not result.live


# -- item 9: a full disk never resurrects a call --------------------------------------------------


async def test_after_enospc_and_recovery_the_journal_holds_no_refused_call(store: Path) -> None:
    with trio.fail_after(LIMIT_S):
        async with FakeTwilio(account_sid=ACCOUNT, auth_token=TOKEN, phone_number=FROM,
                              voice_url=PUBLIC) as fake, twilio_daemon(fake, store) as d:
            disk = FlakyDisk(full=3)
            d.handle.journal.disk = disk  # the store's filesystem fills up
            for _ in range(3):
                with pytest.raises(RpcError, match="the call was not placed"):
                    await d.rpc("voicecall.initiate", {"to": CALLEE, "message": "Hi",
                                                       "mode": "notify"})
                await still_answering(d)
                await twilio_status_webhook_answers(fake, "CA" + "0" * 32)
            assert fake.requests_for("create") == []  # never dialled
            assert disk.full == 0  # space is back
            placed = await d.rpc("voicecall.initiate", {"to": CALLEE, "message": "Hi",
                                                        "mode": "notify"})
            call_id = placed["callId"]
            await d.rpc("voicecall.end", {"callId": call_id})
            await task_done(d, call_id)
            journal = d.handle.journal
            await journal.flush()
            assert journal._size == (store / "calls.jsonl").stat().st_size
    assert journal_call_ids(store) == {call_id}  # no line of any refused call, ever
    assert replay_file(store / "calls.jsonl").bad_lines == []


# -- item 7: ended calls stay findable ------------------------------------------------------------


async def test_1200_ended_calls_a_rotation_and_a_restart_every_one_is_still_found(
        store: Path) -> None:
    config = {"journal": {"maxBytes": 300_000, "keepFiles": 10}, "maxConcurrentCalls": 1,
              "mock": {"answerDelayMs": 60_000}}
    ids: list[str] = []
    with trio.fail_after(60):
        async with running_daemon(config, store=store) as d:
            d.handle.journal.fsync = False  # what this test checks is not durability: speed
            for _ in range(1200):
                placed = await d.rpc("voicecall.initiate", {"to": CALLEE, "message": "Hi",
                                                            "mode": "notify"})
                ids.append(placed["callId"])
                assert await d.rpc("voicecall.end", {"callId": placed["callId"]}) == {
                    "success": True}
            assert d.handle.journal.index.segment >= 1  # rotated
            for call_id in ids:
                assert (await found(d, call_id))["state"] == "hangup-bot"
                assert await d.rpc("voicecall.end", {"callId": call_id}) == {"success": True}
        assert (store / "calls.jsonl.1").exists()
        async with running_daemon(config, store=store) as again:
            for call_id in ids:
                assert (await found(again, call_id))["state"] == "hangup-bot"
                assert await again.rpc("voicecall.end", {"callId": call_id}) == {
                    "success": True}
            await still_answering(again)
            assert (await again.rpc("daemon.health"))["activeCalls"] == 0
