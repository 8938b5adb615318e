"""Twilio signatures against the official-SDK vectors, and the URL trust rules."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from voicecall_trio.config import build_config
from voicecall_trio.providers import WebhookRequest
from voicecall_trio.providers.twilio.signature import (
    algorithm_of,
    body_sha256,
    compute_signature,
    port_variants,
    signed_string,
    validate,
    verify_request,
)
from voicecall_trio.providers.twilio.signed_url import (
    UrlPolicy,
    reconstruct_urls,
    tunnel_vouches_for,
)

VECTORS = Path(__file__).resolve().parents[3] / "shared" / "vectors"
TOKEN = "f3c1e0d5a2b44c6e8d9a7b6c5d4e3f21"
FORM = {"CallSid": "CA0123456789abcdef0123456789abcdef", "CallStatus": "ringing", "From": "+1415"}


def _cases() -> list[dict[str, Any]]:
    path = VECTORS / "twilio_signature.json"
    if not path.is_file():
        return []
    cases: list[dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))
    return cases


CASES = _cases()
needs_vectors = pytest.mark.skipif(
    not CASES, reason=f"Twilio signature vectors not found at {VECTORS}/twilio_signature.json"
)


@needs_vectors
@pytest.mark.parametrize("case", CASES, ids=[c["note"][:60] for c in CASES])
def test_vector(case: dict[str, Any]) -> None:
    result = validate(
        case["auth_token"],
        case["url"],
        case["params"],
        case["expected_signature"],
        algorithm=case.get("algorithm", "HMAC_SHA1"),
        body=case.get("body"),
    )
    assert result.ok is case["valid"], (case["note"], result)
    if case["valid"]:
        assert result.url == case["signed_url"]
        assert case["signed_url"] in result.tried_urls
    if case.get("body") is not None:
        assert body_sha256(case["body"]) == case["body_sha256"]


@needs_vectors
def test_vector_signed_strings() -> None:
    checked = 0
    for case in CASES:
        if "signed_string" in case:
            assert signed_string(case["signed_url"], case["params"]) == case["signed_string"]
            checked += 1
    assert checked >= 17


@needs_vectors
@pytest.mark.parametrize("case", [c for c in CASES if "form_body" in c][:3])
def test_vector_through_request(case: dict[str, Any]) -> None:
    """The same cases, as a web request: params decoded from the raw form body."""
    from urllib.parse import urlsplit

    url = urlsplit(case["url"])
    request = WebhookRequest(
        method="POST", path=url.path, query_string=url.query,
        headers={"x-twilio-signature": case["expected_signature"],
                 "content-type": "application/x-www-form-urlencoded"},
        body=case["form_body"].encode(), scheme=url.scheme, host=url.netloc,
    )
    assert verify_request(case["auth_token"], UrlPolicy(), request).ok is case["valid"]


def test_port_variants_like_twilio() -> None:
    assert port_variants("https://a.example/x?q=1") == (
        "https://a.example/x?q=1", "https://a.example:443/x?q=1")
    assert port_variants("http://a.example/x") == ("http://a.example/x", "http://a.example:80/x")
    # any port is stripped; a URL with a port keeps it for the second try
    assert port_variants("https://a.example:8443/x") == (
        "https://a.example/x", "https://a.example:8443/x")


def _request(
    url_path: str = "/voice/webhook",
    query: str = "callId=c1",
    *,
    signed_url: str | None,
    headers: dict[str, str] | None = None,
    host: str = "127.0.0.1:3334",
    scheme: str = "http",
    remote: str = "203.0.113.9",
    params: dict[str, str] | None = None,
) -> WebhookRequest:
    from urllib.parse import urlencode

    params = FORM if params is None else params
    hdrs = {"content-type": "application/x-www-form-urlencoded", **(headers or {})}
    if signed_url is not None:
        hdrs["x-twilio-signature"] = compute_signature(TOKEN, signed_url, params)
    return WebhookRequest(
        method="POST", path=url_path, query_string=query, headers=hdrs,
        body=urlencode(params).encode(), remote_addr=remote, scheme=scheme, host=host,
    )


PUBLIC = "https://voice.example.com/voice/webhook"


def test_public_url_gives_scheme_host_and_the_request_path_and_query() -> None:
    policy = UrlPolicy(public_url=PUBLIC)
    request = _request(signed_url=PUBLIC + "?callId=c1")
    check = verify_request(TOKEN, policy, request)
    assert check.ok, check
    assert check.url == PUBLIC + "?callId=c1"
    assert check.tried_urls[0] == PUBLIC + "?callId=c1"


def test_query_kept_verbatim() -> None:
    policy = UrlPolicy(public_url=PUBLIC)
    ok = _request(query="type=status&callId=c1", signed_url=PUBLIC + "?type=status&callId=c1")
    assert verify_request(TOKEN, policy, ok).ok
    reordered = _request(query="callId=c1&type=status",
                         signed_url=PUBLIC + "?type=status&callId=c1")
    assert not verify_request(TOKEN, policy, reordered).ok


def test_8443_port_signed_without_port() -> None:
    """publicUrl carries :8443, Twilio signed the port-less URL (and vice versa)."""
    with_port = UrlPolicy(public_url="https://voice.example.com:8443/voice/webhook")
    request = _request(signed_url="https://voice.example.com/voice/webhook?callId=c1")
    check = verify_request(TOKEN, with_port, request)
    assert check.ok, check
    signed_with_port = _request(signed_url="https://voice.example.com:8443/voice/webhook?callId=c1")
    assert verify_request(TOKEN, with_port, signed_with_port).ok
    # without the port in publicUrl, a :8443 signature cannot be matched (port unknown)
    assert not verify_request(TOKEN, UrlPolicy(public_url=PUBLIC), signed_with_port).ok


def test_public_url_path_tried_when_a_proxy_rewrote_the_path() -> None:
    policy = UrlPolicy(public_url="https://voice.example.com/twilio/in")
    request = _request(signed_url="https://voice.example.com/twilio/in?callId=c1")
    check = verify_request(TOKEN, policy, request)
    assert check.ok, check
    assert "https://voice.example.com/voice/webhook?callId=c1" in check.tried_urls


FWD = {"x-forwarded-proto": "https", "x-forwarded-host": "public.example.com"}
FWD_URL = "https://public.example.com/voice/webhook?callId=c1"


def test_forwarded_headers_ignored_unless_trusted() -> None:
    request = _request(signed_url=FWD_URL, headers=FWD)
    check = verify_request(TOKEN, UrlPolicy(), request)
    assert not check.ok
    assert check.tried_urls[0] == "http://127.0.0.1/voice/webhook?callId=c1"
    assert all("public.example.com" not in u for u in check.tried_urls)


def test_forwarded_headers_trusted_by_flag() -> None:
    policy = UrlPolicy(trust_forwarding_headers=True)
    assert verify_request(TOKEN, policy, _request(signed_url=FWD_URL, headers=FWD)).ok


def test_forwarded_headers_trusted_from_proxy_ip_only() -> None:
    policy = UrlPolicy(trusted_proxy_ips=("10.0.0.0/8", "192.0.2.7"))
    assert verify_request(
        TOKEN, policy, _request(signed_url=FWD_URL, headers=FWD, remote="10.1.2.3")).ok
    assert verify_request(
        TOKEN, policy, _request(signed_url=FWD_URL, headers=FWD, remote="192.0.2.7")).ok
    assert not verify_request(
        TOKEN, policy, _request(signed_url=FWD_URL, headers=FWD, remote="192.0.2.8")).ok


def test_forwarded_host_must_be_allowed() -> None:
    policy = UrlPolicy(trust_forwarding_headers=True, allowed_hosts=("voice.example.com",))
    check = verify_request(TOKEN, policy, _request(signed_url=FWD_URL, headers=FWD))
    assert not check.ok
    assert "not allowed" in check.reason
    allowed = UrlPolicy(trust_forwarding_headers=True, allowed_hosts=("public.example.com",))
    assert verify_request(TOKEN, allowed, _request(signed_url=FWD_URL, headers=FWD)).ok
    wildcard = UrlPolicy(trust_forwarding_headers=True, allowed_hosts=("*.example.com",))
    assert verify_request(TOKEN, wildcard, _request(signed_url=FWD_URL, headers=FWD)).ok


def test_rfc7239_forwarded_and_forwarded_port() -> None:
    policy = UrlPolicy(trust_forwarding_headers=True)
    rfc = {"forwarded": 'for=198.51.100.1;proto=https;host="public.example.com"'}
    assert verify_request(TOKEN, policy, _request(signed_url=FWD_URL, headers=rfc)).ok
    ported = {**FWD, "x-forwarded-port": "8443"}
    url = "https://public.example.com:8443/voice/webhook?callId=c1"
    assert verify_request(TOKEN, policy, _request(signed_url=url, headers=ported)).ok


def test_ngrok_free_tier_trusts_forwarding_only_from_loopback() -> None:
    # the operator lists the tunnel's host; the request names it in X-Forwarded-Host
    policy = UrlPolicy(ngrok_loopback=True, allowed_hosts=("public.example.com",))
    assert verify_request(
        TOKEN, policy, _request(signed_url=FWD_URL, headers=FWD, remote="127.0.0.1")).ok
    assert verify_request(
        TOKEN, policy, _request(signed_url=FWD_URL, headers=FWD, remote="::1")).ok
    assert not verify_request(
        TOKEN, policy, _request(signed_url=FWD_URL, headers=FWD, remote="198.51.100.4")).ok
    # it never makes a bad signature good
    bad = _request(signed_url=FWD_URL, headers=FWD, remote="127.0.0.1")
    forged = WebhookRequest(**{**_fields(bad), "headers": {**bad.headers,
                                                           "x-twilio-signature": "AAAA"}})
    assert not verify_request(TOKEN, policy, forged).ok


def _fields(request: WebhookRequest) -> dict[str, Any]:
    return {name: getattr(request, name) for name in WebhookRequest.__slots__}


def test_host_header_used_without_public_url_and_checked_against_allowed_hosts() -> None:
    url = "http://127.0.0.1:3334/voice/webhook?callId=c1"
    assert verify_request(TOKEN, UrlPolicy(), _request(signed_url=url)).ok
    policy = UrlPolicy(allowed_hosts=("voice.example.com",))
    check = verify_request(TOKEN, policy, _request(signed_url=url))
    assert not check.ok and "host not allowed" in check.reason


def test_missing_and_bad_signature_and_no_token() -> None:
    missing = _request(signed_url=None)
    assert verify_request(TOKEN, UrlPolicy(), missing).reason == "missing signature"
    url = "http://127.0.0.1:3334/voice/webhook?callId=c1"
    assert verify_request("other-token", UrlPolicy(), _request(signed_url=url)).reason == (
        "invalid signature")
    assert not verify_request(None, UrlPolicy(), _request(signed_url=url)).ok


def test_sha256_only_when_the_settings_header_says_so() -> None:
    url = "http://127.0.0.1:3334/voice/webhook?callId=c1"
    sig256 = compute_signature(TOKEN, url, FORM, "HMAC_SHA256")
    req = _request(signed_url=None, headers={
        "x-twilio-signature": sig256,
        "x-twilio-webhooks-signature-settings": "key=k1,algorithm=HMAC_SHA256"})
    assert verify_request(TOKEN, UrlPolicy(), req).ok
    plain = _request(signed_url=None, headers={"x-twilio-signature": sig256})
    assert not verify_request(TOKEN, UrlPolicy(), plain).ok
    assert algorithm_of({"x-twilio-webhooks-signature-settings": "algorithm=MD5"}) is None


def test_json_body_needs_body_hash() -> None:
    body = b'{"CallSid":"CA1"}'
    query = f"callId=c1&bodySHA256={body_sha256(body)}"
    url = f"http://127.0.0.1:3334/voice/webhook?{query}"
    headers = {"content-type": "application/json",
               "x-twilio-signature": compute_signature(TOKEN, url, {})}
    req = WebhookRequest("POST", "/voice/webhook", query, headers, body, host="127.0.0.1:3334")
    assert verify_request(TOKEN, UrlPolicy(), req).ok
    tampered = WebhookRequest("POST", "/voice/webhook", query, headers, b'{"CallSid":"CA2"}',
                              host="127.0.0.1:3334")
    assert verify_request(TOKEN, UrlPolicy(), tampered).reason == "body hash mismatch"
    no_hash = WebhookRequest("POST", "/voice/webhook", "callId=c1", headers, body,
                             host="127.0.0.1:3334")
    assert not verify_request(TOKEN, UrlPolicy(), no_hash).ok


def test_policy_from_config() -> None:
    config = build_config({
        "publicUrl": "https://voice.example.com/voice/webhook",
        "tunnel": {"provider": "ngrok"},
        "webhookSecurity": {"allowedHosts": ["Voice.Example.com"], "trustedProxyIPs": ["10.0.0.1"]},
    }, {})
    policy = UrlPolicy.from_config(config)
    assert policy.public_url == "https://voice.example.com/voice/webhook"
    assert policy.allowed_hosts == ("voice.example.com",)
    assert policy.trusted_proxy_ips == ("10.0.0.1",)
    assert policy.ngrok_loopback is True
    assert UrlPolicy.from_config(build_config({}, {})).ngrok_loopback is False


def test_reconstruction_reports_source() -> None:
    rebuilt = reconstruct_urls(UrlPolicy(public_url=PUBLIC), path="/voice/webhook",
                               query_string="a=1", headers={}, scheme="http",
                               host="127.0.0.1", remote_addr="")
    assert rebuilt.source == "publicUrl" and rebuilt.urls == (PUBLIC + "?a=1",)
    none = reconstruct_urls(UrlPolicy(), path="/x", query_string="", headers={},
                            scheme="http", host="", remote_addr="")
    assert none.error


def test_body_hash_parameter_is_found_as_parse_qs_finds_it() -> None:
    public = "https://voice.example.com/voice/webhook"
    policy = UrlPolicy(public_url=public)
    # a blank bodySHA256 is no body hash: the form parameters are what was signed
    blank = _request(query="callId=c1&bodySHA256=", signed_url=public + "?callId=c1&bodySHA256=")
    assert verify_request(TOKEN, policy, blank).ok
    # a percent-encoded name is still the parameter (a JSON body covered by its hash)
    body = b'{"CallSid": "CA1"}'
    query = "body%53HA256=" + body_sha256(body)
    url = f"{public}?{query}"
    signed = WebhookRequest(
        method="POST", path="/voice/webhook", query_string=query, body=body,
        headers={"content-type": "application/json",
                 "x-twilio-signature": compute_signature(TOKEN, url, {})},
        host="voice.example.com", scheme="https")
    assert verify_request(TOKEN, policy, signed).ok
    tampered = WebhookRequest(
        method="POST", path="/voice/webhook", query_string=query, body=body + b" ",
        headers=dict(signed.headers), host="voice.example.com", scheme="https")
    assert verify_request(TOKEN, policy, tampered).reason == "body hash mismatch"


# -- forwarded hosts behind a tunnel (issue 8, item 10) --------------------------------------
#
# The official-SDK vector "VALID counterpart: public https URL rebuilt from X-Forwarded-*" is
# a request Twilio signed for https://public.example.com/twilio/voice. Replayed to a daemon
# whose tunnel is https://tunnel.ngrok.app, it arrives from the ngrok agent (loopback) with
# the tunnel's Host and whatever X-Forwarded-Host the attacker wrote.

TUNNEL_HOST = "tunnel.ngrok.app"


def _forwarded_vector() -> dict[str, Any]:
    for case in CASES:
        if case["note"].startswith("VALID counterpart: public https URL rebuilt"):
            return case
    pytest.skip("forwarded-host vector not found")


def _replayed(case: dict[str, Any], *, forwarded_host: str | None = "public.example.com",
              host: str = TUNNEL_HOST, remote: str = "127.0.0.1") -> WebhookRequest:
    from urllib.parse import urlsplit

    url = urlsplit(case["url"])
    headers = {"x-twilio-signature": case["expected_signature"],
               "content-type": "application/x-www-form-urlencoded",
               "x-forwarded-proto": "https"}
    if forwarded_host is not None:
        headers["x-forwarded-host"] = forwarded_host
    return WebhookRequest(method="POST", path=url.path, query_string=url.query,
                          headers=headers, body=case["form_body"].encode(),
                          remote_addr=remote, scheme="http", host=host)


@needs_vectors
def test_tunnel_cannot_be_used_to_replay_a_request_signed_for_another_host() -> None:
    case = _forwarded_vector()
    token = case["auth_token"]
    tunnel = UrlPolicy(ngrok_loopback=True, public_url=f"https://{TUNNEL_HOST}/twilio/voice")
    check = verify_request(token, tunnel, _replayed(case))
    assert not check.ok
    assert all("public.example.com" not in url for url in check.tried_urls)
    # no tunnel URL known yet and no allowedHosts: no forwarded host is believed at all
    unknown = UrlPolicy(ngrok_loopback=True)
    check = verify_request(token, unknown, _replayed(case))
    assert not check.ok and all("public.example.com" not in u for u in check.tried_urls)
    # RFC 7239 and X-Original-Host are forwarded hosts too
    for name, value in (("forwarded", "proto=https;host=public.example.com"),
                        ("x-original-host", "public.example.com")):
        request = _replayed(case, forwarded_host=None)
        request = WebhookRequest(**{**_fields(request),
                                    "headers": {**request.headers, name: value}})
        assert not verify_request(token, tunnel, request).ok, name
        assert not verify_request(token, unknown, request).ok, name


@needs_vectors
def test_tunnel_forwarded_host_counts_for_the_tunnels_own_host_or_an_allowed_one() -> None:
    case = _forwarded_vector()
    token = case["auth_token"]
    # the signed host is the tunnel's own (the public URL in force): accepted
    own = UrlPolicy(ngrok_loopback=True, public_url="https://PUBLIC.example.com/elsewhere")
    check = verify_request(token, own, _replayed(case))
    assert check.ok and check.url == case["signed_url"]
    # the operator listed it
    listed = UrlPolicy(ngrok_loopback=True, allowed_hosts=("public.example.com",))
    assert verify_request(token, listed, _replayed(case)).ok
    # a proxy the operator trusts still names any allowed host (unchanged)
    proxy = UrlPolicy(trust_forwarding_headers=True)
    assert verify_request(token, proxy, _replayed(case)).ok
    # ngrok passes the public Host through: with no URL known yet the Host and the
    # forwarded proto rebuild the signed URL, so verification still works
    assert verify_request(token, UrlPolicy(ngrok_loopback=True),
                          _replayed(case, forwarded_host=None, host="public.example.com")).ok
    # and from anywhere but loopback the tunnel rule does not apply at all
    assert not verify_request(token, own, _replayed(case, remote="198.51.100.7",
                                                    host=TUNNEL_HOST)).ok


def test_tunnel_vouches_only_for_its_own_host() -> None:
    policy = UrlPolicy(ngrok_loopback=True, public_url="https://user@Tunnel.ngrok.app:8443/x")
    assert tunnel_vouches_for(policy, "tunnel.ngrok.app")
    assert tunnel_vouches_for(policy, "TUNNEL.ngrok.app:443")
    assert not tunnel_vouches_for(policy, "evil.ngrok.app")
    assert not tunnel_vouches_for(policy, "tunnel.ngrok.app.evil.example")
    assert not tunnel_vouches_for(UrlPolicy(ngrok_loopback=True), "tunnel.ngrok.app")
    listed = UrlPolicy(ngrok_loopback=True, allowed_hosts=("*.example.com",))
    assert tunnel_vouches_for(listed, "a.example.com")
    assert not tunnel_vouches_for(listed, "example.org")


def test_a_lone_surrogate_in_a_forwarded_host_is_no_match_not_an_exception() -> None:
    # found by tests/fuzz/test_fuzz_carriers.py: hmac over a str that cannot be UTF-8
    policy = UrlPolicy(trust_forwarding_headers=True)
    request = _request(signed_url=FWD_URL, headers={"x-forwarded-host": "\ud83d"})
    check = verify_request(TOKEN, policy, request)
    assert not check.ok and check.reason == "invalid signature"
    assert not validate(TOKEN, "https://a.example/\udc00", {"k": "\ud83d"}, "AAAA").ok


def test_a_wss_stream_url_gets_port_443_as_its_default_variant() -> None:
    from voicecall_trio.providers.twilio.signature import port_variants

    assert port_variants("wss://voice.example.com/voice/stream") == (
        "wss://voice.example.com/voice/stream", "wss://voice.example.com:443/voice/stream")
    assert port_variants("ws://127.0.0.1/voice/stream")[1] == "ws://127.0.0.1:80/voice/stream"
