"""Twilio Media Streams framing against the vectors; the route's admission arithmetic; the
Twilio signature of a stream upgrade."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from voicecall_trio.config import build_config
from voicecall_trio.media import twilio_stream
from voicecall_trio.media.route_limits import Admission
from voicecall_trio.media.stream import (
    Digits,
    Hello,
    Malformed,
    MarkEcho,
    Started,
    Stopped,
)
from voicecall_trio.providers import WebhookRequest
from voicecall_trio.providers.twilio.signature import compute_signature, verify_upgrade
from voicecall_trio.providers.twilio.signed_url import UrlPolicy

VECTORS = Path(__file__).resolve().parents[3] / "shared" / "vectors"
SID = "MZ33333333333333333333333333333333"


def test_decoding_the_recorded_stream_gives_back_the_audio_byte_for_byte() -> None:
    lines = (VECTORS / "twilio_media_stream.jsonl").read_text().splitlines()
    events = [twilio_stream.decode(line) for line in lines]
    audio = b"".join(e for e in events if isinstance(e, bytes))
    expected = (VECTORS / "hello_table_for_two_8k.ulaw").read_bytes()
    assert audio == expected
    assert hashlib.sha256(audio).hexdigest() == (
        "8df7f6363ab774b77cf5642dc97106341c3f56b49425770b4ad5078fdb7537c3")
    others = [e for e in events if not isinstance(e, bytes)]
    assert others == [Hello(), Started(SID, "CA22222222222222222222222222222222", None),
                      MarkEcho("greeting-played"), Digits("1"), Stopped()]
    assert sum(isinstance(e, bytes) for e in events) == 163


def test_bytes_input_and_the_token_parameter() -> None:
    start = {"event": "start", "streamSid": SID, "start": {
        "streamSid": SID, "callSid": "CA1", "customParameters": {"token": "c1.mac"}}}
    assert twilio_stream.decode(json.dumps(start).encode()) == Started(SID, "CA1", "c1.mac")


def _outbound() -> dict[str, dict[str, object]]:
    vectors = json.loads((VECTORS / "twilio_media_stream_outbound.json").read_text())
    return {v["message"]["event"]: v["message"] for v in vectors}


def test_outbound_messages_are_exactly_the_documented_ones() -> None:
    wanted = _outbound()
    media = wanted["media"]
    frame = twilio_stream.decode(json.dumps(media))  # the same payload back as bytes
    assert isinstance(frame, bytes)
    compact = {k: json.dumps(v, separators=(",", ":")) for k, v in wanted.items()}
    assert twilio_stream.media(SID, frame) == compact["media"]
    assert twilio_stream.mark(SID, "greeting-played") == compact["mark"]
    assert twilio_stream.clear(SID) == compact["clear"]
    assert twilio_stream.FRAMING.media(SID, frame) == compact["media"]


def test_a_mark_name_is_escaped() -> None:
    text = twilio_stream.mark(SID, 'a"b\\c\n')
    assert json.loads(text)["mark"]["name"] == 'a"b\\c\n'
    assert twilio_stream.decode(text) == MarkEcho('a"b\\c\n')  # Twilio echoes the same shape
    assert twilio_stream.decode(twilio_stream.clear(SID)) == Malformed("unknown event")


@pytest.mark.parametrize("message", [
    "", "x", "{", "[]", "null", "1", '"media"', "{}",
    '{"event":"nope"}', '{"event":1}', '{"event":"media"}', '{"event":"media","media":{}}',
    '{"event":"media","media":{"payload":1}}', '{"event":"media","media":{"payload":"!!!!"}}',
    '{"event":"media","media":{"payload":"AAA"}}',  # not padded
    '{"event":"start"}', '{"event":"start","start":{"customParameters":{"token":1}}}',
    '{"event":"mark","mark":{}}', '{"event":"dtmf","dtmf":{"digit":5}}',
    '{"event":"stop","stop":"x"}', "[" * 5000 + "]" * 5000,
    b"\xff\xfe", b'{"event":"media","media":{"payload":"\xff"}}',
])
def test_malformed_messages_are_values_never_exceptions(message: str | bytes) -> None:
    event = twilio_stream.decode(message)
    assert isinstance(event, Malformed)
    assert len(event.reason) < 200
    if isinstance(message, str) and len(message) < 200:
        assert "!!!!" not in event.reason


def test_a_malformed_reason_does_not_quote_the_input() -> None:
    event = twilio_stream.decode('{"event":"secret-token-abc"}')
    assert isinstance(event, Malformed) and "secret" not in event.reason


# -- admission ---------------------------------------------------------------------------

def test_admission_caps_pending_per_ip_in_total_and_all_streams() -> None:
    limits = Admission(max_connections=4, max_pending=3, max_pending_per_ip=2)
    assert limits.admit("a") is None and limits.admit("a") is None
    assert "PerIp" in (limits.admit("a") or "")
    assert limits.admit("b") is None
    assert "maxPendingConnections" in (limits.admit("c") or "")
    limits.attached("a")  # one of a's started: a may open another pending one
    assert (limits.pending, limits.open) == (2, 3)
    assert limits.admit("a") is None
    assert "maxConnections" in (limits.admit("d") or "")
    limits.release("a", pending=False)
    limits.release("a", pending=True)
    limits.release("a", pending=True)
    limits.release("b", pending=True)
    assert (limits.open, limits.pending, limits.pending_by_ip) == (0, 0, {})


# -- the Twilio signature of an upgrade --------------------------------------------------

TOKEN = "12345"


def _upgrade(signature: str | None, *, host: str = "voice.example.com", query: str = "",
             headers: dict[str, str] | None = None, remote: str = "203.0.113.9"
             ) -> WebhookRequest:
    all_headers = {"host": host, **(headers or {})}
    if signature is not None:
        all_headers["x-twilio-signature"] = signature
    return WebhookRequest("GET", "/voice/stream", query, all_headers, b"", remote, "http", host)


def _policy(**security: object) -> UrlPolicy:
    doc: dict[str, object] = {"publicUrl": "https://voice.example.com/voice/webhook"}
    if security:
        doc["webhookSecurity"] = security
        doc.pop("publicUrl")
    return UrlPolicy.from_config(build_config(doc, {}))


@pytest.mark.parametrize("signed", ["wss://voice.example.com/voice/stream",
                                    "wss://voice.example.com:443/voice/stream"])
def test_an_upgrade_signed_over_the_wss_url_passes(signed: str) -> None:
    signature = compute_signature(TOKEN, signed, {})
    check = verify_upgrade(TOKEN, _policy(), _upgrade(signature, query="a=1"))
    assert check.ok, check
    assert check.url == signed


def test_the_twiml_url_is_a_candidate_and_http_public_urls_give_ws() -> None:
    signed = "ws://voice.example.com:8080/voice/stream"
    signature = compute_signature(TOKEN, signed, {})
    check = verify_upgrade(TOKEN, _policy(), _upgrade(signature), signed)
    assert check.ok and check.url == signed
    http = UrlPolicy.from_config(build_config({"publicUrl": "http://voice.example.com:8080"}, {}))
    check = verify_upgrade(TOKEN, http, _upgrade(signature))
    assert check.ok and check.url == signed


def test_forwarding_headers_from_a_trusted_proxy_are_mapped_to_wss() -> None:
    signature = compute_signature(TOKEN, "wss://public.example.com/voice/stream", {})
    request = _upgrade(signature, host="10.0.0.5:3334", remote="10.0.0.1", headers={
        "x-forwarded-proto": "https", "x-forwarded-host": "public.example.com"})
    assert verify_upgrade(TOKEN, _policy(trustedProxyIPs=["10.0.0.0/8"]), request).ok
    # the same headers from anyone else are not believed
    assert not verify_upgrade(TOKEN, _policy(trustedProxyIPs=["10.9.0.0/16"]), request).ok


@pytest.mark.parametrize(("signature", "reason"), [
    (None, "missing signature"), ("", "missing signature"),
    (compute_signature(TOKEN, "https://voice.example.com/voice/stream", {}),
     "invalid signature"),  # over the https URL, not the stream's
    (compute_signature(TOKEN, "wss://voice.example.com/voice/stream?a=1", {}),
     "invalid signature"),  # Twilio signs the URL without parameters
    (compute_signature("other", "wss://voice.example.com/voice/stream", {}),
     "invalid signature"),
])
def test_bad_upgrade_signatures_are_refused(signature: str | None, reason: str) -> None:
    check = verify_upgrade(TOKEN, _policy(), _upgrade(signature, query="a=1"))
    assert not check.ok and check.reason == reason
    assert TOKEN not in repr(check)


def test_no_auth_token_fails_closed() -> None:
    check = verify_upgrade(None, _policy(), _upgrade("x"))
    assert not check.ok and "twilio.authToken" in check.reason
