"""Twilio's sans-IO call flow and callback URL grammar: values in, values out, no event loop.

The flow is fed parsed webhooks (``webhooks.parse_webhook``) and call records; its tokens
come from a counter, so every TwiML document here is exact.
"""

from __future__ import annotations

import itertools
import xml.etree.ElementTree as ET
from typing import Any
from urllib.parse import urlencode

import pytest

from voicecall_trio.config import build_config
from voicecall_trio.events import CallAnswered, CallSpeaking, CallSpeech, CallSpoken, Direction
from voicecall_trio.model import CallRecord, apply, new_record
from voicecall_trio.providers import InboundDecision, InboundOutcome
from voicecall_trio.providers.twilio import urls
from voicecall_trio.providers.twilio.flow import DEFAULT_GREETING, Reply, TwilioFlow
from voicecall_trio.providers.twilio.webhooks import RequestKind, TwilioWebhook, parse_webhook

BASE = "https://voice.example.com/voice/webhook"
SID = "CA11111111111111111111111111111111"


def make_flow(**extra: Any) -> TwilioFlow:
    doc: dict[str, Any] = {"provider": "mock", "tts": {"voice": "Polly.Joanna"}, **extra}
    counter = itertools.count(1)
    return TwilioFlow(build_config(doc, {}), secret=b"s" * 32,
                      new_token=lambda: f"T{next(counter)}")


def record(mode: str = "conversation", message: str = "Hello there",
           direction: Direction = "outbound", call_id: str = "c1") -> CallRecord:
    return new_record(provider="twilio", direction=direction, from_="+15550001111",
                      to="+15550002222", provider_call_id=SID, call_id=call_id, at=0,
                      metadata={"mode": mode, "initialMessage": message})


def hook(query: str, **params: str) -> TwilioWebhook:
    body = urlencode({"CallSid": SID, "CallStatus": "in-progress", **params}).encode()
    return parse_webhook(body, query)


def verbs(reply: Reply) -> list[str]:
    return [child.tag for child in ET.fromstring(reply.twiml)]


def action(reply: Reply) -> str:
    gather = ET.fromstring(reply.twiml).find("Gather")
    assert gather is not None
    return gather.attrib["action"]


# -- urls -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "callback"),
    [
        (urls.answer_url(BASE, "c1"), urls.Callback(call_id="c1")),
        (urls.status_url(BASE, "c1"), urls.Callback(call_id="c1", type="status")),
        (urls.gather_url(BASE, "c1", "T1"), urls.Callback(call_id="c1", type="gather", turn="T1")),
        (urls.hold_url(BASE, "c1"), urls.Callback(call_id="c1", type="hold")),
        (urls.hold_url(BASE, "c1", said="S1"),
         urls.Callback(call_id="c1", type="hold", said="S1")),
        (BASE, urls.Callback()),
    ],
)
def test_every_url_we_build_parses_back(url: str, callback: urls.Callback) -> None:
    _, _, query = url.partition("?")
    assert urls.parse_callback(query) == callback


def test_urls_keep_the_grammar_twilio_already_has() -> None:
    assert urls.gather_url(BASE, "c1", "T1") == f"{BASE}?callId=c1&type=gather&turn=T1"
    held = urls.hold_url(BASE + "?x=1", "c 1", said="S")
    assert held == f"{BASE}?x=1&callId=c+1&type=hold&said=S"
    assert urls.parse_callback("callId=&turn=&said=&type=") == urls.Callback()


@pytest.mark.parametrize(
    ("public", "base"),
    [
        ("https://h.example", "https://h.example/voice/webhook"),
        ("https://h.example/", "https://h.example/voice/webhook"),
        ("https://h.example/twilio/in", "https://h.example/twilio/in"),
    ],
)
def test_webhook_base_adds_serve_path_only_to_a_bare_host(public: str, base: str) -> None:
    assert urls.webhook_base(public, "/voice/webhook") == base


@pytest.mark.parametrize(
    ("base", "stream"),
    [
        ("https://h.example/voice/webhook", "wss://h.example/voice/stream"),
        ("http://127.0.0.1:3334/voice/webhook", "ws://127.0.0.1:3334/voice/stream"),
    ],
)
def test_stream_url_follows_the_scheme(base: str, stream: str) -> None:
    assert urls.stream_url(base, "/voice/stream") == stream


# -- outbound fetches ---------------------------------------------------------------------------


def test_notify_says_the_message_once_then_only_hangs_up() -> None:
    flow, call = make_flow(), record("notify", "Your table is ready")
    first = flow.fetch(hook("callId=c1"), call, BASE)
    assert verbs(first) == ["Say", "Pause", "Hangup"]  # notifyHangupDelaySec
    assert first.events == (CallSpeaking(id=f"twilio:{SID}:say:initial", call_id="c1",
                                         provider_call_id=SID, text="Your table is ready"),)
    again = flow.fetch(hook("callId=c1"), call, BASE)
    assert verbs(again) == ["Hangup"] and again.events == ()


def test_initial_message_served_before_a_restart_is_not_said_again() -> None:
    call = record("notify")
    (spoken,) = make_flow().fetch(hook("callId=c1"), call, BASE).events
    call = apply(call, spoken, at=1)
    assert verbs(make_flow().fetch(hook("callId=c1"), call, BASE)) == ["Hangup"]


def test_conversation_greets_then_listens_on_one_turn() -> None:
    flow, call = make_flow(), record()
    first = flow.fetch(hook("callId=c1"), call, BASE)
    assert verbs(first) == ["Say", "Gather"]
    assert action(first) == urls.gather_url(BASE, "c1", "T1")
    again = flow.fetch(hook("callId=c1"), call, BASE)
    assert verbs(again) == ["Gather"] and action(again) == action(first) and again.events == ()


def test_a_terminal_record_gets_hangup() -> None:
    call = apply(record(), hook("callId=c1&type=status", CallStatus="completed").events[0], at=1)
    assert call.terminal
    assert verbs(make_flow().fetch(hook("callId=c1"), call, BASE)) == ["Hangup"]


def test_streaming_conversation_connects_the_stream_with_a_token_we_can_read_back() -> None:
    flow = make_flow(streaming={"enabled": True, "openaiApiKey": "sk-test"})
    reply = flow.fetch(hook("callId=c1"), record(), BASE)
    # the greeting is spoken over the stream (interruptible), not by a <Say>
    assert verbs(reply) == ["Connect"] and reply.events == ()
    stream = ET.fromstring(reply.twiml).find("Connect/Stream")
    assert stream is not None and stream.attrib["url"] == "wss://voice.example.com/voice/stream"
    param = stream.find("Parameter")
    assert param is not None and flow.stream_call_id(param.attrib["value"]) == "c1"
    assert flow.stream_call_id("c2." + param.attrib["value"].rpartition(".")[2]) is None


def test_streaming_without_an_openai_key_stays_on_gather() -> None:
    flow = make_flow(streaming={"enabled": True})
    reply = flow.fetch(hook("callId=c1"), record(), BASE)
    assert verbs(reply) == ["Say", "Gather"]


def test_streaming_inbound_call_is_answered_with_the_stream_alone() -> None:
    flow = make_flow(streaming={"enabled": True, "openaiApiKey": "sk-test"})
    offer = hook("", Direction="inbound", CallStatus="ringing")
    call = record(direction="inbound", message="")
    reply = flow.inbound(offer, InboundOutcome(InboundDecision.ACCEPT, call), BASE)
    assert verbs(reply) == ["Connect"]
    assert [type(e) for e in reply.events] == [CallAnswered]


def test_streaming_notify_calls_keep_say_and_hangup() -> None:
    flow = make_flow(streaming={"enabled": True, "openaiApiKey": "sk-test"})
    reply = flow.fetch(hook("callId=c1"), record(mode="notify"), BASE)
    assert verbs(reply)[0] == "Say" and verbs(reply)[-1] == "Hangup"


# -- inbound ------------------------------------------------------------------------------------


def test_inbound_rejected_is_rejected_and_noted() -> None:
    offer = hook("", Direction="inbound", CallStatus="ringing")
    reply = make_flow().inbound(offer, InboundOutcome(InboundDecision.REJECT, None), BASE)
    assert verbs(reply) == ["Reject"] and reply.events == () and reply.note


def test_inbound_accepted_is_answered_and_greeted() -> None:
    offer = hook("", Direction="inbound", CallStatus="ringing")
    call = record(direction="inbound", message="")
    reply = make_flow().inbound(offer, InboundOutcome(InboundDecision.ACCEPT, call), BASE)
    assert verbs(reply) == ["Say", "Gather"]
    answered, greeting = reply.events
    assert answered == CallAnswered(id=f"twilio:{SID}:answered", call_id="c1",
                                    provider_call_id=SID)
    assert isinstance(greeting, CallSpeaking) and greeting.text == DEFAULT_GREETING


# -- turns ------------------------------------------------------------------------------------


def test_only_the_current_turns_result_is_delivered() -> None:
    flow, call = make_flow(), record()
    flow.fetch(hook("callId=c1"), call, BASE)  # turn T1
    stale = flow.gather(hook("callId=c1&type=gather&turn=T0", SpeechResult="hi"), call, BASE)
    assert verbs(stale) == ["Pause", "Redirect"] and stale.events == () and stale.note
    current = flow.gather(hook("callId=c1&type=gather&turn=T1", SpeechResult="hi"), call, BASE)
    assert verbs(current) == ["Pause", "Redirect"]
    assert [type(e) for e in current.events] == [CallSpeech]


def test_an_empty_result_keeps_listening_on_the_same_turn() -> None:
    flow, call = make_flow(), record()
    flow.fetch(hook("callId=c1"), call, BASE)
    reply = flow.gather(hook("callId=c1&type=gather&turn=T1"), call, BASE)
    assert verbs(reply) == ["Gather"] and action(reply) == urls.gather_url(BASE, "c1", "T1")


def test_speak_makes_its_token_current_before_the_update_and_a_failure_restores() -> None:
    flow, call = make_flow(), record()
    flow.fetch(hook("callId=c1"), call, BASE)  # T1
    turn = flow.speak(call, "What next?", listen=True, base=BASE)
    assert turn.token == "T2" and "turn=T2" in turn.twiml
    old = hook("callId=c1&type=gather&turn=T1", SpeechResult="hi")
    assert flow.gather(old, call, BASE).events == ()
    flow.speak_failed(turn)
    assert flow.gather(old, call, BASE).events != ()


def test_a_say_without_listening_reports_its_end_once() -> None:
    flow, call = make_flow(), record()
    turn = flow.speak(call, "Goodbye", listen=False, base=BASE)
    assert urls.hold_url(BASE, "c1", said=turn.token).replace("&", "&amp;") in turn.twiml
    said = hook(f"callId=c1&type=hold&said={turn.token}")
    assert said.kind is RequestKind.HOLD
    first = flow.hold(said, call, BASE)
    assert first.events == (CallSpoken(id=f"twilio:{SID}:spoken:{turn.token}", call_id="c1",
                                       provider_call_id=SID),)
    assert flow.hold(said, call, BASE).events == ()


def test_unknown_calls_get_hangup_and_ended_calls_are_forgotten() -> None:
    flow, call = make_flow(), record()
    assert verbs(flow.gather(hook("type=gather&turn=T1"), None, BASE)) == ["Hangup"]
    assert verbs(flow.hold(hook("type=hold"), None, BASE)) == ["Hangup"]
    flow.fetch(hook("callId=c1"), call, BASE)
    ended = apply(call, hook("callId=c1&type=status", CallStatus="completed").events[0], at=1)
    flow.status(ended)
    result = hook("callId=c1&type=gather&turn=T1", SpeechResult="hi")
    assert flow.gather(result, call, BASE).events == ()  # its turn went with it


def test_the_flow_remembers_a_bounded_number_of_calls() -> None:
    config = build_config({"provider": "mock"}, {})
    flow = TwilioFlow(config, secret=b"s", new_token=lambda: "T", live_calls_limit=2)
    calls = [record(call_id=f"c{n}") for n in range(3)]
    for call in calls:
        flow.fetch(hook(f"callId={call.call_id}"), call, BASE)
    for call, kept in zip(reversed(calls), [True, True, False], strict=True):
        result = hook(f"callId={call.call_id}&type=gather&turn=T", SpeechResult="hi")
        assert bool(flow.gather(result, call, BASE).events) is kept
