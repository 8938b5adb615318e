"""A reload reaches the Twilio provider: after ``tts.voice`` changes, the next call's TwiML
speaks with the new voice. In-process daemon on ``FakeTwilio``; the reload is driven directly
(``Reloader.reload``, what SIGHUP runs), so no signal is involved."""

from __future__ import annotations

import json
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import trio

from voicecall_trio.reload import ReloadPlan
from voicecall_trio.reloader import Reloader
from voicecall_trio.testing import running_daemon
from voicecall_trio.testing.fake_twilio import FakeTwilio

ACCOUNT = "AC" + "6" * 32
TOKEN = "reload-twilio-auth-token-01234"
FROM = "+15550001234"
CALLEE = "+15555550123"
PUBLIC = "https://voice.example.com/voice/webhook"
WAIT_S = 10.0


async def notify_voice(d: Any, fake: FakeTwilio, message: str) -> str | None:
    """Place a notify call; the ``voice`` of the ``<Say>`` Twilio fetched for it."""
    result = await d.rpc("voicecall.initiate", {"to": CALLEE, "message": message,
                                                "mode": "notify"})
    call_id = result["callId"]
    with trio.fail_after(WAIT_S):
        await fake.wait_for(lambda: any(
            c.done.is_set() and parse_qs(urlsplit(c.url or "").query).get("callId") == [call_id]
            for c in fake.calls.values()))
    (sid,) = [s for s, c in fake.calls.items()
              if parse_qs(urlsplit(c.url or "").query).get("callId") == [call_id]]
    (fetch,) = fake.deliveries_for(sid, "fetch")
    say = ET.fromstring(fetch.body).find("Say")
    assert say is not None and say.text == message
    live = d.handle.supervisor.live.get(call_id)
    if live is not None:
        with trio.fail_after(WAIT_S):
            await live.task_done.wait()
    return say.get("voice")


async def test_a_reloaded_voice_is_used_by_the_next_call() -> None:
    store = Path(tempfile.mkdtemp(prefix="vc"))
    fake = FakeTwilio(account_sid=ACCOUNT, auth_token=TOKEN, phone_number=FROM,
                      voice_url=PUBLIC)
    doc: dict[str, Any] = {
        "provider": "twilio", "fromNumber": FROM, "publicUrl": PUBLIC,
        "outbound": {"notifyHangupDelaySec": 0.1},
    }
    async with fake:
        doc["twilio"] = {"accountSid": ACCOUNT, "authToken": TOKEN, "apiBaseUrl": fake.url}
        async with running_daemon(doc, store=store) as d:
            fake.tunnel(PUBLIC, d.base_url)
            assert await notify_voice(d, fake, "Before the reload.") is None  # coral: not Twilio's

            path = store / "config.json"
            path.write_text(json.dumps({**doc, "store": str(store), "serve": {"port": 0},
                                        "tts": {"voice": "Polly.Joanna"}}))
            plan = await Reloader(d.handle, path, {}).reload()
            assert isinstance(plan, ReloadPlan) and plan.applied == ("tts.voice",)
            assert plan.needs_restart == ()
            assert await notify_voice(d, fake, "After the reload.") == "Polly.Joanna"
