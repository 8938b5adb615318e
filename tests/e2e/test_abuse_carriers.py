"""Abuse through the carriers' own door: validly signed webhooks with hostile content.

End to end, real sockets on loopback: a whole in-process daemon against ``FakeTelnyx`` /
``FakeTwilio``. An attacker is not assumed to hold the signing key; these are what a
carrier's own bugs, a delayed retry queue or a captured-and-replayed stream look like:
timestamps of every size and shape, lone surrogates, 1 MiB transcripts. Each test is
bounded in count and time, asserts that ``voicecall status`` keeps answering within 1 s
while the flood runs, and that the call is still live and correct afterwards.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import trio
import trio.lowlevel

from voicecall_trio.providers.telnyx.shell import TelnyxProvider
from voicecall_trio.providers.twilio.signature import compute_signature, form_params
from voicecall_trio.testing import RunningDaemon, running_daemon
from voicecall_trio.testing.fake_telnyx import Callee as TelnyxCallee
from voicecall_trio.testing.fake_telnyx import FakeTelnyx
from voicecall_trio.testing.fake_twilio import Callee as TwilioCallee
from voicecall_trio.testing.fake_twilio import FakeTwilio

FROM = "+15550001234"
CALLEE = "+14155550100"
LIMIT_S = 30  # bounds a test that would otherwise hang; never a synchronisation
STATUS_DEADLINE_S = 1.0  # "voicecall status answers within 1 s throughout"
FLOOD = 120  # signed webhooks per flood
CONCURRENCY = 8

# occurred_at / Timestamp values: every shape a broken or hostile carrier clock could send
ABSURD_ISO = ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59-23:59", "1969-12-31T23:59:59Z",
              "2026-13-45T99:99:99Z", "not a date", "", "9" * 500,
              "+275760-09-13T00:00:00Z", "1970-01-01T00:00:00.000001+00:00"]
ABSURD_RFC2822 = ["Mon, 1 Jan 99999999999 00:00:00 +0000", "Fri, 31 Dec 9999 23:59:59 -2359",
                  "Thu, 01 Jan 1970 00:00:00 +0100", "yesterday", "", "9" * 500,
                  "Sat, 01 Jan 0001 00:00:00 +0000"]


@pytest.fixture
def store() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="vct", dir="/tmp"))  # the socket path is short
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def status_keeps_answering(daemon: RunningDaemon, call_id: str, done: trio.Event,
                                 answered: list[float]) -> None:
    """Ask ``voicecall.status`` (list and one call) again and again until ``done``."""
    while not done.is_set():
        started = time.monotonic()
        with trio.fail_after(STATUS_DEADLINE_S):
            listing = await daemon.rpc("voicecall.status")
            one = await daemon.rpc("voicecall.status", {"callId": call_id})
        answered.append(time.monotonic() - started)
        assert one["found"] is True and one["call"]["state"] not in ("timeout", "error")
        assert any(c["callId"] == call_id for c in listing["calls"])
        await trio.lowlevel.checkpoint()  # a checkpoint, not a synchronisation


async def flood(send: Any, count: int) -> list[int]:
    """Run ``send(i)`` for i in range(count), CONCURRENCY at a time; the statuses."""
    statuses: list[int] = []
    limiter = trio.CapacityLimiter(CONCURRENCY)

    async def one(i: int) -> None:
        async with limiter:
            statuses.append(await send(i))

    async with trio.open_nursery() as nursery:
        for i in range(count):
            nursery.start_soon(one, i)
    return statuses


# -- Telnyx -----------------------------------------------------------------------------------

@asynccontextmanager
async def telnyx_daemon(fake: FakeTelnyx, store: Path) -> AsyncIterator[RunningDaemon]:
    config = {
        "provider": "telnyx", "fromNumber": FROM,
        "telnyx": {"apiKey": fake.api_key, "connectionId": fake.connection_id,
                   "publicKey": fake.public_key, "apiBaseUrl": fake.url},
        "shutdownGraceSeconds": 2,
    }
    async with running_daemon(config, store=store) as daemon:
        provider = daemon.handle.provider
        assert isinstance(provider, TelnyxProvider)
        provider.set_public_url(daemon.base_url)
        fake.webhook_url = daemon.webhook_url
        yield daemon


def _with_occurred_at(body: bytes, occurred_at: Any) -> bytes:
    doc = json.loads(body)
    doc["data"]["occurred_at"] = occurred_at
    return json.dumps(doc).encode()


async def test_telnyx_flood_of_signed_events_with_absurd_times_and_text(store: Path) -> None:
    with trio.fail_after(LIMIT_S):
        async with (
            FakeTelnyx(callee=TelnyxCallee(script=[])) as fake,
            telnyx_daemon(fake, store) as d,
        ):
            call_id = (await d.rpc("voicecall.initiate", {
                "to": CALLEE, "message": "Hello.", "mode": "conversation"}))["callId"]
            ccid = (await fake.wait_call(call_id)).call_control_id
            await fake.wait_request("transcription_start", ccid)
            before = d.handle.supervisor.get_record(call_id)
            assert before is not None and before.answered_at is not None

            async def send(i: int) -> int:
                kind = i % 4
                if kind == 0:  # a repeated answer, its clock anywhere
                    body = fake.event_body(ccid, "call.answered")
                elif kind == 1:  # a bounded-huge transcript line
                    body = fake.event_body(ccid, "call.transcription", {"transcription_data": {
                        "transcript": f"line {i} " + "z" * 200_000, "is_final": True,
                        "transcription_track": "inbound"}})
                elif kind == 2:  # a lone surrogate escape: not JSON we accept (400)
                    body = fake.event_body(ccid, "call.transcription", {"transcription_data": {
                        "transcript": f"cut {i} \ud83d", "is_final": True,
                        "transcription_track": "inbound"}})
                else:  # DTMF with garbage digits
                    body = fake.event_body(ccid, "call.dtmf.received", {"digit": "9" * 5000})
                body = _with_occurred_at(body, ABSURD_ISO[i % len(ABSURD_ISO)] if i % 3
                                         else i * 10**12)
                response = await fake.post_webhook(body)  # signed now: a valid delivery
                return response.status_code

            done = trio.Event()
            answered: list[float] = []
            async with trio.open_nursery() as nursery:
                nursery.start_soon(status_keeps_answering, d, call_id, done, answered)
                statuses = await flood(send, FLOOD)
                done.set()
            assert set(statuses) <= {200, 400}, statuses
            assert statuses.count(400) >= FLOOD // 4  # the surrogates, at least
            assert answered and max(answered) < STATUS_DEADLINE_S

            record = d.handle.supervisor.get_record(call_id)
            assert record is not None and not record.terminal
            assert record.answered_at == before.answered_at  # the first answer's time, ours
            assert abs(record.answered_at - time.time() * 1000) < LIMIT_S * 1000
            assert all(len(e.text) <= 4096 for e in record.transcript)
            assert all("\ud83d" not in e.text for e in record.transcript)
            assert len(record.metadata["dtmf"]) <= 256
            call = (await d.rpc("voicecall.status", {"callId": call_id}))["call"]
            assert call["state"] in ("answered", "active", "listening", "speaking")
            assert (await d.rpc("daemon.health"))["activeCalls"] == 1
            await d.rpc("voicecall.end", {"callId": call_id})
            await fake.wait_delivery("call.hangup", ccid)
            final = (await d.rpc("voicecall.status", {"callId": call_id}))["call"]
            assert final["endReason"] == "hangup-bot"  # journaled and ended normally


# -- Twilio -----------------------------------------------------------------------------------

ACCOUNT = "AC" + "7" * 32
TOKEN = "abuse-twilio-auth-token-0123456789"
PUBLIC = "https://voice.example.com/voice/webhook"


@asynccontextmanager
async def twilio_pair(store: Path) -> AsyncIterator[tuple[FakeTwilio, RunningDaemon]]:
    fake = FakeTwilio(account_sid=ACCOUNT, auth_token=TOKEN, phone_number=FROM,
                      voice_url=PUBLIC)
    async with fake:
        config = {"provider": "twilio", "fromNumber": FROM, "publicUrl": PUBLIC,
                  "twilio": {"accountSid": ACCOUNT, "authToken": TOKEN,
                             "apiBaseUrl": fake.url},
                  "shutdownGraceSeconds": 2}
        async with running_daemon(config, store=store) as d:
            fake.tunnel(PUBLIC, d.base_url)
            yield fake, d


async def _post_raw(d: RunningDaemon, url: str, body: bytes) -> int:
    """A form body as raw bytes, signed over what Twilio's validator decodes from it."""
    signature = compute_signature(TOKEN, url, form_params(body))
    parts = urlsplit(url)
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{d.base_url}{parts.path}?{parts.query}", content=body,
            headers={"X-Twilio-Signature": signature, "Host": parts.netloc,
                     "Content-Type": "application/x-www-form-urlencoded"})
    return response.status_code


async def test_twilio_flood_of_signed_callbacks_with_absurd_times_and_text(store: Path
                                                                          ) -> None:
    with trio.fail_after(LIMIT_S):
        async with twilio_pair(store) as (fake, d):
            fake.callees[CALLEE] = TwilioCallee(script=[])  # answers, then stays silent
            call_id = (await d.rpc("voicecall.initiate", {
                "to": CALLEE, "message": "Hello.", "mode": "conversation"}))["callId"]
            with trio.fail_after(10):
                await fake.wait_for(lambda: any(
                    c.documents for c in fake.calls.values()))  # greeting + Gather served
            (twilio,) = fake.calls.values()
            before = d.handle.supervisor.get_record(call_id)
            assert before is not None and before.answered_at is not None
            status_url = f"{PUBLIC}?callId={call_id}&type=status"
            gather_url = f"{PUBLIC}?callId={call_id}&type=gather&turn=stale"

            async def send(i: int) -> int:
                stamp = ABSURD_RFC2822[i % len(ABSURD_RFC2822)]
                if i % 3 == 2:  # a Gather result with a percent-encoded lone surrogate
                    body = (f"CallSid={twilio.sid}&CallStatus=in-progress&SpeechResult=cut+"
                            f"{i}+%ED%A0%BD&Timestamp=").encode() + stamp.encode()
                    return await _post_raw(d, gather_url, body)
                params = {"AccountSid": ACCOUNT, "CallSid": twilio.sid,
                          "CallStatus": "in-progress" if i % 2 else "ringing",
                          "CallbackSource": "call-progress-events",
                          "SequenceNumber": str(1000 + i), "Timestamp": stamp,
                          "Direction": "outbound-api", "From": FROM, "To": CALLEE}
                delivery = await fake.post_webhook(status_url, params, kind="status",
                                                   call_sid=twilio.sid)
                assert delivery.status is not None, delivery.error
                return delivery.status

            done = trio.Event()
            answered: list[float] = []
            async with trio.open_nursery() as nursery:
                nursery.start_soon(status_keeps_answering, d, call_id, done, answered)
                statuses = await flood(send, FLOOD)
                done.set()
            assert set(statuses) == {200}, statuses
            assert answered and max(answered) < STATUS_DEADLINE_S

            record = d.handle.supervisor.get_record(call_id)
            assert record is not None and not record.terminal
            assert record.answered_at == before.answered_at
            call = (await d.rpc("voicecall.status", {"callId": call_id}))["call"]
            assert call["state"] in ("answered", "active", "listening", "speaking")
            await d.rpc("voicecall.end", {"callId": call_id})
            with trio.fail_after(10):
                await twilio.wait_for(lambda c: c.terminal)
            final = (await d.rpc("voicecall.status", {"callId": call_id}))["call"]
            assert final["endReason"] == "hangup-bot"


async def test_twilio_speech_with_an_encoded_surrogate_is_repaired_end_to_end(store: Path
                                                                             ) -> None:
    """The Gather result of the current turn carries ``%ED%A0%BD`` (a UTF-8-encoded lone
    surrogate): the transcript holds U+FFFD, and status, continue and end keep working."""
    with trio.fail_after(LIMIT_S):
        async with twilio_pair(store) as (fake, d):
            fake.callees[CALLEE] = TwilioCallee(script=[])
            call_id = (await d.rpc("voicecall.initiate", {
                "to": CALLEE, "message": "Hello.", "mode": "conversation"}))["callId"]
            with trio.fail_after(10):
                await fake.wait_for(lambda: any(c.documents for c in fake.calls.values()))
            (twilio,) = fake.calls.values()
            document = twilio.documents[-1]
            start = document.index('action="') + len('action="')
            action = document[start:document.index('"', start)].replace("&amp;", "&")
            assert "type=gather" in action
            body = f"CallSid={twilio.sid}&SpeechResult=ok+%F0%9F%98%80+%ED%A0%BD".encode()
            assert await _post_raw(d, action, body) == 200
            call = (await d.rpc("voicecall.status", {"callId": call_id}))["call"]
            (heard,) = [e["text"] for e in call["transcript"] if e["speaker"] == "user"]
            assert heard.startswith("ok \U0001f600 \ufffd")
            listing = await d.rpc("voicecall.status")
            assert [c["callId"] for c in listing["calls"]] == [call_id]
            await d.rpc("voicecall.end", {"callId": call_id})
            with trio.fail_after(10):
                await twilio.wait_for(lambda c: c.terminal)
            final = (await d.rpc("voicecall.status", {"callId": call_id}))["call"]
            assert final["endReason"] == "hangup-bot"
            journal = (store / "calls.jsonl").read_bytes().decode("utf-8")  # strict UTF-8
            assert "\\ud83d" not in journal and call_id in journal
