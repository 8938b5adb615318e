"""The doctor's pure parts: the probe and its verdicts, the clock, keys, models, the report."""

from __future__ import annotations

import json
from datetime import date
from typing import Any
from urllib.parse import parse_qsl

import pytest

from voicecall_trio import feature_keys, model_lifecycle
from voicecall_trio.cli.doctor import local, report
from voicecall_trio.cli.doctor.network import clock_check
from voicecall_trio.cli.doctor.probe import Probe, build_probe, judge
from voicecall_trio.cli.doctor.upgrade import status_of, upgrade_request
from voicecall_trio.config import build_config
from voicecall_trio.health import PROBE_HEADER
from voicecall_trio.providers.twilio.signature import compute_signature

ACCOUNT = "AC" + "1" * 32
TWILIO = {"provider": "twilio", "fromNumber": "+15550001234",
          "twilio": {"accountSid": ACCOUNT, "authToken": "tok-0123456789"}}


def config(env: dict[str, str] | None = None, **doc: Any) -> Any:
    return build_config(doc, env or {})


def test_twilio_probe_is_a_signed_status_callback_for_the_webhook_url() -> None:
    cfg = config(**TWILIO)
    probe = build_probe(cfg, "https://x.example", "TOKEN", call_sid="CA" + "9" * 32)
    assert probe.url == "https://x.example/voice/webhook" and probe.signed
    params = parse_qsl(probe.body.decode())
    assert dict(params)["CallStatus"] == "completed"
    assert dict(params)["AccountSid"] == ACCOUNT
    assert probe.headers["x-twilio-signature"] == compute_signature("tok-0123456789",
                                                                    probe.url, params)
    assert probe.headers[PROBE_HEADER] == "TOKEN"
    assert probe.expect == frozenset({200})
    # a public URL with its own path is used as it is
    assert build_probe(cfg, "https://x.example/hook", "T").url == "https://x.example/hook"


def test_telnyx_and_mock_probes_are_unsigned() -> None:
    telnyx = build_probe(config(provider="telnyx", fromNumber="+15550001234",
                                telnyx={"apiKey": "k", "connectionId": "c"},
                                skipSignatureVerification=True), "https://t.example", "T")
    assert telnyx.expect == frozenset({401}) and not telnyx.signed
    assert "telnyx-signature-ed25519" not in {k.lower() for k in telnyx.headers}
    mock = build_probe(config(), "http://127.0.0.1:1/voice/webhook", "T")
    assert mock.expect is None


@pytest.mark.parametrize(("probe", "status", "echoed", "passed", "words"), [
    (Probe("u", b"", expect=frozenset({200}), signed=True), 200, True, True, "reached"),
    (Probe("u", b"", expect=frozenset({200}), signed=True), 200, False, False,
     "not from this daemon"),
    (Probe("u", b"", expect=frozenset({200}), signed=True), 401, True, False,
     "signed URL: u"),
    (Probe("u", b"", expect=frozenset({200}), signed=True), 413, True, False, "HTTP 413"),
    (Probe("u", b"", expect=frozenset({401})), 401, True, True, "HTTP 401"),
    (Probe("u", b"", expect=None), 404, True, True, "reached this daemon"),
    (Probe("u", b"", expect=None), 404, False, False, "not from this daemon"),
])
def test_judge(probe: Probe, status: int, echoed: bool, passed: bool, words: str) -> None:
    got, detail = judge(probe, status, echoed)
    assert got is passed and words in detail


@pytest.mark.parametrize(("header", "now", "status", "words"), [
    ("Tue, 01 Dec 2026 12:00:00 GMT", 1_796_126_400.0, "ok", "within 1 s"),
    ("Tue, 01 Dec 2026 12:00:00 GMT", 1_796_126_400.0 + 120, "ok", "warning"),
    ("Tue, 01 Dec 2026 12:00:00 GMT", 1_796_126_400.0 - 301, "fail", "behind"),
    ("Tue, 01 Dec 2026 12:00:00 GMT", 1_796_126_400.0 + 900, "fail", "900 s ahead"),
    (None, 0.0, "skip", "no Date"),
    ("yesterday-ish", 0.0, "skip", "unreadable"),
])
def test_clock(header: str | None, now: float, status: str, words: str) -> None:
    check = clock_check("Telnyx", header, now)
    assert check.status == status and words in check.detail


def test_keys_follow_the_features_that_are_on() -> None:
    assert local.check_keys(config(responseBaseUrl="http://127.0.0.1:1/v1"), {}).status == "skip"
    plain = local.check_keys(config(), {})  # OpenAI's replies without a key: a note, no failure
    assert plain.status == "ok" and "no reply key" in plain.detail
    streaming = local.check_keys(config(streaming={"enabled": True}), {})
    assert streaming.status == "fail" and "STT key MISSING" in streaming.detail
    eleven = config(streaming={"enabled": True, "openaiApiKey": "sk-1"},
                    tts={"provider": "elevenlabs"})
    assert local.check_keys(eleven, {}).status == "fail"
    assert "ELEVENLABS_API_KEY" in local.check_keys(eleven, {}).detail
    assert local.check_keys(eleven, {"ELEVENLABS_API_KEY": "el-1"}).status == "ok"
    keyed = local.check_keys(config({"OPENAI_API_KEY": "sk-2"}, streaming={"enabled": True}),
                             {"OPENAI_API_KEY": "sk-2"})
    assert keyed.status == "ok" and "sk-2" not in keyed.detail


def test_reply_key_fallbacks() -> None:
    cfg = config(streaming={"openaiApiKey": "sk-stream"})
    assert feature_keys.reply_key(cfg, {}) == "sk-stream"
    assert feature_keys.reply_key(cfg, {"OPENAI_API_KEY": "sk-env"}) == "sk-env"
    assert feature_keys.tts_key(cfg, {}) == "sk-stream"


@pytest.mark.parametrize(("url", "expected"), [
    ("wss://api.openai.com/v1/realtime", "https://api.openai.com/v1"),
    ("ws://127.0.0.1:9/v1/realtime", "http://127.0.0.1:9/v1"),
    ("wss://proxy.example/openai/v1/", "https://proxy.example/openai/v1"),
])
def test_stt_base_url(url: str, expected: str) -> None:
    assert feature_keys.stt_base_url(config(streaming={"realtimeUrl": url})) == expected


def test_public_url_check_says_where_the_url_came_from() -> None:
    cfg = config(**TWILIO, publicUrl="http://x.example/voice/webhook")
    check, url = local.check_public_url(cfg, None)
    assert url == "http://x.example/voice/webhook"
    assert "(from config)" in check.detail and local.HTTPS_WARNING in check.detail
    ngrok = config(**TWILIO, tunnel={"provider": "ngrok"})
    check, url = local.check_public_url(ngrok, {"publicUrl": "https://a.ngrok.app/voice/webhook"})
    assert check.status == "ok" and "(from ngrok)" in check.detail and "https" not in \
        check.detail.split(")", 1)[1]
    assert local.check_public_url(ngrok, None)[0].status == "skip"
    assert local.check_public_url(config(**TWILIO), None)[0].status == "fail"
    assert local.check_public_url(config(), None)[0].status == "skip"
    serve = config(**TWILIO, tunnel={"provider": "tailscale-serve"})
    assert "tailnet-only" in local.check_public_url(
        serve, {"publicUrl": "https://b.ts.net/voice/webhook"})[0].detail


@pytest.mark.parametrize(("doc", "expected"), [
    ({"shutdown_date": "2027-01-14"}, date(2027, 1, 14)),
    ({"shutdown_date": "2027-01-14T00:00:00Z"}, date(2027, 1, 14)),
    ({"shutdown_date": 1_799_971_200}, date(2027, 1, 15)),
    ({"shutdown_date": 1_799_971_200.5}, date(2027, 1, 15)),
    ({"shutdown_date": None}, None), ({}, None), ([], None), ({"shutdown_date": True}, None),
    ({"shutdown_date": "soon"}, None), ({"shutdown_date": 10 ** 30}, None),
    ({"shutdown_date": ""}, None),
])
def test_shutdown_of(doc: Any, expected: date | None) -> None:
    assert model_lifecycle.shutdown_of(doc) == expected


@pytest.mark.parametrize(("shutdown", "ok", "words"), [
    (None, True, "no shutdown announced"),
    (date(2027, 6, 1), True, "announced for 2027-06-01"),
    (date(2027, 1, 6), True, "announced for 2027-01-06"),  # 36 days: outside the window
    (date(2026, 12, 20), False, "shuts it down on 2026-12-20 (in 19 days)"),
    (date(2026, 12, 31), False, "in 30 days"),
    (date(2026, 12, 1), False, "shut down by OpenAI on 2026-12-01"),
    (date(2025, 1, 1), False, "shut down"),
])
def test_verdict(shutdown: date | None, ok: bool, words: str) -> None:
    ref = model_lifecycle.ModelRef("tts.model", "gpt-4o-mini-tts", "https://x/v1", "sk")
    finding = model_lifecycle.verdict(ref, shutdown, date(2026, 12, 1))
    assert finding.ok is ok and words in finding.detail


def test_configured_models_for_the_features_that_are_on() -> None:
    plain = model_lifecycle.configured_models(config(), {})
    assert [(r.key, r.model, r.base_url, r.api_key) for r in plain] == [
        ("responseModel", "gpt-4o-mini", "https://api.openai.com/v1", None)]
    cfg = config({"OPENAI_API_KEY": "sk-1"}, streaming={"enabled": True})
    refs = model_lifecycle.configured_models(cfg, {"OPENAI_API_KEY": "sk-1"})
    assert [(r.key, r.model) for r in refs] == [
        ("responseModel", "gpt-4o-mini"), ("streaming.sttModel", "gpt-4o-transcribe"),
        ("tts.model", "gpt-4o-mini-tts")]
    assert all(r.api_key == "sk-1" for r in refs)
    assert "sk-1" not in repr(refs)


def test_report_shapes() -> None:
    checks = [report.ok("config", "fine"), report.skip("daemon", "x"),
              report.fail("socket", "mode 644")]
    assert report.as_text(checks) == ("[ok] config: fine\n[--] daemon: x\n"
                                      "[!!] socket: mode 644\n")
    assert json.loads(report.as_json(checks)) == {"ok": False, "checks": [
        {"name": "config", "status": "ok", "detail": "fine"},
        {"name": "daemon", "status": "skip", "detail": "x"},
        {"name": "socket", "status": "fail", "detail": "mode 644"}]}
    assert report.all_ok(checks[:2])


def test_upgrade_request_and_status_line() -> None:
    host, port, tls, request = upgrade_request("wss://x.example/voice/stream?a=1")
    assert (host, port, tls) == ("x.example", 443, True)
    assert request.startswith(b"GET /voice/stream?a=1 HTTP/1.1\r\nHost: x.example\r\n")
    assert b"Upgrade: websocket\r\n" in request and request.endswith(b"\r\n\r\n")
    assert upgrade_request("ws://127.0.0.1:8/s")[1:3] == (8, False)
    assert status_of(b"HTTP/1.1 403 Forbidden\r\n") == 403
    assert status_of(b"HTTP/1.0 101 Switching\r\n\r\n") == 101
    assert status_of(b"SSH-2.0-OpenSSH\r\n") is None
    assert status_of(b"") is None
