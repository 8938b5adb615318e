"""Twilio end to end: a real daemon (socket + HTTP server) against ``FakeTwilio``.

The daemon runs in-process (``running_daemon``) with ``twilio.apiBaseUrl`` pointed at the fake,
which then plays Twilio: status callbacks, TwiML fetches, Gather results, all signed with the
auth token and sent over real HTTP through a simulated tunnel (``fake.tunnel``) from the
public URL to the daemon's ephemeral port. Every wait is on a condition (the fake's change
notifications, a daemon event, a call task finishing) under a ``fail_after`` bound.
"""

from __future__ import annotations

import logging
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
import trio

from voicecall_trio.providers.twilio.shell import TwilioProvider
from voicecall_trio.providers.twilio.signature import compute_signature, form_params, validate
from voicecall_trio.rpc.protocol import RpcError
from voicecall_trio.testing import RunningDaemon, running_daemon, serve_asgi
from voicecall_trio.testing.fake_twilio import (
    HANGUP,
    SILENCE,
    Callee,
    Dtmf,
    FakeCall,
    FakeTwilio,
    Quirks,
)

ACCOUNT = "AC" + "5" * 32
TOKEN = "e2e-twilio-auth-token-0123456789"
FROM = "+15550001234"
CALLEE = "+15555550123"
CALLER = "+14155551234"
PUBLIC = "https://voice.example.com/voice/webhook"
WAIT_S = 10.0

SCRIPT = ["Hello, this is the callee.", "Yes, nine tomorrow works for me.", "Thanks, bye."]


# -- helpers --------------------------------------------------------------------------------------


def daemon_config(fake: FakeTwilio, **extra: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "provider": "twilio",
        "fromNumber": FROM,
        "twilio": {"accountSid": ACCOUNT, "authToken": TOKEN, "apiBaseUrl": fake.url},
        "publicUrl": PUBLIC,
        "maxConcurrentCalls": 4,
        "outbound": {"notifyHangupDelaySec": 1},
        "shutdownGraceSeconds": 2,
    }
    config.update(extra)
    return config


@asynccontextmanager
async def fake_twilio(**kwargs: Any) -> AsyncIterator[FakeTwilio]:
    fake = FakeTwilio(account_sid=ACCOUNT, auth_token=TOKEN, phone_number=FROM,
                      voice_url=kwargs.pop("voice_url", PUBLIC), **kwargs)
    async with fake:
        yield fake


@asynccontextmanager
async def twilio_daemon(fake: FakeTwilio, *, store: Path | None = None,
                        public: str | None = PUBLIC, **extra: Any
                        ) -> AsyncIterator[RunningDaemon]:
    """A daemon on the fake; the fake reaches ``public`` through a tunnel to the daemon.

    ``public=None``: no publicUrl at all; the fake must then post to ``d.webhook_url``.
    """
    async with running_daemon(daemon_config(fake, publicUrl=public, **extra), store=store) as d:
        if public is not None:
            fake.tunnel(public, d.base_url)
        yield d


class Events:
    """``voicecall.subscribe`` notifications, kept so a test can wait for one."""

    def __init__(self, daemon: RunningDaemon) -> None:
        self.daemon = daemon
        self.seen: list[dict[str, Any]] = []

    @classmethod
    async def subscribe(cls, daemon: RunningDaemon) -> Events:
        assert await daemon.rpc("voicecall.subscribe") == {"subscribed": True}
        return cls(daemon)

    async def wait_for(self, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        for event in self.seen:
            if predicate(event):
                return event
        with trio.fail_after(WAIT_S):
            async for note in self.daemon.client.notifications:
                if note.method != "voicecall.event":
                    continue
                event = dict(note.params or {})
                self.seen.append(event)
                if predicate(event):
                    return event
        raise AssertionError(f"subscription closed; saw {self.seen}")


async def wait_fake(fake: FakeTwilio, predicate: Callable[[], bool]) -> None:
    with trio.fail_after(WAIT_S):
        await fake.wait_for(predicate)


async def wait_call(call: FakeCall, predicate: Callable[[FakeCall], bool]) -> None:
    with trio.fail_after(WAIT_S):
        await call.wait_for(predicate)


async def call_done(daemon: RunningDaemon, call_id: str) -> None:
    """Wait until the daemon's task for this call has finished (slot released)."""
    live = daemon.handle.supervisor.live.get(call_id)
    if live is not None:
        with trio.fail_after(WAIT_S):
            await live.task_done.wait()


async def status(daemon: RunningDaemon, call_id: str) -> dict[str, Any]:
    result = await daemon.rpc("voicecall.status", {"callId": call_id})
    assert result["found"] is True
    return result["call"]  # type: ignore[no-any-return]


async def initiate(daemon: RunningDaemon, message: str, mode: str, to: str = CALLEE) -> str:
    result = await daemon.rpc("voicecall.initiate", {"to": to, "message": message, "mode": mode})
    assert result["initiated"] is True
    return result["callId"]  # type: ignore[no-any-return]


def twilio_call_of(fake: FakeTwilio, call_id: str) -> FakeCall:
    """The fake's call created for our ``call_id`` (its Url carries ``callId=``)."""
    for call in fake.calls.values():
        if call.url and query(call.url).get("callId") == [call_id]:
            return call
    raise AssertionError(f"no Twilio call created for {call_id}")


def verbs(document: str) -> list[str]:
    return [element.tag for element in ET.fromstring(document)]


def query(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query)


def transcript(call: dict[str, Any], speaker: str) -> list[str]:
    return [e["text"] for e in call["transcript"] if e["speaker"] == speaker]


def signed(url: str, params: dict[str, str], token: str = TOKEN) -> dict[str, str]:
    return {"X-Twilio-Signature": compute_signature(token, url, params),
            "Content-Type": "application/x-www-form-urlencoded"}


def status_params(sid: str, status: str, **extra: str) -> dict[str, str]:
    return {"AccountSid": ACCOUNT, "CallSid": sid, "CallStatus": status, "From": FROM,
            "To": CALLEE, "Direction": "outbound-api", "ApiVersion": "2010-04-01",
            "CallbackSource": "call-progress-events", **extra}


# -- outbound: notify -----------------------------------------------------------------------------


async def test_notify_call_says_the_escaped_message_and_ends_completed() -> None:
    message = "Your table for 2 at Smith & Sons is ready <in 10 minutes>."
    async with fake_twilio() as fake, twilio_daemon(fake, ringTimeoutMs=25_000) as d:
        call_id = await initiate(d, message, "notify")

        (create,) = fake.requests_for("create")
        assert create.status == 201 and create.method == "POST"
        assert create.path == f"/2010-04-01/Accounts/{ACCOUNT}/Calls.json"
        assert (create.get("To"), create.get("From")) == (CALLEE, FROM)
        assert create.get("Url") == f"{PUBLIC}?callId={call_id}"
        assert create.get("StatusCallback") == f"{PUBLIC}?callId={call_id}&type=status"
        assert create.getall("StatusCallbackEvent") == ["initiated", "ringing", "answered",
                                                        "completed"]
        assert create.get("Timeout") == "25"

        twilio = twilio_call_of(fake, call_id)
        await wait_call(twilio, lambda c: c.done.is_set())
        (fetch,) = fake.deliveries_for(twilio.sid, "fetch")
        assert fetch.status == 200 and fetch.url == create.get("Url")
        assert fetch.param("CallStatus") == "in-progress"
        assert fetch.param("Direction") == "outbound-api"
        assert validate(TOKEN, fetch.url, list(fetch.params), fetch.signature).ok
        document = fetch.body.decode()
        assert "Smith &amp; Sons" in document and "&lt;in 10 minutes&gt;" in document
        assert verbs(document) == ["Say", "Pause", "Hangup"]
        assert twilio.said == [message]
        assert twilio.ended_by == "twiml" and twilio.status == "completed"

        callbacks = fake.deliveries_for(twilio.sid, "status")
        assert [c.param("CallStatus") for c in callbacks] == ["initiated", "ringing",
                                                               "in-progress", "completed"]
        assert all(c.status == 200 for c in fake.deliveries)

        await call_done(d, call_id)
        call = await status(d, call_id)
        assert call["state"] == "completed" and call["endReason"] == "completed"
        assert call["providerCallId"] == twilio.sid
        assert transcript(call, "bot") == [message]
        assert (await d.rpc("daemon.health"))["activeCalls"] == 0
        assert fake.requests_for("update") == []  # Twilio hung up itself: no REST hangup


# -- outbound: conversation -----------------------------------------------------------------------


async def test_conversation_continue_over_gather_then_end() -> None:
    greeting = "Hi, this is your assistant calling about tomorrow."
    question = "Does nine tomorrow work?"
    async with fake_twilio() as fake, twilio_daemon(fake) as d:
        fake.callees[CALLEE] = Callee(script=SCRIPT)
        call_id = await initiate(d, greeting, "conversation")
        twilio = twilio_call_of(fake, call_id)
        await wait_call(twilio, lambda c: len(c.replies) == 1)

        (fetch,) = fake.deliveries_for(twilio.sid, "fetch")
        document = ET.fromstring(fetch.body)
        assert [e.tag for e in document] == ["Say", "Gather"]
        gather = document[1]
        assert gather.get("input") == "speech" and gather.get("actionOnEmptyResult") == "true"
        action = query(gather.get("action") or "")
        assert action["callId"] == [call_id] and action["type"] == ["gather"] and action["turn"]

        reply = await d.rpc("voicecall.continue", {"callId": call_id, "message": question})
        assert reply == {"success": True, "transcript": SCRIPT[1]}
        await wait_call(twilio, lambda c: len(c.replies) == 2)  # its HTTP answer is back
        assert twilio.said == [greeting, question]
        (update,) = twilio.updates
        assert verbs(update) == ["Say", "Gather"]
        results = fake.deliveries_for(twilio.sid, "gather")
        assert [r.param("SpeechResult") for r in results] == SCRIPT[:2]
        assert all(r.status == 200 and r.param("Confidence") for r in results)
        assert all(verbs(r.body.decode()) == ["Pause", "Redirect"] for r in results)  # hold

        assert await d.rpc("voicecall.end", {"callId": call_id}) == {"success": True}
        await wait_call(twilio, lambda c: c.done.is_set())
        assert twilio.ended_by == "rest" and twilio.status == "completed"
        hangups = [r for r in fake.requests_for("update", twilio.sid) if r.get("Status")]
        assert [r.get("Status") for r in hangups] == ["completed"]
        call = await status(d, call_id)
        assert call["state"] == "hangup-bot" and call["endReason"] == "hangup-bot"
        assert transcript(call, "bot") == [greeting, question]
        assert transcript(call, "user") == SCRIPT[:2]


# -- inbound --------------------------------------------------------------------------------------


async def test_inbound_open_policy_greets_listens_and_ends_on_caller_hangup() -> None:
    greeting = "Hi, you reached the assistant."
    async with fake_twilio() as fake, twilio_daemon(fake, inboundPolicy="open",
                                                    inboundGreeting=greeting) as d:
        fake.callees[CALLER] = Callee(script=["I'd like to book a table.", "For two, at eight."])
        twilio = fake.start_inbound(CALLER, status_callback=PUBLIC)
        await wait_call(twilio, lambda c: len(c.replies) == 1)

        (offer,) = fake.deliveries_for(twilio.sid, "inbound")
        assert offer.url == PUBLIC and offer.status == 200
        assert (offer.param("Direction"), offer.param("CallStatus")) == ("inbound", "ringing")
        assert verbs(offer.body.decode()) == ["Say", "Gather"]
        assert twilio.said == [greeting] and twilio.answered

        (live,) = (await d.rpc("voicecall.status"))["calls"]
        assert live["direction"] == "inbound" and live["from"] == CALLER
        assert live["providerCallId"] == twilio.sid
        call_id = live["callId"]
        reply = await d.rpc("voicecall.continue", {"callId": call_id, "message": "How many?"})
        assert reply["transcript"] == "For two, at eight."

        await fake.callee_hangup(twilio.sid)
        (final,) = fake.deliveries_for(twilio.sid, "status")
        assert final.param("CallStatus") == "completed" and final.status == 200
        await call_done(d, call_id)
        call = await status(d, call_id)
        assert call["state"] == "completed"
        assert transcript(call, "user") == ["I'd like to book a table.", "For two, at eight."]
        assert (await d.rpc("daemon.health"))["activeCalls"] == 0


async def test_inbound_allowlist_without_public_url_uses_the_signed_host() -> None:
    """No publicUrl: the URL Twilio signed is rebuilt from the Host header, and the TwiML
    points Twilio back at that same URL."""
    async with fake_twilio() as fake, twilio_daemon(fake, public=None, inboundPolicy="allowlist",
                                                    allowFrom=[CALLER]) as d:
        fake.callees[CALLER] = Callee(script=["Is this the assistant?"])
        twilio = fake.start_inbound(CALLER, url=d.webhook_url, status_callback=d.webhook_url)
        await wait_call(twilio, lambda c: len(c.replies) == 1)
        (offer,) = fake.deliveries_for(twilio.sid, "inbound")
        gather = ET.fromstring(offer.body)[1]
        assert (gather.get("action") or "").startswith(d.webhook_url + "?callId=")

        (live,) = (await d.rpc("voicecall.status"))["calls"]
        assert await d.rpc("voicecall.end", {"callId": live["callId"]}) == {"success": True}
        await wait_call(twilio, lambda c: c.done.is_set())
        assert twilio.ended_by == "rest"
        assert (await status(d, live["callId"]))["state"] == "hangup-bot"


@pytest.mark.parametrize(
    ("policy", "caller"),
    [({}, CALLER),  # inboundPolicy defaults to disabled
     ({"inboundPolicy": "allowlist", "allowFrom": ["+15550009999"]}, CALLER),
     ({"inboundPolicy": "allowlist", "allowFrom": ["+15550009999"]}, "anonymous")],
    ids=["disabled", "not-allowlisted", "anonymous"],
)
async def test_refused_inbound_is_rejected_once_and_never_journaled(
    policy: dict[str, Any], caller: str
) -> None:
    quirks = Quirks(duplicate=frozenset({"inbound", "status"}))
    async with fake_twilio(quirks=quirks) as fake, twilio_daemon(fake, **policy) as d:
        events = await Events.subscribe(d)
        twilio = fake.start_inbound(caller, status_callback=PUBLIC)
        await wait_call(twilio, lambda c: c.done.is_set())

        offers = fake.deliveries_for(twilio.sid, "inbound")
        assert [o.attempt for o in offers] == ["original", "duplicate"]
        assert all(o.status == 200 and verbs(o.body.decode()) == ["Reject"] for o in offers)
        assert offers[0].body == offers[1].body
        assert twilio.rejected == "rejected" and twilio.status == "no-answer"
        assert not twilio.answered and twilio.said == []
        assert all(d.status == 200 for d in fake.deliveries_for(twilio.sid, "status"))

        # Twilio offers the same CallSid again, not byte-identical this time
        again = await fake.post_webhook(PUBLIC, [*offers[0].params, ("CallToken", "retry-2")],
                                        kind="inbound", call_sid=twilio.sid)
        assert again.status == 200 and verbs(again.body.decode()) == ["Reject"]

        rejected = await events.wait_for(lambda e: e["type"] == "call.rejected")
        assert rejected["from"] == caller
        assert (await d.rpc("voicecall.status"))["calls"] == []
        assert (await d.rpc("daemon.health"))["activeCalls"] == 0
        await d.handle.journal.flush()
        assert (d.store / "calls.jsonl").read_bytes() == b""
        assert fake.requests_for() == []  # nothing to hang up: Twilio never answered


# -- outbound outcomes ----------------------------------------------------------------------------


@pytest.mark.parametrize("outcome", ["busy", "no-answer", "failed"])
async def test_unanswered_outcomes_end_the_call(outcome: Any) -> None:
    async with fake_twilio() as fake, twilio_daemon(fake) as d:
        fake.callees[CALLEE] = Callee(outcome=outcome)
        call_id = await initiate(d, "Are you there?", "conversation")
        twilio = twilio_call_of(fake, call_id)
        await wait_call(twilio, lambda c: c.done.is_set())
        statuses = [c.param("CallStatus") for c in fake.deliveries_for(twilio.sid, "status")]
        assert statuses == ["initiated", "ringing", outcome]
        assert fake.deliveries_for(twilio.sid, "fetch") == []
        await call_done(d, call_id)
        call = await status(d, call_id)
        assert call["state"] == outcome and call["endReason"] == outcome
        assert "answeredAt" not in call and transcript(call, "bot") == []
        assert fake.requests_for("update") == []  # the call was over: no hangup sent


async def test_ending_a_ringing_call_cancels_it_at_twilio() -> None:
    async with fake_twilio(time_scale=1.0) as fake, twilio_daemon(fake) as d:
        fake.callees[CALLEE] = Callee(ring_s=3600)  # rings until someone gives up
        call_id = await initiate(d, "Pick up!", "notify")
        twilio = twilio_call_of(fake, call_id)
        await wait_call(twilio, lambda c: c.status == "ringing")
        assert await d.rpc("voicecall.end", {"callId": call_id}) == {"success": True}
        await wait_call(twilio, lambda c: c.done.is_set())
        assert twilio.status == "canceled" and twilio.ended_by == "rest"
        assert not twilio.answered and fake.deliveries_for(twilio.sid, "fetch") == []
        final = fake.deliveries_for(twilio.sid, "status")[-1]
        assert final.param("CallStatus") == "canceled" and final.status == 200
        call = await status(d, call_id)
        assert call["state"] == "hangup-bot"  # ours, recorded before Twilio's callback


# -- the callee hangs up --------------------------------------------------------------------------


async def test_callee_hangs_up_instead_of_answering_a_continue() -> None:
    async with fake_twilio() as fake, twilio_daemon(fake) as d:
        fake.callees[CALLEE] = Callee(script=[SCRIPT[0], HANGUP])
        call_id = await initiate(d, "Hello!", "conversation")
        twilio = twilio_call_of(fake, call_id)
        await wait_call(twilio, lambda c: len(c.replies) == 1)
        with pytest.raises(RpcError) as failure:
            await d.rpc("voicecall.continue", {"callId": call_id, "message": "Still there?"})
        assert failure.value.code == -32002
        assert "before the callee answered" in failure.value.message
        await wait_call(twilio, lambda c: c.done.is_set())
        assert twilio.ended_by == "callee"
        await call_done(d, call_id)
        call = await status(d, call_id)
        assert call["state"] == "completed" and transcript(call, "user") == [SCRIPT[0]]
        assert [r.get("Status") for r in fake.requests_for("update")] == [None]  # no hangup


async def test_callee_hangs_up_while_the_call_is_on_hold() -> None:
    async with fake_twilio() as fake, twilio_daemon(fake) as d:
        fake.callees[CALLEE] = Callee(script=SCRIPT)
        call_id = await initiate(d, "Hello!", "conversation")
        twilio = twilio_call_of(fake, call_id)
        await wait_call(twilio, lambda c: len(c.replies) == 1)
        await fake.callee_hangup(twilio.sid)
        await call_done(d, call_id)
        assert (await status(d, call_id))["state"] == "completed"
        with pytest.raises(RpcError) as failure:
            await d.rpc("voicecall.speak", {"callId": call_id, "message": "Hello?"})
        assert failure.value.code == -32002
        assert fake.requests_for("update") == []


# -- a daemon restart in the middle of a call -----------------------------------------------------


@pytest.mark.parametrize("meanwhile", ["still-talking", "callee-hung-up"])
async def test_restart_mid_call_reconciles_with_twilio_and_never_redials(meanwhile: str) -> None:
    """A crash leaves the journal as it was and the call running at Twilio. The first daemon
    is stopped with its hangup swallowed by Twilio (a 404 that changes nothing) and the journal
    put back as the crash left it; the second daemon asks Twilio and places no call."""
    store = Path(tempfile.mkdtemp(prefix="vc", dir="/tmp"))
    async with fake_twilio() as fake:
        fake.callees[CALLEE] = Callee(script=SCRIPT)
        async with twilio_daemon(fake, store=store) as first:
            call_id = await initiate(first, "Hi, it's your assistant.", "conversation")
            twilio = twilio_call_of(fake, call_id)
            await wait_call(twilio, lambda c: len(c.replies) == 1)
            await first.handle.journal.flush()
            crashed_journal = (store / "calls.jsonl").read_bytes()
            fake.fail_rest(404, action="update", call_sid=twilio.sid)
        (store / "calls.jsonl").write_bytes(crashed_journal)
        assert twilio.status == "in-progress"
        if meanwhile == "callee-hung-up":
            await fake.callee_hangup(twilio.sid)  # its callback finds no daemon
            (lost,) = fake.deliveries_for(twilio.sid, "status")[-1:]
            assert lost.param("CallStatus") == "completed" and lost.status is None

        seen = len(fake.api_requests)
        async with twilio_daemon(fake, store=store) as second:
            after = fake.api_requests[seen:]
            assert [(r.method, r.action, r.call_sid) for r in after] == [
                ("GET", "fetch", twilio.sid)]
            call = await status(second, call_id)
            if meanwhile == "still-talking":
                assert call["state"] == "listening"
                assert (await second.rpc("daemon.health"))["activeCalls"] == 1
                reply = await second.rpc("voicecall.continue",
                                         {"callId": call_id, "message": "Still there?"})
                assert reply["transcript"] == SCRIPT[1]
            else:
                await call_done(second, call_id)
                call = await status(second, call_id)
                assert call["state"] == "completed" and call["endReason"] == "completed"
                assert (await second.rpc("daemon.health"))["activeCalls"] == 0
            assert len(fake.requests_for("create")) == 1
        if meanwhile == "callee-hung-up":
            assert fake.api_requests[seen:] == after  # an ended call is not hung up again


# -- webhook rejections, through the real HTTP server ---------------------------------------------


async def test_bad_webhooks_are_refused_and_the_daemon_stays_healthy(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="voicecall")
    sid = "CA" + "7" * 32
    params = status_params(sid, "ringing")
    body = urlencode(params)
    form = {"Content-Type": "application/x-www-form-urlencoded", "Connection": "close"}
    async with fake_twilio() as fake, twilio_daemon(
        fake, webhookSecurity={"maxBodyBytes": 4096}
    ) as d, httpx.AsyncClient(headers={"Connection": "close"}) as http:
        url = d.webhook_url

        async def post(headers: dict[str, str], content: bytes | str = body,
                       target: str = url) -> httpx.Response:
            return await http.post(target, content=content, headers={**form, **headers})

        missing = await post({})
        assert missing.status_code == 401 and "missing signature" in missing.text
        wrong_token = await post(signed(PUBLIC, params, token="not-the-token"))
        assert wrong_token.status_code == 401 and "invalid signature" in wrong_token.text
        tampered = await post(signed(PUBLIC, params),
                              urlencode({**params, "CallStatus": "completed"}))
        assert tampered.status_code == 401
        other_url = await post(signed("https://evil.example.com/voice/webhook", params))
        assert other_url.status_code == 401
        evil = await post(signed(PUBLIC + "-evil", params), target=url + "-evil")
        assert evil.status_code == 404
        assert (await http.get(url)).status_code == 405

        garbage = b"\xff\xfe=%%&&=="
        bad_body = await post(signed(PUBLIC, dict(form_params(garbage))), garbage)
        assert bad_body.status_code == 400
        no_sid = {k: v for k, v in params.items() if k != "CallSid"}
        assert (await post(signed(PUBLIC, no_sid), urlencode(no_sid))).status_code == 400
        json_body = await post({**signed(PUBLIC, {}), "Content-Type": "application/json"},
                               b'{"CallSid": "CA1"}')
        assert json_body.status_code == 401
        too_big = await post(signed(PUBLIC, params), body + "&Pad=" + "x" * 5000)
        assert too_big.status_code == 413

        good = await post(signed(PUBLIC, params))  # an unknown call: acknowledged, no effect
        assert good.status_code == 200 and verbs(good.text) == []
        health = await d.rpc("daemon.health")
        assert health["ok"] is True and health["activeCalls"] == 0
        assert (await http.get(d.base_url + "/healthz")).json()["ok"] is True

    refusals = [r.getMessage() for r in caplog.records if "webhook refused" in r.getMessage()]
    assert any(f"tried {PUBLIC}" in line for line in refusals), refusals
    assert all(TOKEN not in r.getMessage() for r in caplog.records)


# -- publicUrl with a port, and the URL forms Twilio signs ----------------------------------------


@pytest.mark.parametrize(
    ("public", "sign_url"),
    [("https://voice.example.com:8443/voice/webhook", "exact"),
     ("https://voice.example.com:8443/voice/webhook", "no-port"),
     (PUBLIC, "exact"),
     (PUBLIC, "default-port")],
)
async def test_port_variants_of_the_signed_url_are_accepted(public: str, sign_url: Any) -> None:
    async with fake_twilio(quirks=Quirks(sign_url=sign_url)) as fake, twilio_daemon(
        fake, public=public
    ) as d:
        fake.callees[CALLEE] = Callee(script=SCRIPT)
        call_id = await initiate(d, "Port check.", "conversation")
        twilio = twilio_call_of(fake, call_id)
        await wait_call(twilio, lambda c: len(c.replies) == 1)
        assert all(x.status == 200 for x in fake.deliveries), fake.deliveries
        fetch = fake.deliveries_for(twilio.sid, "fetch")[0]
        assert fetch.url.startswith(public + "?callId=")
        expected = {"exact": public,
                    "no-port": public.replace(":8443", ""),
                    "default-port": public.replace(".com/", ".com:443/")}[sign_url]
        assert fetch.signed_url.startswith(expected + "?")
        # the bot's next turn points Twilio at the same public URL, port included
        reply = await d.rpc("voicecall.continue", {"callId": call_id, "message": "OK?"})
        assert reply["transcript"] == SCRIPT[1]
        gather = ET.fromstring(twilio.updates[0])[1]
        assert (gather.get("action") or "").startswith(public + "?")

        # the same, sent by hand to the daemon's real address
        params = status_params("CA" + "8" * 32, "ringing")
        async with httpx.AsyncClient(headers={"Connection": "close"}) as http:
            for signed_for, accepted in [(public, True),
                                         (public.replace(":8443", ""), True),
                                         (public.replace("https://voice.example.com",
                                                         "https://voice.example.com:9443"),
                                          False),
                                         (public.replace("https:", "http:"), False)]:
                response = await http.post(d.webhook_url, data=params,
                                           headers=signed(signed_for, params))
                assert (response.status_code == 200) is accepted, (signed_for, response.text)


# -- carrier quirks -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "quirks",
    [Quirks(duplicate=Quirks.kinds(True)), Quirks(retry=Quirks.kinds(True)),
     Quirks(out_of_order=True)],
    ids=["duplicate", "retry", "out-of-order"],
)
async def test_repeated_and_reordered_webhooks_have_no_second_effect(quirks: Quirks) -> None:
    greeting, question = "Hello from the assistant.", "Shall we say nine?"
    async with fake_twilio(quirks=quirks) as fake, twilio_daemon(fake) as d:
        fake.callees[CALLEE] = Callee(script=SCRIPT)
        call_id = await initiate(d, greeting, "conversation")
        twilio = twilio_call_of(fake, call_id)
        await wait_call(twilio, lambda c: len(c.replies) == 1)
        reply = await d.rpc("voicecall.continue", {"callId": call_id, "message": question})
        assert reply["transcript"] == SCRIPT[1]
        await wait_call(twilio, lambda c: len(c.replies) == 2)
        await fake.callee_hangup(twilio.sid)
        await call_done(d, call_id)

        call = await status(d, call_id)
        assert call["state"] == "completed" and call["answeredAt"]
        assert transcript(call, "bot") == [greeting, question]
        assert transcript(call, "user") == SCRIPT[:2]
        assert twilio.said == [greeting, question]  # one TwiML document followed per request
        assert all(x.status == 200 for x in fake.deliveries), fake.deliveries
        kinds = {x.kind for x in fake.deliveries}
        assert kinds == {"status", "fetch", "gather"}
        statuses = [x.param("CallStatus") for x in fake.deliveries_for(twilio.sid, "status")
                    if x.attempt == "original"]
        if quirks.out_of_order:
            assert statuses == ["in-progress", "ringing", "initiated", "completed"]
        else:
            assert statuses == ["initiated", "ringing", "in-progress", "completed"]
        for kind in kinds:
            sent = fake.deliveries_for(twilio.sid, kind)
            repeats = [x for x in sent if x.attempt != "original"]
            if quirks.duplicate or quirks.retry:
                assert len(repeats) == len(sent) // 2 > 0
                for repeat in repeats:  # the same request got the same answer
                    (first,) = [x for x in sent if x.attempt == "original"
                                and x.signature == repeat.signature]
                    assert first.body == repeat.body
            else:
                assert repeats == []
        await d.handle.journal.flush()  # terminal records are group-committed
        lines = [line for line in (d.store / "calls.jsonl").read_bytes().splitlines()
                 if call_id.encode() in line]
        assert lines[-1].count(b'"speaker":"user"') == 2


# -- REST failures --------------------------------------------------------------------------------


async def test_rest_errors_fail_the_dial_once_and_retry_idempotent_updates() -> None:
    async with fake_twilio() as fake, twilio_daemon(fake) as d:
        fake.callees[CALLEE] = Callee(script=SCRIPT)
        fake.fail_rest(503, action="create")
        with pytest.raises(RpcError) as failure:
            await initiate(d, "This dial fails.", "notify")
        assert failure.value.code == -32004 and "Twilio 20500" in failure.value.message
        (create,) = fake.requests_for("create")  # a call-creating request is never retried
        assert create.status == 503 and fake.calls == {}
        (failed,) = (await d.rpc("voicecall.status"))["calls"]
        assert failed["state"] == "failed" and "20500" in failed["metadata"]["lastError"]

        call_id = await initiate(d, "Second try.", "conversation")
        twilio = twilio_call_of(fake, call_id)
        await wait_call(twilio, lambda c: len(c.replies) == 1)
        fake.fail_rest(500, action="update", call_sid=twilio.sid)
        reply = await d.rpc("voicecall.continue", {"callId": call_id, "message": "Again?"})
        assert reply["transcript"] == SCRIPT[1]
        assert [r.status for r in fake.requests_for("update", twilio.sid)] == [500, 200]


async def test_wrong_credentials_are_reported_with_twilios_error() -> None:
    async with fake_twilio() as fake:
        wrong = {"accountSid": ACCOUNT, "authToken": "wrong-token", "apiBaseUrl": fake.url}
        async with twilio_daemon(fake, twilio=wrong) as d:
            with pytest.raises(RpcError) as failure:
                await initiate(d, "Hello.", "notify")
            assert failure.value.code == -32004
            assert failure.value.message == "Twilio 20003: Authenticate"
            assert "wrong-token" not in failure.value.message
        (create,) = fake.requests_for("create")
        assert create.status == 401


async def test_without_public_url_dialing_fails_until_one_is_known() -> None:
    async with fake_twilio() as fake, twilio_daemon(fake, public=None) as d:
        with pytest.raises(RpcError) as failure:
            await initiate(d, "Hello.", "notify")
        assert failure.value.code == -32004 and "public webhook URL" in failure.value.message
        assert fake.requests_for("create") == []

        provider = d.handle.provider
        assert isinstance(provider, TwilioProvider)
        provider.set_public_url(d.webhook_url)  # what a tunnel does once it is up
        call_id = await initiate(d, "Hello again.", "notify")
        twilio = twilio_call_of(fake, call_id)
        await wait_call(twilio, lambda c: c.done.is_set())
        assert twilio.said == ["Hello again."]
        await call_done(d, call_id)
        assert (await status(d, call_id))["state"] == "completed"


# -- the fake's own REST surface ------------------------------------------------------------------


async def test_fake_rest_api_checks_auth_and_answers_like_twilio() -> None:
    async with fake_twilio() as fake, httpx.AsyncClient(base_url=fake.url) as http:
        calls = f"/2010-04-01/Accounts/{ACCOUNT}/Calls"
        unauthorized = await http.get(f"{calls}/CA123.json", auth=(ACCOUNT, "nope"))
        assert unauthorized.status_code == 401
        assert unauthorized.json() == {"code": 20003, "message": "Authenticate",
                                       "more_info": "https://www.twilio.com/docs/errors/20003",
                                       "status": 401}
        missing = await http.get(f"{calls}/CA123.json", auth=(ACCOUNT, TOKEN))
        assert missing.status_code == 404 and missing.json()["code"] == 20404
        no_to = await http.post(f"{calls}.json", auth=(ACCOUNT, TOKEN),
                                data={"From": FROM, "Url": PUBLIC})
        assert no_to.status_code == 400 and no_to.json()["code"] == 21201
        fake.callees[CALLEE] = Callee(outcome="no-answer")
        created = await http.post(f"{calls}.json", auth=(ACCOUNT, TOKEN),
                                  data={"To": CALLEE, "From": FROM, "Url": PUBLIC})
        assert created.status_code == 201 and created.json()["status"] == "queued"
        sid = created.json()["sid"]
        assert sid.startswith("CA") and len(sid) == 34
        await wait_call(fake.calls[sid], lambda c: c.done.is_set())  # no StatusCallback: quiet
        fetched = await http.get(f"{calls}/{sid}.json", auth=(ACCOUNT, TOKEN))
        assert fetched.json()["status"] == "no-answer"
        late = await http.post(f"{calls}/{sid}.json", auth=(ACCOUNT, TOKEN),
                               data={"Twiml": "<Response><Say>hi</Say></Response>"})
        assert late.status_code == 400 and late.json()["code"] == 21220
        assert fake.deliveries == []


async def test_fake_follows_twiml_verbs_and_signs_every_request() -> None:
    """The fake against a scripted TwiML app (no daemon): relative URLs, Redirect, Pause on
    the scaled clock, an empty and a DTMF Gather result, Connect/Stream, a Url= update."""
    seen: list[tuple[str, dict[str, str], bool]] = []
    documents = {
        "/answer": '<Response><Say>One &amp; two</Say><Gather action="/g1" input="speech">'
                   "<Say>Say something</Say></Gather></Response>",
        "/g1": '<Response><Pause length="2"/><Redirect method="POST">/r1</Redirect></Response>',
        "/r1": '<Response><Gather action="/g2" actionOnEmptyResult="true" timeout="3"/>'
               "</Response>",
        "/g2": '<Response><Gather action="/g3" input="dtmf"/></Response>',
        "/g3": '<Response><Connect><Stream url="wss://media.example.com/s">'
               '<Parameter name="token" value="tok"/></Stream></Connect></Response>',
        "/final": "<Response><Say>Bye</Say><Hangup/></Response>",
        "/status": "<Response/>",
    }
    stop = trio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        url = f"http://{headers['host']}{scope['path']}"
        params = dict(parse_qs(body.decode(), keep_blank_values=True))
        form = {k: v[0] for k, v in params.items()}
        ok = validate(TOKEN, url, list(form.items()), headers["x-twilio-signature"]).ok
        seen.append((scope["path"], form, ok))
        payload = documents[scope["path"]].encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/xml")]})
        await send({"type": "http.response.body", "body": payload})

    async with trio.open_nursery() as nursery, fake_twilio(time_scale=0.001) as fake:
        base = await nursery.start(serve_asgi, app, stop)
        fake.callees[CALLEE] = Callee(script=["yes", SILENCE, Dtmf("5")])
        async with httpx.AsyncClient(base_url=fake.url, auth=(ACCOUNT, TOKEN)) as http:
            created = await http.post(
                f"/2010-04-01/Accounts/{ACCOUNT}/Calls.json",
                data={"To": CALLEE, "From": FROM, "Url": base + "/answer",
                      "StatusCallback": base + "/status",
                      "StatusCallbackEvent": "initiated ringing answered completed"})
            call = fake.calls[created.json()["sid"]]
            await wait_call(call, lambda c: bool(c.streams))
            assert call.streams == [{"url": "wss://media.example.com/s", "token": "tok"}]
            updated = await http.post(f"/2010-04-01/Accounts/{ACCOUNT}/Calls/{call.sid}.json",
                                      data={"Url": base + "/final"})
            assert updated.status_code == 200
            await wait_call(call, lambda c: c.done.is_set())
        stop.set()

    assert all(ok for _, _, ok in seen), seen
    paths = [path for path, _, _ in seen]
    assert paths == ["/status", "/status", "/status", "/answer", "/g1", "/r1", "/g2", "/g3",
                     "/final", "/status"]
    forms = dict((path, form) for path, form, _ in seen if path != "/status")
    assert forms["/g1"]["SpeechResult"] == "yes" and forms["/g1"]["Confidence"]
    assert "SpeechResult" not in forms["/g2"] and "Digits" not in forms["/g2"]
    assert forms["/g3"]["Digits"] == "5"
    assert [form["CallStatus"] for path, form, _ in seen if path == "/status"] == [
        "initiated", "ringing", "in-progress", "completed"]
    assert call.said == ["One & two", "Say something", "Bye"]
    assert call.replies == ["yes", "5"] and call.ended_by == "twiml"
    assert call.status == "completed" and call.errors == []


# -- the daemon's clock, not the carrier's (issue 8, item 4) --------------------------------------


@pytest.mark.parametrize("skew_s", [-360.0, -3600.0, 3600.0])
async def test_a_skewed_carrier_timestamp_leaves_the_answered_call_live(skew_s: float) -> None:
    """A status callback whose ``Timestamp`` is 6 min / 1 h old or 1 h ahead: the call stays
    live and ``answeredAt`` is the daemon's time (maxDurationSeconds is 300 s)."""
    async with fake_twilio(clock_skew_s=skew_s) as fake, twilio_daemon(fake) as d:
        fake.callees[CALLEE] = Callee(script=SCRIPT)
        call_id = await initiate(d, "Hello there.", "conversation")
        twilio = twilio_call_of(fake, call_id)
        # the answered callback was handled, then the TwiML fetched and answered (or, when a
        # timer counted from the carrier's clock, the call was hung up at once)
        await wait_fake(fake, lambda: twilio.terminal or any(
            x.status == 200 for x in fake.deliveries_for(twilio.sid, "fetch")))
        (answered,) = [c for c in fake.deliveries_for(twilio.sid, "status")
                       if c.param("CallStatus") == "in-progress"]
        assert answered.status == 200
        call = await status(d, call_id)
        assert call["state"] not in ("timeout", "completed", "error"), call
        assert abs(call["answeredAt"] - time.time() * 1000) < 1000
        assert abs(call["metadata"]["carrierAnsweredAt"]
                   - (call["answeredAt"] + skew_s * 1000)) < 2000  # kept, for diagnostics
        assert (await d.rpc("daemon.health"))["activeCalls"] == 1
        await d.rpc("voicecall.end", {"callId": call_id})
        await call_done(d, call_id)
        assert (await status(d, call_id))["endReason"] == "hangup-bot"
