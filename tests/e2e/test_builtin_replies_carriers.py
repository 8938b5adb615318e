"""Built-in replies on the real carriers' paths (issue #11 without a media stream): a daemon
against ``FakeTwilio`` (``<Gather>``) and ``FakeTelnyx`` (``speak`` + transcription), its
replies from a loopback ``FakeChatCompletions``. The model's ``end_call`` goodbye is spoken,
the carrier reports it played, and only then does the daemon hang up (``hangup-bot``)."""

from __future__ import annotations

import shutil
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from test_telnyx_e2e import telnyx_daemon, wait_record
from test_twilio_e2e import (
    CALLEE,
    call_done,
    fake_twilio,
    initiate,
    status,
    transcript,
    twilio_call_of,
    twilio_daemon,
)

from voicecall_trio.testing.chat import FakeChatCompletions, Reply
from voicecall_trio.testing.fake_telnyx import Callee as TelnyxCallee
from voicecall_trio.testing.fake_twilio import Callee as TwilioCallee

LIMIT_S = 15


@pytest.fixture
def store() -> Iterator[Path]:
    """A short store path: the control socket lives in it (108-byte limit)."""
    path = Path(tempfile.mkdtemp(prefix="vcr", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
GOODBYE = Reply("Goodbye, see you at eight!", end_call="the caller is done")


async def test_twilio_gather_turns_get_replies_and_end_call_hangs_up_after_the_say() -> None:
    greeting = "Hi, this is Trattoria Example calling about your booking."
    async with FakeChatCompletions([Reply("Great. For how many people?"), GOODBYE]) as llm, \
            fake_twilio() as fake, twilio_daemon(fake, responseBaseUrl=llm.url) as d:
        fake.callees[CALLEE] = TwilioCallee(script=["I'd like a table tonight.",
                                                    "Two, and that's all. Bye!",
                                                    "never said"])
        call_id = await initiate(d, greeting, "conversation")
        twilio = twilio_call_of(fake, call_id)
        with trio.fail_after(LIMIT_S):
            await twilio.wait_for(lambda c: c.done.is_set())
        await call_done(d, call_id)
        call = await status(d, call_id)
    assert twilio.said == [greeting, "Great. For how many people?",
                           "Goodbye, see you at eight!"]
    reply_doc, goodbye_doc = twilio.updates[:2]
    assert [e.tag for e in ET.fromstring(reply_doc)] == ["Say", "Gather"]  # keeps listening
    assert next(e.tag for e in ET.fromstring(goodbye_doc)) == "Say"
    assert "Gather" not in goodbye_doc  # the goodbye does not listen
    assert twilio.ended_by == "rest"  # our hang-up, after Twilio said the goodbye
    assert call["endReason"] == "hangup-bot"
    assert transcript(call, "user") == ["I'd like a table tonight.", "Two, and that's all. Bye!"]
    turns = call["metadata"]["turns"]
    assert len(turns) == 2 and "heard" not in turns[0]  # a <Gather> turn is never reported
    assert "heard" in turns[1]  # the goodbye was (the said-redirect)
    assert llm.requests[1].messages[-1] == {"role": "user",
                                             "content": "Two, and that's all. Bye!"}


async def test_telnyx_speak_turns_get_replies_and_end_call_hangs_up(store: Path) -> None:
    from voicecall_trio.testing.fake_telnyx import FakeTelnyx

    script = ["Who is this?", "OK, thanks, bye!", "never said"]
    async with FakeChatCompletions([Reply("It's the assistant of Trattoria Example."),
                                    GOODBYE]) as llm, \
            FakeTelnyx(callee=TelnyxCallee(script=script)) as fake, \
            telnyx_daemon(fake, store, responseBaseUrl=llm.url) as d:
        call_id = (await d.rpc("voicecall.initiate", {
            "to": "+14155550100", "message": "Hello!", "mode": "conversation"}))["callId"]
        with trio.fail_after(LIMIT_S):
            record = await wait_record(d, call_id, lambda r: r.terminal)
            ccid = (await fake.wait_call(call_id)).call_control_id
    assert record.end_reason == "hangup-bot"
    assert [r.json["payload"] for r in fake.requests_for("speak", ccid)] == [
        "Hello!", "It's the assistant of Trattoria Example.", "Goodbye, see you at eight!"]
    assert len(fake.requests_for("hangup", ccid)) == 1
    assert [e.text for e in record.transcript if e.speaker == "user"] == script[:2]
    turns = record.metadata["turns"]
    assert all("heard" in t and t["heard"] >= t["firstAudioOut"] for t in turns)
