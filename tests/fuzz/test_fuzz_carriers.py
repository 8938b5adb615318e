"""Fuzzing both carriers' webhook boundary: parsing, verification and the provider shells.

Pure targets feed hostile bytes, headers and timestamps to the sans-IO cores
(``twilio.webhooks``, ``twilio.signature``, ``telnyx.webhooks``, ``telnyx.signature``); shell
targets feed whole ``WebhookRequest`` values to ``TwilioProvider.handle_webhook`` and
``TelnyxProvider.handle_webhook`` over an in-memory call directory and a mock REST transport
(no sockets). What must hold for every example:

* no exception escapes but the parser's own (``WebhookParseError`` / ``TelnyxParseError``);
* no 5xx answer; a random signature is never accepted;
* a valid signature over a random body never crashes the parser;
* timestamps of any size or shape are handled (``telnyx-timestamp``, ``occurred_at``,
  Twilio's ``Timestamp``), and no carrier time ever becomes a time the daemon acts on;
* whatever reaches a record is valid Unicode and can be encoded (journaled);
* each shell example runs under a trio deadline, so a hang is a failure.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import msgspec
import nacl.signing
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from voicecall_trio.config import build_config
from voicecall_trio.errors import TelnyxParseError, WebhookParseError
from voicecall_trio.events import AnyEvent
from voicecall_trio.model import CallRecord, apply, new_record
from voicecall_trio.providers import (
    WebhookRequest,
)
from voicecall_trio.providers.telnyx import signature as telnyx_signature
from voicecall_trio.providers.telnyx import webhooks as telnyx_webhooks
from voicecall_trio.providers.telnyx.shell import TelnyxProvider
from voicecall_trio.providers.twilio import webhooks as twilio_webhooks
from voicecall_trio.providers.twilio.shell import TwilioProvider
from voicecall_trio.providers.twilio.signature import (
    compute_signature,
    form_params,
    verify_request,
)
from voicecall_trio.providers.twilio.signed_url import UrlPolicy
from voicecall_trio.testing.directory import FakeDirectory

TOKEN = "fuzz-twilio-auth-token-0123456789"
PUBLIC = "https://voice.example.com/voice/webhook"
NOW_S = 1_800_000_000.0  # the daemon's clock in every example
DAEMON_MS = int(NOW_S * 1000)
SIGNING_KEY = nacl.signing.SigningKey(b"\x07" * 32)
PUBLIC_KEY = base64.b64encode(bytes(SIGNING_KEY.verify_key)).decode()
CALL_SID = "CA" + "1" * 32
CCID = "v3:fuzz-call-control-id"
EXAMPLE_DEADLINE_S = 5.0  # real seconds: one example that takes longer is a hang


@pytest.fixture(autouse=True)
def quiet_logs() -> Iterator[None]:
    """Every refused example logs a line; 10,000 of them would only slow the target."""
    logger = logging.getLogger("voicecall")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


# -- strategies -----------------------------------------------------------------------------

SURROGATES = st.sampled_from(["\ud83d", "\udc00", "\udfff", "x\ud83d", "\ud83d\ude00"])
TEXT = st.one_of(st.text(max_size=40), SURROGATES, st.just("x" * 5000),
                 st.sampled_from(["", " ", "+15550001234", "anonymous", "client:bob", "nan",
                                  "inf", "-1", "1e999", "0.97"]))
# percent-escapes, including a UTF-8-encoded surrogate and truncated sequences
ESCAPES = st.sampled_from(["%ED%A0%BD", "%F0%9F", "%", "%zz", "%00", "%F0%9F%98%80", "+", "&",
                           "=", "%26", "%3D"])
TWILIO_NAMES = st.sampled_from([
    "CallSid", "CallStatus", "Direction", "From", "To", "SpeechResult", "UnstableSpeechResult",
    "Confidence", "Digits", "AnsweredBy", "CallbackSource", "SequenceNumber", "Timestamp",
    "ErrorCode", "ErrorMessage", "CallerName", "AccountSid",
])
TWILIO_STATUSES = st.sampled_from(["queued", "initiated", "ringing", "in-progress", "completed",
                                   "busy", "no-answer", "failed", "canceled", "bogus", ""])
RFC2822 = st.one_of(
    st.datetimes().map(lambda d: d.strftime("%a, %d %b %Y %H:%M:%S +0000")),
    st.sampled_from(["Mon, 1 Jan 99999999999 00:00:00 +0000", "Fri, 31 Dec 9999 23:59:59 -2359",
                     "Thu, 01 Jan 1970 00:00:00 +0100", "yesterday", "9" * 300]),
    TEXT,
)
QUERIES = st.sampled_from(["", "callId=c1", "callId=c1&type=status", "callId=c1&type=amd",
                           "callId=c1&type=gather&turn=T1", "callId=c1&type=hold&said=S1",
                           "callId=c1&type=bogus", "type=status", "callId=other"])


def _encode_field(part: str) -> str:
    return quote(part.encode("utf-8", "surrogatepass"), safe="")


SIDS = st.sampled_from([CALL_SID, "CA2", "", "C" * 300])
FIELD_NAMES = st.one_of(TWILIO_NAMES, st.text(max_size=8))
FIELD_VALUES = st.one_of(TEXT.map(_encode_field), ESCAPES,
                         st.lists(ESCAPES, max_size=4).map("".join))


@st.composite
def twilio_forms(draw: st.DrawFn) -> bytes:
    """A form body: mostly well-formed fields with hostile values, and raw escapes."""
    pairs: list[str] = []
    if draw(st.booleans()):
        pairs.append(f"CallSid={draw(SIDS)}")
    if draw(st.booleans()):
        pairs.append(f"CallStatus={draw(TWILIO_STATUSES)}")
    if draw(st.booleans()):
        pairs.append(f"Timestamp={_encode_field(draw(RFC2822))}")
    for _ in range(draw(st.integers(0, 6))):
        name = draw(FIELD_NAMES)
        value = draw(FIELD_VALUES)
        pairs.append(f"{_encode_field(name)}={value}")
    body = "&".join(pairs).encode("ascii")
    if draw(st.booleans()):
        body += draw(st.binary(max_size=16))  # raw bytes: invalid UTF-8 and all
    return body


TWILIO_BODIES = st.one_of(twilio_forms(), st.binary(max_size=300),
                          st.dictionaries(TWILIO_NAMES, TEXT, max_size=6).map(
                              lambda d: json.dumps(d).encode()))
CONTENT_TYPES = st.sampled_from(["application/x-www-form-urlencoded", "application/json",
                                 "", "text/plain", "application/x-www-form-urlencoded; a=b"])

TELNYX_EVENTS = st.sampled_from([
    "call.initiated", "call.answered", "call.bridged", "call.speak.started",
    "call.speak.ended", "call.transcription", "call.gather.ended", "call.dtmf.received",
    "call.machine.detection.ended", "call.machine.premium.detection.ended", "call.hangup",
    "call.playback.ended", "message.received", "", "call." + "x" * 300,
])
ISO = st.one_of(
    st.datetimes().map(lambda d: d.isoformat()),
    st.datetimes().map(lambda d: d.isoformat() + "Z"),
    st.sampled_from(["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59", "2026-13-01",
                     "1969-12-31T23:59:59Z"]),
    TEXT, st.integers(), st.none(),
)
JSON_LEAF = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), TEXT)
JSON_ANY = st.recursive(JSON_LEAF, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=6)
CCIDS = st.one_of(st.just(CCID), TEXT, JSON_LEAF)
CLIENT_STATES = st.one_of(st.just(base64.b64encode(b"c1").decode()), TEXT, JSON_LEAF)
PAYLOAD_VALUES = st.one_of(TEXT, JSON_ANY)
TRANSCRIPTION_DATA = st.one_of(
    st.fixed_dictionaries({"transcript": TEXT}, optional={
        "is_final": st.one_of(st.booleans(), TEXT),
        "confidence": st.one_of(st.floats(), TEXT, st.none()),
        "transcription_track": st.sampled_from(["inbound", "outbound", "both"]),
    }), JSON_ANY)
EVENT_TYPES = st.one_of(TELNYX_EVENTS, JSON_LEAF)
EVENT_IDS = st.one_of(st.uuids().map(str), TEXT, JSON_LEAF)


@st.composite
def telnyx_payloads(draw: st.DrawFn) -> dict[str, Any]:
    payload: dict[str, Any] = {}
    if draw(st.booleans()):
        payload["call_control_id"] = draw(CCIDS)
    if draw(st.booleans()):
        payload["client_state"] = draw(CLIENT_STATES)
    for key in ("direction", "from", "to", "digit", "digits", "result", "status",
                "hangup_cause", "hangup_source", "speech"):
        if draw(st.integers(0, 3)) == 0:
            payload[key] = draw(PAYLOAD_VALUES)
    if draw(st.booleans()):
        payload["transcription_data"] = draw(TRANSCRIPTION_DATA)
    return payload


PAYLOADS = st.one_of(telnyx_payloads(), JSON_ANY)


@st.composite
def telnyx_envelopes(draw: st.DrawFn) -> bytes:
    data: dict[str, Any] = {
        "event_type": draw(EVENT_TYPES),
        "id": draw(EVENT_IDS),
        "occurred_at": draw(ISO),
        "payload": draw(PAYLOADS),
    }
    for key in list(data):
        if draw(st.integers(0, 9)) == 0:
            del data[key]
    envelope: dict[str, Any] = {"data": data}
    if draw(st.booleans()):
        envelope["meta"] = draw(JSON_ANY)
    return json.dumps(envelope).encode()  # surrogates become "\ud83d" escapes


TELNYX_BODIES = st.one_of(telnyx_envelopes(), st.binary(max_size=300))
TIMESTAMP_HEADERS = st.one_of(
    st.integers().map(str),  # any size, negative included
    st.integers(int(NOW_S) - 400, int(NOW_S) + 400).map(str),  # around the window's edges
    st.floats().map(str), TEXT, st.just(str(int(NOW_S))),
)


# -- what every parsed result must satisfy --------------------------------------------------

def _fresh() -> CallRecord:
    return new_record(provider="fuzz", direction="outbound", from_="+15550001111",
                      to="+15550002222", call_id="c1", at=DAEMON_MS - 1000)


def check_events(events: tuple[AnyEvent, ...]) -> None:
    """Events encode, and applying them keeps the record encodable and on our clock."""
    record = _fresh()
    for event in events:
        msgspec.json.encode(event).decode("utf-8")
        record = apply(record, event, DAEMON_MS)
    encoded = msgspec.json.encode(record).decode("utf-8")
    assert len(encoded) < 64_000, "carrier text must be bounded"
    for at in (record.answered_at, record.ended_at):
        assert at in (None, DAEMON_MS)
    assert all(e.timestamp == DAEMON_MS for e in record.transcript)


# -- pure targets: Twilio -------------------------------------------------------------------

@given(body=TWILIO_BODIES, query=st.one_of(QUERIES, st.text(max_size=30)),
       content_type=CONTENT_TYPES)
def test_twilio_parsing_never_crashes(body: bytes, query: str, content_type: str) -> None:
    form = twilio_webhooks.strict_form(body, content_type)
    try:
        hook = twilio_webhooks.parse_webhook(body, query, content_type, form=form)
    except WebhookParseError:
        return
    events = hook.events + ((hook.inbound_offer,) if hook.inbound_offer else ())
    check_events(events)
    for text in (hook.from_, hook.to, hook.error or "", hook.answered_by or ""):
        text.encode("utf-8")


def _twilio_request(body: bytes, query: str, headers: dict[str, str],
                    remote: str = "198.51.100.7") -> WebhookRequest:
    return WebhookRequest(method="POST", path="/voice/webhook", query_string=query,
                          headers=headers, body=body, remote_addr=remote, scheme="http",
                          host="127.0.0.1:3334")


POLICIES = st.sampled_from([
    UrlPolicy(public_url=PUBLIC), UrlPolicy(), UrlPolicy(trust_forwarding_headers=True),
    UrlPolicy(ngrok_loopback=True), UrlPolicy(ngrok_loopback=True, public_url=PUBLIC),
    UrlPolicy(allowed_hosts=("voice.example.com",), trusted_proxy_ips=("127.0.0.0/8",)),
])
HEADER_VALUES = st.one_of(TEXT, st.just("voice.example.com"), st.just("https"))
HEADERS = st.dictionaries(
    st.sampled_from(["x-forwarded-host", "x-forwarded-proto", "x-forwarded-port", "forwarded",
                     "x-original-host", "x-twilio-webhooks-signature-settings", "host"]),
    HEADER_VALUES, max_size=4)


@given(body=TWILIO_BODIES, query=QUERIES, signature=st.one_of(TEXT, st.binary(
    min_size=20, max_size=20).map(lambda b: base64.b64encode(b).decode())),
    headers=HEADERS, content_type=CONTENT_TYPES, policy=POLICIES,
    remote=st.sampled_from(["127.0.0.1", "::1", "198.51.100.7", "", "garbage"]))
def test_twilio_random_signature_is_never_accepted(
        body: bytes, query: str, signature: str, headers: dict[str, str], content_type: str,
        policy: UrlPolicy, remote: str) -> None:
    request = _twilio_request(body, query, {**headers, "content-type": content_type,
                                            "x-twilio-signature": signature}, remote)
    check = verify_request(TOKEN, policy, request)
    assert not check.ok, check


@given(body=TWILIO_BODIES, query=QUERIES, content_type=CONTENT_TYPES)
def test_twilio_valid_signature_over_a_random_body_never_crashes_the_parser(
        body: bytes, query: str, content_type: str) -> None:
    url = f"{PUBLIC}?{query}" if query else PUBLIC
    signature = compute_signature(TOKEN, url, form_params(body))
    request = _twilio_request(body, query, {"content-type": content_type,
                                            "x-twilio-signature": signature})
    check = verify_request(TOKEN, UrlPolicy(public_url=PUBLIC), request)
    assert check.ok is ("json" not in content_type), check
    try:
        hook = twilio_webhooks.parse_webhook(body, query, content_type)
    except WebhookParseError:
        return
    check_events(hook.events)


# -- pure targets: Telnyx -------------------------------------------------------------------

@given(body=TELNYX_BODIES)
def test_telnyx_parsing_never_crashes(body: bytes) -> None:
    try:
        hook = telnyx_webhooks.parse_webhook(body)
    except TelnyxParseError:
        return
    check_events(hook.events)
    bound = telnyx_webhooks.bind_events(hook, call_id="c1", direction="outbound",
                                        answered=True)
    check_events(bound)


@given(body=TELNYX_BODIES, signature=st.one_of(TEXT, st.binary(min_size=64, max_size=64).map(
    lambda b: base64.b64encode(b).decode())), timestamp=st.one_of(TIMESTAMP_HEADERS, st.none()))
def test_telnyx_random_signature_is_never_accepted(body: bytes, signature: str,
                                                   timestamp: str | None) -> None:
    result = telnyx_signature.verify(body, signature, timestamp, NOW_S,
                                     bytes(SIGNING_KEY.verify_key))
    assert not result.ok and result.reason


@given(body=TELNYX_BODIES, timestamp=TIMESTAMP_HEADERS)
def test_telnyx_valid_signature_any_timestamp(body: bytes, timestamp: str) -> None:
    """Signed by the right key: accepted exactly when the timestamp is plain digits within
    300 s of the daemon's clock; then the body parses or is a clean parse error."""
    try:
        signed = timestamp.encode("ascii")
    except UnicodeEncodeError:
        signed = timestamp.encode("utf-8", "surrogatepass")
    signature = base64.b64encode(SIGNING_KEY.sign(signed + b"|" + body).signature).decode()
    result = telnyx_signature.verify(body, signature, timestamp, NOW_S,
                                     bytes(SIGNING_KEY.verify_key))
    plain = timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 15
    assert result.ok is (plain and abs(NOW_S - int(timestamp)) <= 300), (timestamp, result)
    if result.ok:
        try:
            hook = telnyx_webhooks.parse_webhook(body)
        except TelnyxParseError:
            return
        check_events(hook.events)


# -- shell targets: handle_webhook over an in-memory directory ------------------------------

class FuzzDirectory(FakeDirectory):
    """The shared in-memory directory holding one live outbound call, on the examples' clock
    (an open inbound policy). It checks each record it stores can be encoded and carries only
    the daemon's times."""

    def __init__(self) -> None:
        record = new_record(provider="fuzz", direction="outbound", from_="+15550001111",
                            to="+15550002222", call_id="c1", at=DAEMON_MS - 1000,
                            metadata={"mode": "conversation", "initialMessage": "Hello"})
        super().__init__(record, provider="fuzz", clock=lambda: DAEMON_MS,
                         ids=lambda: f"in{len(self.records)}")

    def store(self, record: CallRecord) -> CallRecord:
        msgspec.json.encode(record).decode("utf-8")
        assert record.answered_at in (None, DAEMON_MS) and record.ended_at in (None, DAEMON_MS)
        return super().store(record)


def _rest(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"sid": CALL_SID, "status": "in-progress",
                                     "data": {"call_control_id": CCID, "is_alive": True}})


async def _handle(make: Any, requests: list[WebhookRequest]) -> list[int]:
    statuses = []
    with trio.fail_after(EXAMPLE_DEADLINE_S):
        async with httpx.AsyncClient(transport=httpx.MockTransport(_rest)) as http:
            provider = make(http)
            directory = FuzzDirectory()
            for request in requests:
                response = await provider.handle_webhook(request, directory)
                statuses.append(response.status)
    return statuses


def _run(make: Any, requests: list[WebhookRequest]) -> list[int]:
    # a fresh run per example: the deadline is real time, so a hang fails the example
    statuses: list[int] = trio.run(_handle, make, requests)
    assert all(100 <= s < 500 for s in statuses), statuses
    return statuses


TWILIO_CONFIG = build_config({
    "provider": "twilio", "fromNumber": "+15550001111", "publicUrl": PUBLIC,
    "twilio": {"accountSid": "AC" + "0" * 32, "authToken": TOKEN,
               "apiBaseUrl": "https://api.test"},
    "tunnel": {"provider": "ngrok"},
}, {})


def _twilio(http: httpx.AsyncClient) -> TwilioProvider:
    return TwilioProvider(TWILIO_CONFIG, http)


TWILIO_HOW = st.sampled_from(["valid", "random", "missing"])
METHODS = st.sampled_from(["POST", "POST", "GET", "PUT"])
PEERS = st.sampled_from(["127.0.0.1", "198.51.100.7"])


@st.composite
def twilio_requests(draw: st.DrawFn) -> WebhookRequest:
    body = draw(TWILIO_BODIES)
    query = draw(QUERIES)
    content_type = draw(CONTENT_TYPES)
    url = f"{PUBLIC}?{query}" if query else PUBLIC
    headers = {**draw(HEADERS), "content-type": content_type}
    how = draw(TWILIO_HOW)
    if how == "valid":
        headers["x-twilio-signature"] = compute_signature(TOKEN, url, form_params(body))
    elif how == "random":
        headers["x-twilio-signature"] = draw(TEXT)
    method = draw(METHODS)
    return WebhookRequest(method=method, path="/voice/webhook", query_string=query,
                          headers=headers, body=body,
                          remote_addr=draw(PEERS),
                          scheme="http", host="127.0.0.1:3334")


@given(st.lists(twilio_requests(), min_size=1, max_size=3))
def test_twilio_shell_never_crashes_nor_answers_5xx(requests: list[WebhookRequest]) -> None:
    statuses = _run(_twilio, requests)
    for request, status in zip(requests, statuses, strict=True):
        if "x-twilio-signature" not in request.headers:
            assert status in (401, 405), status


TELNYX_CONFIG = build_config({
    "provider": "telnyx", "fromNumber": "+15550001111", "publicUrl": PUBLIC,
    "inboundPolicy": "open",
    "telnyx": {"apiKey": "KEY", "connectionId": "conn", "publicKey": PUBLIC_KEY,
               "apiBaseUrl": "https://api.test"},
}, {})


def _telnyx(http: httpx.AsyncClient) -> TelnyxProvider:
    return TelnyxProvider(TELNYX_CONFIG, http, clock=lambda: NOW_S)


SHELL_TIMESTAMPS = st.one_of(st.just(str(int(NOW_S))), TIMESTAMP_HEADERS)
TELNYX_HOW = st.sampled_from(["valid", "valid", "random", "missing"])


@st.composite
def telnyx_requests(draw: st.DrawFn) -> tuple[WebhookRequest, bool]:
    body = draw(TELNYX_BODIES)
    how = draw(TELNYX_HOW)
    headers = {"content-type": "application/json"}
    timestamp = draw(SHELL_TIMESTAMPS)
    if how == "valid":
        signed = timestamp.encode("utf-8", "surrogatepass")
        headers["telnyx-signature-ed25519"] = base64.b64encode(
            SIGNING_KEY.sign(signed + b"|" + body).signature).decode()
        headers["telnyx-timestamp"] = timestamp
    elif how == "random":
        headers["telnyx-signature-ed25519"] = draw(TEXT)
        headers["telnyx-timestamp"] = timestamp
    request = WebhookRequest(method="POST", path="/voice/webhook", query_string="",
                             headers=headers, body=body, remote_addr="127.0.0.1")
    return request, how == "valid"


@given(st.lists(telnyx_requests(), min_size=1, max_size=3))
def test_telnyx_shell_never_crashes_nor_answers_5xx(
        requests: list[tuple[WebhookRequest, bool]]) -> None:
    statuses = _run(_telnyx, [r for r, _ in requests])
    for (_, signed), status in zip(requests, statuses, strict=True):
        if not signed:
            assert status == 401, status  # a random or missing signature is never accepted
