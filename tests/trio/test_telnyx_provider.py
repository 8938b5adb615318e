"""The Telnyx shell over httpx.MockTransport, with the kit's in-memory FakeDirectory."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import msgspec
import nacl.signing
import pytest
import trio

from voicecall_trio.config import VoiceCallConfig
from voicecall_trio.errors import ConfigError, ProviderError
from voicecall_trio.model import CallRecord, CallState, new_record
from voicecall_trio.providers import (
    RemoteStatus,
    WebhookRequest,
)
from voicecall_trio.providers.telnyx.shell import TelnyxProvider
from voicecall_trio.testing.directory import FakeDirectory

VECTORS = Path(__file__).resolve().parents[3] / "shared" / "vectors"
if not (VECTORS / "telnyx_test_key.json").is_file():
    pytest.skip(f"Telnyx test key not found in {VECTORS}", allow_module_level=True)

KEYS: dict[str, str] = json.loads((VECTORS / "telnyx_test_key.json").read_text("utf-8"))
SIGNER = nacl.signing.SigningKey(bytes.fromhex(KEYS["private_seed_hex_TEST_ONLY"]))
OTHER = nacl.signing.SigningKey(
    bytes.fromhex("00" * 31 + "01")
)  # any key that is not the configured one
NOW = 1_736_850_000
API_KEY = "KEY_TEST_secret"
BASE = "https://telnyx.test/v2"
FROM, CALLER = "+15005550006", "+14155551234"
INBOUND = {"initialMessage": "Hello there"}  # the metadata of an accepted inbound call


# -- fakes ---------------------------------------------------------------------------------


Handler = Callable[[httpx.Request], httpx.Response]


class FakeApi:
    """Records every request; answers through ``respond`` (default: 200 ok)."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.respond: Handler = lambda request: httpx.Response(200, json={"data": {}})

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.respond(request)

    def paths(self) -> list[str]:
        return [r.url.path for r in self.requests]

    def bodies(self, suffix: str) -> list[dict[str, Any]]:
        return [json.loads(r.content) for r in self.requests if r.url.path.endswith(suffix)]


def make_config(**overrides: Any) -> VoiceCallConfig:
    doc: dict[str, Any] = {
        "provider": "telnyx",
        "fromNumber": FROM,
        "publicUrl": "https://voice.example.com/voice/webhook",
        "telnyx": {
            "apiKey": API_KEY,
            "connectionId": "conn-123",
            "publicKey": KEYS["public_key_b64"],
            "apiBaseUrl": BASE,
        },
    }
    doc.update(overrides)
    return msgspec.convert(doc, VoiceCallConfig)


def make_provider(
    api: FakeApi, config: VoiceCallConfig | None = None
) -> tuple[TelnyxProvider, httpx.AsyncClient]:
    http = httpx.AsyncClient(transport=httpx.MockTransport(api))
    return TelnyxProvider(config or make_config(), http, clock=lambda: float(NOW)), http


@pytest.fixture
def api() -> FakeApi:
    return FakeApi()


@pytest.fixture
def provider(api: FakeApi) -> TelnyxProvider:
    return make_provider(api)[0]


def envelope(event_type: str, event_id: str, **payload: Any) -> bytes:
    payload.setdefault("call_control_id", "v3:in-1")
    return json.dumps({
        "data": {"record_type": "event", "event_type": event_type, "id": event_id,
                 "occurred_at": "2025-01-14T10:19:58.123456Z", "payload": payload},
        "meta": {"attempt": 1},
    }, separators=(",", ":")).encode()


def signed(
    body: bytes,
    *,
    ts: int | str = NOW,
    key: nacl.signing.SigningKey = SIGNER,
    headers: dict[str, str] | None = None,
) -> WebhookRequest:
    sig = base64.b64encode(key.sign(str(ts).encode() + b"|" + body).signature).decode()
    hdrs = {"telnyx-signature-ed25519": sig, "telnyx-timestamp": str(ts),
            "content-type": "application/json"}
    if headers is not None:
        hdrs = headers
    return WebhookRequest("POST", "/voice/webhook", "", hdrs, body, remote_addr="127.0.0.1")


def inbound_offer(event_id: str = "ev-in-1") -> bytes:
    return envelope("call.initiated", event_id, direction="incoming", state="parked",
                    **{"from": CALLER, "to": FROM, "client_state": None})


def outbound_record(directory: FakeDirectory, ccid: str | None = "v3:out-1") -> CallRecord:
    return directory.add(new_record(provider="telnyx", direction="outbound", from_=FROM,
                                    to=CALLER, provider_call_id=ccid,
                                    metadata={"initialMessage": "Hi"},
                                        call_id=str(uuid.uuid4()), at=int(time.time() * 1000)))


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# -- outbound REST -------------------------------------------------------------------------


async def test_dial_posts_create_call(api: FakeApi, provider: TelnyxProvider) -> None:
    api.respond = lambda r: httpx.Response(200, json={"data": {"call_control_id": "v3:new",
                                                                "is_alive": False}})
    record = outbound_record(FakeDirectory(), ccid=None)
    assert await provider.dial(record) == "v3:new"
    (request,) = api.requests
    assert request.method == "POST"
    assert str(request.url) == f"{BASE}/calls"
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert request.headers["content-type"] == "application/json"
    body = json.loads(request.content)
    assert body["connection_id"] == "conn-123"
    assert body["to"] == CALLER and body["from"] == FROM
    assert body["webhook_url"] == "https://voice.example.com/voice/webhook"
    assert body["webhook_url_method"] == "POST"
    assert base64.b64decode(body["client_state"]).decode() == record.call_id
    assert body["timeout_secs"] == 30


async def test_dial_error_carries_code_and_title(api: FakeApi, provider: TelnyxProvider) -> None:
    api.respond = lambda r: httpx.Response(422, json={"errors": [
        {"code": "10010", "title": "Invalid phone number", "detail": "to is not valid"}]})
    with pytest.raises(ProviderError) as info:
        await provider.dial(outbound_record(FakeDirectory(), ccid=None))
    assert str(info.value) == "Telnyx 10010: Invalid phone number"
    assert info.value.code == "10010" and info.value.status == 422
    assert API_KEY not in str(info.value)


async def test_create_is_never_retried(
    api: FakeApi, provider: TelnyxProvider, autojump_clock: trio.testing.MockClock
) -> None:
    api.respond = lambda r: httpx.Response(503, json={"errors": [
        {"code": "90000", "title": "Service unavailable"}]})
    with pytest.raises(ProviderError, match="Telnyx 90000: Service unavailable"):
        await provider.dial(outbound_record(FakeDirectory(), ccid=None))
    assert len(api.requests) == 1


async def test_dial_answer_without_call_control_id_fails(
    api: FakeApi, provider: TelnyxProvider
) -> None:
    with pytest.raises(ProviderError, match="call_control_id"):
        await provider.dial(outbound_record(FakeDirectory(), ccid=None))


@pytest.mark.parametrize(
    ("status", "body"),
    [(200, {"data": {"result": "ok"}}), (404, {"errors": [{"code": "404", "title": "Not found"}]}),
     (422, {"errors": [{"code": "90018", "title": "Call has already ended"}]})],
)
async def test_hangup_ok_and_already_gone(
    api: FakeApi, provider: TelnyxProvider, status: int, body: Any
) -> None:
    api.respond = lambda r: httpx.Response(status, json=body)
    await provider.hangup(outbound_record(FakeDirectory()))
    assert api.paths() == ["/v2/calls/v3:out-1/actions/hangup"]
    assert api.bodies("hangup")[0]["command_id"]


async def test_hangup_other_422_is_an_error(api: FakeApi, provider: TelnyxProvider) -> None:
    api.respond = lambda r: httpx.Response(422, json={"errors": [{"code": "90015",
                                                                  "title": "Invalid command"}]})
    with pytest.raises(ProviderError, match="Telnyx 90015: Invalid command"):
        await provider.hangup(outbound_record(FakeDirectory()))


async def test_hangup_without_carrier_id_sends_nothing(
    api: FakeApi, provider: TelnyxProvider
) -> None:
    await provider.hangup(outbound_record(FakeDirectory(), ccid=None))
    assert api.requests == []


async def test_speak_retries_503_with_the_same_command_id(
    api: FakeApi, provider: TelnyxProvider, autojump_clock: trio.testing.MockClock
) -> None:
    statuses = iter([503, 503, 200])
    api.respond = lambda r: httpx.Response(next(statuses), json={"data": {"result": "ok"}})
    await provider.speak(outbound_record(FakeDirectory()), "Hello", listen=False)
    bodies = api.bodies("/actions/speak")
    assert len(bodies) == 3
    assert len({b["command_id"] for b in bodies}) == 1
    assert bodies[0]["payload"] == "Hello"
    assert bodies[0]["voice"] == "female"  # "coral" is an OpenAI voice, unknown to Telnyx
    assert bodies[0]["language"] == "en-US"


async def test_speak_retries_429_and_timeouts(
    api: FakeApi, provider: TelnyxProvider, autojump_clock: trio.testing.MockClock
) -> None:
    calls = iter(["timeout", 429, 200])

    def respond(request: httpx.Request) -> httpx.Response:
        step = next(calls)
        if step == "timeout":
            raise httpx.ReadTimeout("slow", request=request)
        assert isinstance(step, int)
        return httpx.Response(step, json={})

    api.respond = respond
    await provider.speak(outbound_record(FakeDirectory()), "Hello", listen=False)
    assert len({b["command_id"] for b in api.bodies("/actions/speak")}) == 1


async def test_speak_with_listen_starts_transcription_once(
    api: FakeApi, provider: TelnyxProvider
) -> None:
    directory = FakeDirectory(metadata=INBOUND)
    record = outbound_record(directory)
    await provider.speak(record, "First", listen=True)
    await provider.speak(record, "Second", listen=True)
    assert api.paths() == [
        "/v2/calls/v3:out-1/actions/speak",
        "/v2/calls/v3:out-1/actions/transcription_start",
        "/v2/calls/v3:out-1/actions/speak",
    ]
    (start,) = api.bodies("transcription_start")
    assert start["transcription_tracks"] == "inbound" and start["command_id"]
    speaks = api.bodies("/actions/speak")
    assert speaks[0]["command_id"] != speaks[1]["command_id"]


async def test_speak_without_carrier_id_fails(api: FakeApi, provider: TelnyxProvider) -> None:
    with pytest.raises(ProviderError):
        await provider.speak(outbound_record(FakeDirectory(), ccid=None), "x", listen=False)


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [(200, {"data": {"is_alive": True}}, RemoteStatus.LIVE),
     (200, {"data": {"is_alive": False}}, RemoteStatus.ENDED),
     (404, {"errors": [{"code": "404", "title": "Not found"}]}, RemoteStatus.ENDED),
     (200, {"data": {}}, RemoteStatus.UNKNOWN)],
)
async def test_fetch_state(
    api: FakeApi, provider: TelnyxProvider, status: int, body: Any, expected: RemoteStatus
) -> None:
    api.respond = lambda r: httpx.Response(status, json=body)
    state = await provider.fetch_state(outbound_record(FakeDirectory()))
    assert state.status is expected
    assert api.requests[0].method == "GET" and api.paths() == ["/v2/calls/v3:out-1"]


async def test_run_reports_ready(provider: TelnyxProvider) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(provider.run, FakeDirectory(metadata=INBOUND))
        nursery.cancel_scope.cancel()


def test_bad_public_key_is_a_config_error(api: FakeApi) -> None:
    config = make_config(telnyx={"apiKey": API_KEY, "connectionId": "c", "publicKey": "nope"})
    with pytest.raises(ConfigError, match=r"telnyx\.publicKey"):
        make_provider(api, config)


# -- webhooks ------------------------------------------------------------------------------


async def test_inbound_open_delivered_twice_is_answered_once(
    api: FakeApi, provider: TelnyxProvider
) -> None:
    directory = FakeDirectory(metadata=INBOUND)
    for event_id in ("ev-in-1", "ev-in-1"):  # Telnyx redelivers (new attempt, same event)
        response = await provider.handle_webhook(
            signed(inbound_offer(event_id) + b" " * len(directory.offers)), directory)
        assert response.status == 200
    assert api.paths() == ["/v2/calls/v3:in-1/actions/answer"]
    (record,) = directory.records.values()
    (answer,) = api.bodies("answer")
    assert base64.b64decode(answer["client_state"]).decode() == record.call_id
    # call.answered comes back naming our call: the supervisor will now greet
    response = await provider.handle_webhook(
        signed(envelope("call.answered", "ev-in-2", client_state=b64(record.call_id))),
        directory)
    assert response.status == 200
    assert directory.records[record.call_id].state is CallState.ANSWERED


async def test_inbound_disabled_is_rejected_once_never_answered(
    api: FakeApi, provider: TelnyxProvider
) -> None:
    directory = FakeDirectory(accept=False)
    for i in range(2):
        body = inbound_offer() + b" " * i  # a second, distinct delivery of the same event
        assert (await provider.handle_webhook(signed(body), directory)).status == 200
    assert api.paths() == ["/v2/calls/v3:in-1/actions/reject"]
    (reject,) = api.bodies("reject")
    assert reject["cause"] == "CALL_REJECTED" and reject["command_id"]
    assert directory.records == {}


async def test_identical_signed_delivery_has_no_second_effect(
    api: FakeApi, provider: TelnyxProvider
) -> None:
    directory = FakeDirectory(metadata=INBOUND)
    record = outbound_record(directory)
    request = signed(envelope("call.answered", "ev-1", call_control_id="v3:out-1"))
    assert (await provider.handle_webhook(request, directory)).status == 200
    assert (await provider.handle_webhook(request, directory)).status == 200
    assert len(directory.delivered) == 1
    assert directory.records[record.call_id].state is CallState.ANSWERED


async def test_call_found_by_client_state_then_ccid(
    api: FakeApi, provider: TelnyxProvider
) -> None:
    directory = FakeDirectory(metadata=INBOUND)
    record = outbound_record(directory)
    foreign = b64('{"tenant":"acme"}')
    body = envelope("call.hangup", "ev-h", call_control_id="v3:out-1", client_state=foreign,
                    hangup_cause="normal_clearing", hangup_source="callee")
    assert (await provider.handle_webhook(signed(body), directory)).status == 200
    (event,) = directory.delivered
    assert event.call_id == record.call_id
    ended = directory.records[record.call_id]
    assert ended.state is CallState.HANGUP_USER  # callee hung up on our outbound call


async def test_unknown_call_is_ignored_with_200(api: FakeApi, provider: TelnyxProvider) -> None:
    directory = FakeDirectory(metadata=INBOUND)
    response = await provider.handle_webhook(signed(envelope("call.answered", "x")), directory)
    assert response.status == 200 and directory.delivered == []


async def test_failed_answer_still_200_and_ends_the_call(
    api: FakeApi, provider: TelnyxProvider
) -> None:
    api.respond = lambda r: httpx.Response(422, json={"errors": [{"code": "90018",
                                                                  "title": "Call ended"}]})
    directory = FakeDirectory(metadata=INBOUND)
    response = await provider.handle_webhook(signed(inbound_offer()), directory)
    assert response.status == 200
    (record,) = directory.records.values()
    assert record.state is CallState.ERROR
    assert "Telnyx 90018" in record.metadata["lastError"]
    # the parked call is hung up here: the supervisor sends no hangup after a carrier error
    assert [r.url.path.rsplit("/", 1)[-1] for r in api.requests] == ["answer", "hangup"]


async def test_failed_reject_is_logged_and_200(
    api: FakeApi, provider: TelnyxProvider, caplog: pytest.LogCaptureFixture
) -> None:
    api.respond = lambda r: httpx.Response(422, json={"errors": [{"code": "90015",
                                                                  "title": "Bad"}]})
    response = await provider.handle_webhook(signed(inbound_offer()), FakeDirectory(accept=False))
    assert response.status == 200
    assert any("Telnyx 90015" in r.getMessage() for r in caplog.records)
    assert all(API_KEY not in r.getMessage() for r in caplog.records)


def _tamper(body: bytes) -> bytes:
    return body.replace(b'"attempt":1', b'"attempt":2')


@pytest.mark.parametrize(
    "make_request",
    [
        pytest.param(lambda b: signed(b, key=OTHER), id="other-key"),
        pytest.param(lambda b: signed(b, ts=NOW - 400), id="400s-old"),
        pytest.param(lambda b: signed(b, ts=NOW + 400), id="400s-ahead"),
        pytest.param(lambda b: signed(b, ts="1736850000.0"), id="non-integer-ts"),
        pytest.param(lambda b: WebhookRequest("POST", "/", "", signed(b).headers, _tamper(b)),
                     id="body-altered-one-byte"),
        pytest.param(lambda b: signed(b, headers={"telnyx-signature-ed25519": "not*base64!!",
                                                  "telnyx-timestamp": str(NOW)}),
                     id="malformed-base64"),
        pytest.param(lambda b: signed(b, headers={"telnyx-timestamp": str(NOW)}),
                     id="missing-signature"),
        pytest.param(lambda b: signed(b, headers={}), id="missing-headers"),
    ],
)
async def test_bad_signatures_are_401(
    api: FakeApi, provider: TelnyxProvider, make_request: Callable[[bytes], WebhookRequest]
) -> None:
    directory = FakeDirectory(metadata=INBOUND)
    response = await provider.handle_webhook(make_request(inbound_offer()), directory)
    assert response.status == 401
    assert directory.offers == [] and api.requests == []


async def test_missing_headers_are_401_before_parsing(
    api: FakeApi, provider: TelnyxProvider
) -> None:
    request = WebhookRequest("POST", "/", "", {}, b"garbage")
    assert (await provider.handle_webhook(request, FakeDirectory(metadata=INBOUND))).status == 401


async def test_missing_public_key_fails_closed(api: FakeApi) -> None:
    config = make_config(telnyx={"apiKey": API_KEY, "connectionId": "c", "apiBaseUrl": BASE})
    provider, _ = make_provider(api, config)
    directory = FakeDirectory(metadata=INBOUND)
    response = await provider.handle_webhook(signed(inbound_offer()), directory)
    assert response.status == 401
    assert directory.offers == [] and api.requests == []


async def test_skip_signature_verification_accepts_unsigned(api: FakeApi) -> None:
    config = make_config(skipSignatureVerification=True,
                         telnyx={"apiKey": API_KEY, "connectionId": "c", "apiBaseUrl": BASE})
    provider, _ = make_provider(api, config)
    directory = FakeDirectory(metadata=INBOUND)
    request = WebhookRequest("POST", "/", "", {}, inbound_offer())
    assert (await provider.handle_webhook(request, directory)).status == 200
    assert api.paths() == ["/v2/calls/v3:in-1/actions/answer"]


@pytest.mark.parametrize("body", [b"", b"not json", b'{"data": {}}', b"[1,2]"])
async def test_signed_garbage_is_400(
    api: FakeApi, provider: TelnyxProvider, body: bytes
) -> None:
    directory = FakeDirectory(metadata=INBOUND)
    assert (await provider.handle_webhook(signed(body), directory)).status == 400
    assert directory.delivered == [] and api.requests == []


async def test_header_names_are_case_insensitive(
    api: FakeApi, provider: TelnyxProvider
) -> None:
    request = signed(inbound_offer())
    headers = {k.title(): v for k, v in request.headers.items()}
    request = WebhookRequest("POST", "/", "", headers, request.body)
    assert (await provider.handle_webhook(request, FakeDirectory(metadata=INBOUND))).status == 200


async def test_tunnel_url_gets_the_webhook_path(api: FakeApi, provider: TelnyxProvider) -> None:
    api.respond = lambda r: httpx.Response(200, json={"data": {"call_control_id": "v3:new"}})
    provider.set_public_url("https://abc.ngrok.app")
    await provider.dial(outbound_record(FakeDirectory(), ccid=None))
    provider.set_public_url(None)
    await provider.dial(outbound_record(FakeDirectory(), ccid=None))
    first, second = api.bodies("/calls")
    assert first["webhook_url"] == "https://abc.ngrok.app/voice/webhook"
    assert "webhook_url" not in second and "webhook_url_method" not in second
