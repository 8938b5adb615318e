"""While a supervised tunnel's URL is in force, Twilio signatures are checked against it only
(pure: ``UrlPolicy`` and ``reconstruct_urls``, with signatures computed here)."""

from __future__ import annotations

from urllib.parse import urlencode

from voicecall_trio.config import build_config
from voicecall_trio.providers import WebhookRequest
from voicecall_trio.providers.twilio.signature import compute_signature, verify_request
from voicecall_trio.providers.twilio.signed_url import UrlPolicy

TOKEN = "tunnel-signature-token-0123456789"
TUNNEL = "https://now.ngrok-free.app/voice/webhook"
OTHER = "https://other.example.com/voice/webhook"
PARAMS = [("CallSid", "CA" + "2" * 32), ("CallStatus", "completed")]
TWILIO = {"provider": "twilio", "fromNumber": "+15550001234",
          "twilio": {"accountSid": "AC" + "2" * 32, "authToken": TOKEN}}


def signed_for(url: str, *, forwarded_host: str | None, host: str = "now.ngrok-free.app",
               remote: str = "127.0.0.1") -> WebhookRequest:
    headers = {"x-twilio-signature": compute_signature(TOKEN, url, PARAMS),
               "content-type": "application/x-www-form-urlencoded",
               "x-forwarded-proto": "https"}
    if forwarded_host:
        headers["x-forwarded-host"] = forwarded_host
    return WebhookRequest(method="POST", path="/voice/webhook", query_string="",
                          headers=headers, body=urlencode(PARAMS).encode(),
                          remote_addr=remote, scheme="http", host=host)


def test_from_config_marks_a_tunnels_url() -> None:
    config = build_config({**TWILIO, "tunnel": {"provider": "ngrok"}}, {})
    assert UrlPolicy.from_config(config, TUNNEL).tunnel_url is True
    assert UrlPolicy.from_config(config).tunnel_url is False
    fixed = build_config({**TWILIO, "publicUrl": OTHER}, {})
    assert UrlPolicy.from_config(fixed, OTHER).tunnel_url is False
    assert UrlPolicy.from_config(fixed).public_url == OTHER


def test_the_tunnels_url_is_accepted_and_allowed_hosts_vouch_for_no_other() -> None:
    config = build_config({**TWILIO, "tunnel": {"provider": "ngrok"},
                           "webhookSecurity": {"allowedHosts": ["other.example.com"]}}, {})
    policy = UrlPolicy.from_config(config, TUNNEL)
    assert verify_request(TOKEN, policy, signed_for(TUNNEL, forwarded_host=None)).ok
    assert verify_request(TOKEN, policy,
                          signed_for(TUNNEL, forwarded_host="now.ngrok-free.app")).ok
    # signed for another host the operator allows: refused while the tunnel is in force
    check = verify_request(TOKEN, policy, signed_for(OTHER, forwarded_host="other.example.com"))
    assert not check.ok and all("other.example.com" not in url for url in check.tried_urls)
    # the same policy without a tunnel URL keeps today's allowedHosts rule
    before = UrlPolicy.from_config(config)
    assert verify_request(TOKEN, before, signed_for(OTHER, forwarded_host="other.example.com")).ok


def test_a_trusted_proxy_cannot_name_another_host_while_a_tunnel_is_in_force() -> None:
    config = build_config({**TWILIO, "tunnel": {"provider": "ngrok"},
                           "webhookSecurity": {"trustForwardingHeaders": True}}, {})
    policy = UrlPolicy.from_config(config, TUNNEL)
    assert not verify_request(TOKEN, policy,
                              signed_for(OTHER, forwarded_host="other.example.com")).ok
    assert verify_request(TOKEN, policy, signed_for(TUNNEL, forwarded_host=None)).ok


def test_allow_ngrok_free_tier_keeps_its_meaning() -> None:
    # on: the agent's forwarded proto counts from loopback; off: only the tunnel URL itself
    on = UrlPolicy.from_config(build_config({**TWILIO, "tunnel": {"provider": "ngrok"}}, {}))
    assert on.ngrok_loopback
    off = UrlPolicy.from_config(build_config(
        {**TWILIO, "tunnel": {"provider": "ngrok", "allowNgrokFreeTier": False}}, {}), TUNNEL)
    assert not off.ngrok_loopback
    assert verify_request(TOKEN, off, signed_for(TUNNEL, forwarded_host=None)).ok
    # never a bad signature accepted, whatever the forwarding
    bad = signed_for(TUNNEL, forwarded_host=None)
    tampered = WebhookRequest(**{**{f: getattr(bad, f) for f in bad.__dataclass_fields__},
                                 "body": bad.body + b"&x=1"})
    assert not verify_request(TOKEN, UrlPolicy.from_config(
        build_config({**TWILIO, "tunnel": {"provider": "ngrok"}}, {}), TUNNEL), tampered).ok
