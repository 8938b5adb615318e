"""TwilioProvider through httpx.MockTransport and a small in-memory CallDirectory."""

from __future__ import annotations

import base64
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
import trio

from voicecall_trio.config import build_config
from voicecall_trio.errors import ProviderError
from voicecall_trio.events import (
    CallAnswered,
    CallEnded,
    CallSpeaking,
    CallSpeech,
    CallSpoken,
)
from voicecall_trio.model import CallRecord, new_record
from voicecall_trio.providers import (
    RemoteStatus,
    WebhookRequest,
    WebhookResponse,
)
from voicecall_trio.providers.twilio.shell import TwilioProvider
from voicecall_trio.providers.twilio.signature import compute_signature
from voicecall_trio.testing.directory import FakeDirectory

TOKEN = "test-auth-token-0123456789abcdef"
SID = "AC00000000000000000000000000000000"
PUBLIC = "https://voice.example.com/voice/webhook"
CALL_SID = "CA11111111111111111111111111111111"


# -- fakes ------------------------------------------------------------------------------------


Handler = Callable[[httpx.Request], httpx.Response]


class Carrier:
    """Records REST requests; answers with queued responses per (method, path suffix)."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.responses: dict[tuple[str, str], list[httpx.Response]] = {}

    def queue(self, method: str, suffix: str, *responses: httpx.Response) -> None:
        self.responses.setdefault((method, suffix), []).extend(responses)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        for (method, suffix), queued in self.responses.items():
            if request.method == method and request.url.path.endswith(suffix) and queued:
                return queued.pop(0) if len(queued) > 1 else queued[0]
        return httpx.Response(200, json={"sid": CALL_SID, "status": "queued"})

    def form(self, index: int = -1) -> dict[str, list[str]]:
        return parse_qs(self.requests[index].content.decode(), keep_blank_values=True)


def make_config(**extra: Any) -> Any:
    doc: dict[str, Any] = {
        "provider": "twilio",
        "fromNumber": "+15550001111",
        "twilio": {"accountSid": SID, "authToken": TOKEN, "apiBaseUrl": "https://api.test"},
        "publicUrl": PUBLIC,
        "tts": {"voice": "Polly.Joanna"},
    }
    doc.update(extra)
    return build_config(doc, {})


@pytest.fixture
def carrier() -> Carrier:
    return Carrier()


@pytest.fixture
async def http(carrier: Carrier) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.MockTransport(carrier)) as client:
        yield client


@pytest.fixture
def provider(http: httpx.AsyncClient) -> TwilioProvider:
    return TwilioProvider(make_config(), http)


def outbound(mode: str = "conversation", message: str = "Hello there", **kw: Any) -> CallRecord:
    return new_record(provider="twilio", direction="outbound", from_="+15550001111",
                      to="+15550002222", provider_call_id=kw.get("sid", CALL_SID),
                      metadata={"mode": mode, "initialMessage": message},
                          call_id=str(uuid.uuid4()), at=int(time.time() * 1000))


def webhook(
    params: dict[str, str],
    query: str = "",
    *,
    sign: bool = True,
    signature: str | None = None,
    body: bytes | None = None,
    method: str = "POST",
) -> WebhookRequest:
    headers = {"content-type": "application/x-www-form-urlencoded"}
    url = f"{PUBLIC}?{query}" if query else PUBLIC
    if signature is not None:
        headers["x-twilio-signature"] = signature
    elif sign:
        headers["x-twilio-signature"] = compute_signature(TOKEN, url, params)
    return WebhookRequest(
        method=method, path="/voice/webhook", query_string=query, headers=headers,
        body=urlencode(params).encode() if body is None else body,
        remote_addr="198.51.100.7", scheme="http", host="127.0.0.1:3334",
    )


def answer_params(sid: str = CALL_SID, **extra: str) -> dict[str, str]:
    return {"AccountSid": SID, "CallSid": sid, "CallStatus": "in-progress",
            "Direction": "outbound-api", "From": "+15550001111", "To": "+15550002222", **extra}


def root(response: WebhookResponse) -> ET.Element:
    assert response.status == 200, response.body
    assert response.content_type == "text/xml"
    element = ET.fromstring(response.body)
    assert element.tag == "Response"
    return element


def tags(response: WebhookResponse) -> list[str]:
    return [child.tag for child in root(response)]


def query_of(url: str | None) -> dict[str, str]:
    assert url is not None
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


# -- REST side ---------------------------------------------------------------------------------


async def test_dial_creates_the_call(provider: TwilioProvider, carrier: Carrier) -> None:
    record = outbound()
    assert await provider.dial(record) == CALL_SID
    (request,) = carrier.requests
    assert request.method == "POST"
    assert str(request.url) == f"https://api.test/2010-04-01/Accounts/{SID}/Calls.json"
    auth = base64.b64decode(request.headers["authorization"].split()[1]).decode()
    assert auth == f"{SID}:{TOKEN}"
    form = carrier.form()
    assert form["To"] == ["+15550002222"] and form["From"] == ["+15550001111"]
    assert form["Url"] == [f"{PUBLIC}?callId={record.call_id}"]
    assert form["StatusCallback"] == [f"{PUBLIC}?callId={record.call_id}&type=status"]
    assert form["StatusCallbackEvent"] == ["initiated", "ringing", "answered", "completed"]
    assert form["StatusCallbackMethod"] == ["POST"] and form["Method"] == ["POST"]
    assert form["Timeout"] == ["30"]


async def test_dial_error_has_twilio_code_and_is_not_retried(
    provider: TwilioProvider, carrier: Carrier, autojump_clock: trio.testing.MockClock
) -> None:
    carrier.queue("POST", "/Calls.json", httpx.Response(
        400, json={"code": 21211, "message": "The 'To' number is not valid.", "status": 400}))
    with pytest.raises(ProviderError) as info:
        await provider.dial(outbound())
    assert "21211" in str(info.value) and "The 'To' number is not valid." in str(info.value)
    assert TOKEN not in str(info.value)
    carrier.responses.clear()
    carrier.queue("POST", "/Calls.json", httpx.Response(503, json={"code": 20503}))
    with pytest.raises(ProviderError):
        await provider.dial(outbound())
    assert len(carrier.requests) == 2  # one attempt each: a dial is never retried


async def test_dial_needs_a_public_url(http: httpx.AsyncClient) -> None:
    provider = TwilioProvider(make_config(publicUrl=None), http)
    with pytest.raises(ProviderError, match="public webhook URL"):
        await provider.dial(outbound())


async def test_hangup_404_is_ok(provider: TwilioProvider, carrier: Carrier) -> None:
    carrier.queue("POST", f"/Calls/{CALL_SID}.json",
                  httpx.Response(404, json={"code": 20404, "message": "not found"}))
    await provider.hangup(outbound())
    assert carrier.requests[0].url.path.endswith(f"/Calls/{CALL_SID}.json")
    assert carrier.form() == {"Status": ["completed"]}


async def test_hangup_is_retried(
    provider: TwilioProvider, carrier: Carrier, autojump_clock: trio.testing.MockClock
) -> None:
    carrier.queue("POST", f"/Calls/{CALL_SID}.json", httpx.Response(503), httpx.Response(500),
                  httpx.Response(200, json={"sid": CALL_SID, "status": "completed"}))
    await provider.hangup(outbound())
    assert len(carrier.requests) == 3


async def test_hangup_without_call_sid_sends_nothing(
    provider: TwilioProvider, carrier: Carrier
) -> None:
    await provider.hangup(outbound(sid=None))
    assert carrier.requests == []


@pytest.mark.parametrize(
    ("status", "expected", "reason", "answered"),
    [("ringing", RemoteStatus.LIVE, None, False), ("in-progress", RemoteStatus.LIVE, None, True),
     ("completed", RemoteStatus.ENDED, "completed", True),
     ("busy", RemoteStatus.ENDED, "busy", False),
     ("canceled", RemoteStatus.ENDED, "no-answer", False)],
)
async def test_fetch_state(
    provider: TwilioProvider, carrier: Carrier, status: str, expected: RemoteStatus,
    reason: str | None, answered: bool,
) -> None:
    carrier.queue("GET", f"/Calls/{CALL_SID}.json",
                  httpx.Response(200, json={"sid": CALL_SID, "status": status}))
    state = await provider.fetch_state(outbound())
    assert (state.status, state.end_reason, state.answered) == (expected, reason, answered)
    assert carrier.requests[-1].method == "GET"


async def test_fetch_state_unknown_call(provider: TwilioProvider, carrier: Carrier) -> None:
    carrier.queue("GET", f"/Calls/{CALL_SID}.json", httpx.Response(404, json={"code": 20404}))
    assert (await provider.fetch_state(outbound())).status is RemoteStatus.UNKNOWN


async def test_speak_and_listen_updates_the_call(
    provider: TwilioProvider, carrier: Carrier
) -> None:
    directory = FakeDirectory()
    record = directory.add(outbound())
    async with trio.open_nursery() as nursery:
        await nursery.start(provider.run, directory)
        await provider.speak(record, "What time suits you?", listen=True)
        nursery.cancel_scope.cancel()
    (request,) = carrier.requests
    assert request.url.path.endswith(f"/Calls/{CALL_SID}.json")
    document = ET.fromstring(carrier.form()["Twiml"][0])
    assert [c.tag for c in document] == ["Say", "Gather"]
    assert document[0].text == "What time suits you?"
    assert document[0].get("voice") == "Polly.Joanna"
    action = query_of(document[1].get("action"))
    assert action["callId"] == record.call_id and action["type"] == "gather" and action["turn"]
    assert directory.delivered == []  # the supervisor records CallSpeaking for speak()
    # a second speak: fresh turn token
    await provider.speak(record, "Again?", listen=True)
    again = ET.fromstring(carrier.form()["Twiml"][0])
    assert query_of(again[1].get("action"))["turn"] != action["turn"]


async def test_speak_is_retried_as_idempotent(
    provider: TwilioProvider, carrier: Carrier, autojump_clock: trio.testing.MockClock
) -> None:
    carrier.queue("POST", f"/Calls/{CALL_SID}.json", httpx.Response(502), httpx.Response(200))
    await provider.speak(outbound(), "hi", listen=False)
    assert len(carrier.requests) == 2


async def test_speak_without_listening_reports_when_spoken(
    provider: TwilioProvider, carrier: Carrier
) -> None:
    directory = FakeDirectory()
    record = directory.add(outbound())
    async with trio.open_nursery() as nursery:
        await nursery.start(provider.run, directory)
        await provider.speak(record, "One moment please.", listen=False)
        nursery.cancel_scope.cancel()
    document = ET.fromstring(carrier.form()["Twiml"][0])
    assert [c.tag for c in document] == ["Say", "Redirect"]
    hold_query = urlsplit(document[1].text or "").query
    assert query_of(document[1].text)["type"] == "hold"
    response = await provider.handle_webhook(webhook(answer_params(), hold_query), directory)
    assert tags(response) == ["Pause", "Redirect"]
    assert directory.kinds() == ["CallSpoken"]
    assert isinstance(directory.delivered[-1], CallSpoken)
    # the said-marker counts once
    await provider.handle_webhook(webhook(answer_params(Extra="x"), hold_query), directory)
    assert directory.kinds() == ["CallSpoken"]


# -- webhooks: TwiML -----------------------------------------------------------------------------


async def test_notify_twiml_served_once(provider: TwilioProvider) -> None:
    directory = FakeDirectory()
    record = directory.add(outbound("notify", "Your package arrived."))
    first = await provider.handle_webhook(webhook(answer_params(), f"callId={record.call_id}"),
                                          directory)
    element = root(first)
    assert [c.tag for c in element] == ["Say", "Pause", "Hangup"]
    assert element[0].text == "Your package arrived."
    assert element[1].get("length") == "3"  # notifyHangupDelaySec
    assert directory.kinds() == ["CallAnswered", "CallSpeaking"]
    assert directory.records[record.call_id].transcript[0].text == "Your package arrived."
    second = await provider.handle_webhook(
        webhook(answer_params(AnsweredBy="human"), f"callId={record.call_id}"), directory)
    assert tags(second) == ["Hangup"]
    assert [e for e in directory.delivered if isinstance(e, CallSpeaking)] == [
        directory.delivered[1]]


async def test_conversation_turn_and_gather(provider: TwilioProvider) -> None:
    directory = FakeDirectory()
    record = directory.add(outbound("conversation", "Hi, it's your assistant."))
    first = root(await provider.handle_webhook(
        webhook(answer_params(), f"callId={record.call_id}"), directory))
    assert [c.tag for c in first] == ["Say", "Gather"]
    action = first[1].get("action")
    assert action is not None and action.startswith(PUBLIC + "?")
    turn = query_of(action)["turn"]
    gather_query = urlsplit(action).query

    speech = answer_params(SpeechResult="Tomorrow at nine", Confidence="0.93")
    held = await provider.handle_webhook(webhook(speech, gather_query), directory)
    assert tags(held) == ["Pause", "Redirect"]
    last = directory.delivered[-1]
    assert isinstance(last, CallSpeech) and last.text == "Tomorrow at nine"
    assert last.id == f"twilio:{CALL_SID}:gather:{turn}:speech"
    assert directory.records[record.call_id].transcript[-1].text == "Tomorrow at nine"

    # nothing heard: listen again on the same turn, no event
    count = len(directory.delivered)
    empty = root(await provider.handle_webhook(webhook(answer_params(), gather_query),
                                               directory))
    assert [c.tag for c in empty] == ["Gather"]
    assert query_of(empty[0].get("action"))["turn"] == turn
    assert len(directory.delivered) == count


async def test_stale_turn_token_is_acknowledged_but_ignored(provider: TwilioProvider) -> None:
    directory = FakeDirectory()
    record = directory.add(outbound())
    await provider.handle_webhook(webhook(answer_params(), f"callId={record.call_id}"), directory)
    before = list(directory.delivered)
    stale = webhook(answer_params(SpeechResult="old words"),
                    f"callId={record.call_id}&type=gather&turn=not-the-current-one")
    response = await provider.handle_webhook(stale, directory)
    assert tags(response) == ["Pause", "Redirect"]
    assert directory.delivered == before


async def test_gather_after_speak_uses_new_token_only(
    provider: TwilioProvider, carrier: Carrier
) -> None:
    directory = FakeDirectory()
    record = directory.add(outbound())
    first = root(await provider.handle_webhook(
        webhook(answer_params(), f"callId={record.call_id}"), directory))
    old_query = urlsplit(first[1].get("action") or "").query
    await provider.speak(record, "Next question?", listen=True)
    new_action = ET.fromstring(carrier.form()["Twiml"][0])[1].get("action") or ""
    await provider.handle_webhook(webhook(answer_params(SpeechResult="late"), old_query),
                                  directory)
    assert not any(isinstance(e, CallSpeech) for e in directory.delivered)
    await provider.handle_webhook(
        webhook(answer_params(SpeechResult="fresh"), urlsplit(new_action).query), directory)
    assert [e.text for e in directory.delivered if isinstance(e, CallSpeech)] == ["fresh"]


async def test_gather_result_racing_the_update_response_is_delivered() -> None:
    """Twilio may post the new Gather's result before our REST update has its answer."""
    directory = FakeDirectory()
    record = directory.add(outbound())
    answers: list[WebhookResponse] = []
    provider: TwilioProvider | None = None

    async def twilio(request: httpx.Request) -> httpx.Response:
        twiml = parse_qs(request.content.decode())["Twiml"][0]
        action = ET.fromstring(twiml)[1].get("action") or ""
        assert provider is not None
        answers.append(await provider.handle_webhook(
            webhook(answer_params(SpeechResult="quick"), urlsplit(action).query), directory))
        return httpx.Response(200, json={"sid": CALL_SID, "status": "in-progress"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(twilio)) as client:
        provider = TwilioProvider(make_config(), client)
        await provider.speak(record, "Quick question?", listen=True)
    assert tags(answers[0]) == ["Pause", "Redirect"]
    assert [e.text for e in directory.delivered if isinstance(e, CallSpeech)] == ["quick"]


async def test_failed_update_keeps_the_playing_documents_turn(
    provider: TwilioProvider, carrier: Carrier
) -> None:
    directory = FakeDirectory()
    record = directory.add(outbound())
    first = root(await provider.handle_webhook(
        webhook(answer_params(), f"callId={record.call_id}"), directory))
    old_query = urlsplit(first[1].get("action") or "").query
    carrier.queue("POST", f"/Calls/{CALL_SID}.json",
                  httpx.Response(400, json={"code": 21220, "message": "Call is not in-progress"}))
    with pytest.raises(ProviderError):
        await provider.speak(record, "Next?", listen=True)
    await provider.handle_webhook(webhook(answer_params(SpeechResult="still"), old_query),
                                  directory)
    assert [e.text for e in directory.delivered if isinstance(e, CallSpeech)] == ["still"]


async def test_streaming_conversation_connects_the_stream(http: httpx.AsyncClient) -> None:
    provider = TwilioProvider(
        make_config(streaming={"enabled": True, "openaiApiKey": "sk-test"}), http)
    directory = FakeDirectory()
    record = directory.add(outbound("conversation", "Hello!"))
    element = root(await provider.handle_webhook(
        webhook(answer_params(), f"callId={record.call_id}"), directory))
    assert [c.tag for c in element] == ["Connect"]  # the greeting goes over the stream
    assert provider.streams_call(record)
    stream = element[0].find("Stream")
    assert stream is not None
    assert stream.get("url") == "wss://voice.example.com/voice/stream"
    (param,) = stream.findall("Parameter")
    token = param.get("value") or ""
    assert param.get("name") == "token"
    assert provider.stream_call_id(token) == record.call_id
    tampered = token[:-1] + ("B" if token[-1] == "A" else "A")  # differs whatever it was
    assert provider.stream_call_id(tampered) is None
    assert provider.stream_call_id("other-call." + token.rpartition(".")[2]) is None


async def test_inbound_rejected(http: httpx.AsyncClient) -> None:
    provider = TwilioProvider(make_config(), http)
    directory = FakeDirectory(accept=False)
    params = {"CallSid": CALL_SID, "CallStatus": "ringing", "Direction": "inbound",
              "From": "+14155551234", "To": "+15550001111"}
    response = await provider.handle_webhook(webhook(params), directory)
    assert tags(response) == ["Reject"]
    (offer,) = directory.offers
    assert offer.direction == "inbound" and offer.from_ == "+14155551234"
    assert directory.delivered == []


async def test_inbound_accepted_greets_and_listens(http: httpx.AsyncClient) -> None:
    provider = TwilioProvider(make_config(inboundGreeting="Hi, Ana's line."), http)
    directory = FakeDirectory()
    params = {"CallSid": CALL_SID, "CallStatus": "ringing", "Direction": "inbound",
              "From": "+14155551234", "To": "+15550001111"}
    element = root(await provider.handle_webhook(webhook(params), directory))
    assert [c.tag for c in element] == ["Say", "Gather"]
    assert element[0].text == "Hi, Ana's line."
    (record,) = directory.records.values()
    assert query_of(element[1].get("action"))["callId"] == record.call_id
    assert directory.kinds() == ["CallAnswered", "CallSpeaking"]
    assert isinstance(directory.delivered[0], CallAnswered)
    assert directory.records[record.call_id].state == "speaking"
    # default greeting when none is configured
    other = TwilioProvider(make_config(), provider._rest._client)
    params2 = dict(params, CallSid="CA2")
    element2 = root(await other.handle_webhook(webhook(params2), directory))
    assert element2[0].text == "Hello! How can I help you today?"


async def test_status_callback_delivers_and_answers_empty(provider: TwilioProvider) -> None:
    directory = FakeDirectory()
    record = directory.add(outbound())
    params = dict(answer_params(), CallStatus="completed", SequenceNumber="3",
                  CallbackSource="call-progress-events")
    response = await provider.handle_webhook(
        webhook(params, f"callId={record.call_id}&type=status"), directory)
    assert root(response) is not None and len(root(response)) == 0
    (ended,) = directory.delivered
    assert isinstance(ended, CallEnded) and ended.reason == "completed"
    assert directory.records[record.call_id].terminal
    # TwiML for a call that has ended: hang up
    late = await provider.handle_webhook(
        webhook(answer_params(), f"callId={record.call_id}&type=hold"), directory)
    assert tags(late) == ["Hangup"]


async def test_duplicate_webhook_has_no_second_effect(provider: TwilioProvider) -> None:
    directory = FakeDirectory()
    record = directory.add(outbound("notify", "Hi"))
    request = webhook(answer_params(), f"callId={record.call_id}")
    first = await provider.handle_webhook(request, directory)
    delivered = list(directory.delivered)
    second = await provider.handle_webhook(request, directory)
    assert second == first  # same TwiML again (not the "served once" Hangup)
    assert directory.delivered == delivered
    status = webhook(dict(answer_params(), CallStatus="ringing", SequenceNumber="1"),
                     f"callId={record.call_id}&type=status")
    await provider.handle_webhook(status, directory)
    await provider.handle_webhook(status, directory)
    assert directory.kinds().count("CallRinging") == 1


async def test_concurrent_duplicates_are_handled_once(
    http: httpx.AsyncClient, autojump_clock: trio.testing.MockClock
) -> None:
    provider = TwilioProvider(make_config(), http)
    directory = FakeDirectory(deliver_delay=1.0)
    record = directory.add(outbound())
    request = webhook(dict(answer_params(), CallStatus="ringing", SequenceNumber="1"),
                      f"callId={record.call_id}&type=status")
    responses: list[WebhookResponse] = []

    async def send() -> None:
        responses.append(await provider.handle_webhook(request, directory))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send)
        nursery.start_soon(send)
    assert len(directory.delivered) == 1
    assert responses[0] == responses[1]


async def test_unknown_call_gets_hangup(provider: TwilioProvider) -> None:
    response = await provider.handle_webhook(
        webhook(answer_params(), "callId=no-such-call"), FakeDirectory())
    assert tags(response) == ["Hangup"]


# -- webhooks: refusals --------------------------------------------------------------------------


async def test_missing_signature_is_401(provider: TwilioProvider) -> None:
    directory = FakeDirectory()
    response = await provider.handle_webhook(webhook(answer_params(), sign=False), directory)
    assert (response.status, response.body) == (401, b"missing signature")
    assert directory.delivered == [] and directory.offers == []


async def test_bad_signature_is_401(provider: TwilioProvider) -> None:
    directory = FakeDirectory()
    record = directory.add(outbound())
    forged = compute_signature("not-the-token", f"{PUBLIC}?callId={record.call_id}",
                               answer_params())
    response = await provider.handle_webhook(
        webhook(answer_params(), f"callId={record.call_id}", signature=forged), directory)
    assert (response.status, response.body) == (401, b"invalid signature")
    # a valid signature over other params does not carry over
    good = compute_signature(TOKEN, f"{PUBLIC}?callId={record.call_id}", answer_params())
    tampered = webhook(answer_params(To="+19999999999"), f"callId={record.call_id}",
                       signature=good)
    assert (await provider.handle_webhook(tampered, directory)).status == 401
    assert directory.delivered == []


async def test_garbage_is_400(provider: TwilioProvider) -> None:
    garbage = b"\xff\xfe definitely not a form"
    url = f"{PUBLIC}?callId=x"
    signature = compute_signature(
        TOKEN, url, [("\ufffd\ufffd definitely not a form", "")])
    response = await provider.handle_webhook(
        webhook({}, "callId=x", signature=signature, body=garbage), FakeDirectory())
    assert response.status == 400
    no_sid = await provider.handle_webhook(webhook({"From": "+1"}, "callId=x"), FakeDirectory())
    assert no_sid.status == 400


async def test_skip_signature_verification(http: httpx.AsyncClient) -> None:
    provider = TwilioProvider(make_config(skipSignatureVerification=True), http)
    directory = FakeDirectory()
    record = directory.add(outbound("notify", "Hi"))
    response = await provider.handle_webhook(
        webhook(answer_params(), f"callId={record.call_id}", sign=False), directory)
    assert tags(response) == ["Say", "Pause", "Hangup"]


async def test_only_post(provider: TwilioProvider) -> None:
    response = await provider.handle_webhook(webhook(answer_params(), method="GET"),
                                             FakeDirectory())
    assert response.status == 405


async def test_without_public_url_twiml_points_at_the_signed_url(
    http: httpx.AsyncClient,
) -> None:
    provider = TwilioProvider(make_config(publicUrl=None), http)
    directory = FakeDirectory()
    record = directory.add(outbound())
    query = f"callId={record.call_id}"
    url = f"http://127.0.0.1:3334/voice/webhook?{query}"
    request = webhook(answer_params(), query,
                      signature=compute_signature(TOKEN, url, answer_params()))
    element = root(await provider.handle_webhook(request, directory))
    action = element[1].get("action") or ""
    assert action.startswith("http://127.0.0.1:3334/voice/webhook?")  # exactly what was signed
    assert provider.webhook_url == "http://127.0.0.1:3334/voice/webhook"
    provider.set_public_url("https://tunnel.example.net")
    assert provider.webhook_url == "https://tunnel.example.net/voice/webhook"


async def test_protocol_attributes(provider: TwilioProvider) -> None:
    assert provider.name == "twilio" and provider.speaks_initial_message is True


# -- forwarded hosts behind a tunnel (issue 8, item 10) --------------------------------------


async def test_the_tunnel_url_reported_later_is_the_only_forwarded_host_believed(
        http: httpx.AsyncClient) -> None:
    """ngrok (allowNgrokFreeTier), no publicUrl, empty allowedHosts: until the tunnel reports
    its URL no forwarded host counts; then only the tunnel's own host does."""
    config = make_config(publicUrl=None, tunnel={"provider": "ngrok"})
    provider = TwilioProvider(config, http)
    directory = FakeDirectory()
    record = directory.add(outbound())
    query = f"callId={record.call_id}&type=status"
    params = dict(answer_params(), CallbackSource="call-progress-events", SequenceNumber="1")

    def forwarded(host: str) -> WebhookRequest:
        url = f"https://{host}/voice/webhook?{query}"
        return WebhookRequest(
            method="POST", path="/voice/webhook", query_string=query,
            headers={"content-type": "application/x-www-form-urlencoded",
                     "x-forwarded-host": host, "x-forwarded-proto": "https",
                     "x-twilio-signature": compute_signature(TOKEN, url, params)},
            body=urlencode(params).encode(), remote_addr="127.0.0.1", scheme="http",
            host="tunnel.ngrok.app")

    # signed for another host (same account), replayed through the tunnel
    assert (await provider.handle_webhook(forwarded("other.example.com"), directory)
            ).status == 401
    # what still works with no URL known: the Host the tunnel routed by, and its proto
    assert (await provider.handle_webhook(forwarded("tunnel.ngrok.app"), directory)
            ).status == 200
    provider.set_public_url("https://tunnel.ngrok.app")
    params["SequenceNumber"] = "2"
    assert (await provider.handle_webhook(forwarded("other.example.com"), directory)
            ).status == 401
    assert (await provider.handle_webhook(forwarded("tunnel.ngrok.app"), directory)
            ).status == 200
    assert directory.kinds() == ["CallAnswered", "CallAnswered"]
    provider.set_public_url("https://moved.ngrok.app")  # the tunnel restarted elsewhere
    params["SequenceNumber"] = "3"
    assert (await provider.handle_webhook(forwarded("tunnel.ngrok.app"), directory)
            ).status == 401
