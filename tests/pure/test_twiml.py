"""TwiML builders: well-formed, escaped, and shaped the way Twilio plays them."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from hypothesis import given
from hypothesis import strategies as st

from voicecall_trio.providers.twilio import twiml


def _root(document: str) -> ET.Element:
    assert document.startswith(twiml.XML_DECL)
    root = ET.fromstring(document.encode())
    assert root.tag == "Response"
    return root


def _tags(document: str) -> list[str]:
    return [child.tag for child in _root(document)]


def test_empty_reject_hangup() -> None:
    assert twiml.empty().endswith("<Response></Response>")
    assert _tags(twiml.empty()) == []
    assert _tags(twiml.reject()) == ["Reject"]
    assert _root(twiml.reject("busy")).find("Reject").get("reason") == "busy"  # type: ignore[union-attr]
    assert _tags(twiml.hangup()) == ["Hangup"]


def test_notify_says_then_hangs_up() -> None:
    doc = twiml.notify("Your <parcel> & \"box\" arrived", voice="Polly.Joanna")
    root = _root(doc)
    assert [c.tag for c in root] == ["Say", "Hangup"]
    say = root[0]
    assert say.text == 'Your <parcel> & "box" arrived'
    assert say.get("voice") == "Polly.Joanna"
    assert "&lt;parcel&gt;" in doc


def test_notify_with_hangup_delay() -> None:
    root = _root(twiml.notify("hi", pause_s=2.5))
    assert [c.tag for c in root] == ["Say", "Pause", "Hangup"]
    assert root[1].get("length") == "3"


def test_turn_says_and_gathers_speech() -> None:
    url = "https://h.example/voice/webhook?callId=c1&type=gather&turn=T1"
    doc = twiml.turn("How can I help?", url)
    root = _root(doc)
    assert [c.tag for c in root] == ["Say", "Gather"]
    gather = root[1]
    assert gather.get("input") == "speech"
    assert gather.get("speechTimeout") == "auto"
    assert gather.get("method") == "POST"
    assert gather.get("action") == url
    assert gather.get("actionOnEmptyResult") == "true"
    assert "&amp;type=gather" in doc
    assert _tags(twiml.turn("", url)) == ["Gather"]  # nothing to say: just listen


def test_hold_pauses_then_redirects_back() -> None:
    url = "https://h.example/voice/webhook?callId=c1&type=hold"
    root = _root(twiml.hold(url, pause_s=5))
    assert [c.tag for c in root] == ["Pause", "Redirect"]
    assert root[0].get("length") == "5"
    assert root[1].text == url and root[1].get("method") == "POST"
    assert _root(twiml.hold(url))[0].get("length") == str(twiml.HOLD_PAUSE_S)


def test_say_then_hold() -> None:
    root = _root(twiml.say_then_hold("one moment", "https://h/x?said=S1"))
    assert [c.tag for c in root] == ["Say", "Redirect"]


def test_stream_with_token_parameter() -> None:
    doc = twiml.stream("wss://h.example/voice/stream", "c1.tok\"en", message="Hi")
    root = _root(doc)
    assert [c.tag for c in root] == ["Say", "Connect"]
    stream = root[1].find("Stream")
    assert stream is not None and stream.get("url") == "wss://h.example/voice/stream"
    params = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
    assert params == {"token": 'c1.tok"en'}
    assert _tags(twiml.stream("wss://h/s", "t")) == ["Connect"]


def test_voice_only_when_twilio_knows_it() -> None:
    for good in ("Polly.Joanna", "Polly.Joanna-Neural", "Google.en-US-Neural2-A", "alice",
                 "man", "woman"):
        assert twiml.twilio_voice(good) == good
        assert f'voice="{good}"' in twiml.say("x", good)
    for bad in ("coral", "alloy", "", None, 'Polly.x" onload="'):
        assert twiml.twilio_voice(bad) is None
        assert "voice=" not in twiml.say("x", bad)


def test_empty_say_is_omitted() -> None:
    assert twiml.say("   ") == ""
    assert twiml.say("\x00\x01 ") == ""
    assert _tags(twiml.notify("")) == ["Hangup"]


@given(st.text())
def test_any_text_stays_text(text: str) -> None:
    """Model output can never break out of <Say> or inject verbs."""
    doc = twiml.turn(text, "https://h/x?a=1&b=<2>")
    root = _root(doc)
    tags = [c.tag for c in root]
    assert tags in (["Say", "Gather"], ["Gather"])
    if tags[0] == "Say":
        assert len(list(root[0])) == 0
    assert root[-1].get("action") == "https://h/x?a=1&b=<2>"
