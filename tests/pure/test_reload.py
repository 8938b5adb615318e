"""reload.plan_reload as a table: (old config, new config) -> config in force, key paths applied,
key paths that need a restart. Pure."""

from __future__ import annotations

from typing import Any

import pytest

from voicecall_trio.config import build_config
from voicecall_trio.reload import changed_paths, is_live, plan_reload

BASE: dict[str, Any] = {
    "provider": "twilio", "fromNumber": "+15550001234",
    "twilio": {"accountSid": "AC" + "1" * 32, "authToken": "old-token-123456"},
    "publicUrl": "https://old.example.com", "inboundPolicy": "disabled",
}


def cfg(**changes: Any) -> Any:
    doc = {**BASE}
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(doc.get(key), dict):
            doc[key] = {**doc[key], **value}
        else:
            doc[key] = value
    return build_config(doc, {})


@pytest.mark.parametrize(("changes", "applied"), [
    ({"inboundPolicy": "allowlist", "allowFrom": ["+15555550100"]},
     ("allowFrom", "inboundPolicy")),
    ({"inboundGreeting": "Hi there"}, ("inboundGreeting",)),
    ({"responseModel": "gpt-x", "responseSystemPrompt": "Be brief.",
      "responseTimeoutMs": 5000}, ("responseModel", "responseSystemPrompt", "responseTimeoutMs")),
    ({"tts": {"voice": "alloy", "model": "tts-2", "instructions": "calm"}},
     ("tts.instructions", "tts.model", "tts.voice")),
    ({"maxConcurrentCalls": 5, "maxDurationSeconds": 60, "ringTimeoutMs": 10_000},
     ("maxConcurrentCalls", "maxDurationSeconds", "ringTimeoutMs")),
    ({"outbound": {"defaultMode": "conversation", "notifyHangupDelaySec": 1}},
     ("outbound.defaultMode", "outbound.notifyHangupDelaySec")),
])
def test_safe_keys_are_applied(changes: dict[str, Any], applied: tuple[str, ...]) -> None:
    old, new = cfg(), cfg(**changes)
    plan = plan_reload(old, new)
    assert plan.applied == applied and plan.needs_restart == ()
    assert plan.config == new


@pytest.mark.parametrize(("changes", "restart"), [
    ({"twilio": {"authToken": "new-token-654321"}}, "twilio.authToken"),
    ({"serve": {"port": 4000}}, "serve.port"),
    ({"serve": {"path": "/other"}}, "serve.path"),
    ({"publicUrl": "https://new.example.com"}, "publicUrl"),
    ({"fromNumber": "+15550009999"}, "fromNumber"),
    ({"store": "/tmp/elsewhere"}, "store"),
    ({"streaming": {"enabled": True}}, "streaming.enabled"),
    ({"tunnel": {"provider": "ngrok"}}, "tunnel.provider"),
    ({"webhookSecurity": {"allowedHosts": ["a.example"]}}, "webhookSecurity.allowedHosts"),
    ({"skipSignatureVerification": True}, "skipSignatureVerification"),
    ({"journal": {"keepFiles": 9}}, "journal.keepFiles"),
])
def test_other_keys_keep_their_old_value_and_are_reported(
    changes: dict[str, Any], restart: str
) -> None:
    old = cfg()
    plan = plan_reload(old, cfg(**changes))
    assert plan.needs_restart == (restart,) and plan.applied == ()
    assert plan.config is old


def test_a_mixed_change_applies_the_safe_part_only() -> None:
    old = cfg()
    plan = plan_reload(old, cfg(maxConcurrentCalls=4, serve={"port": 4000},
                                tts={"voice": "alloy"}))
    assert plan.applied == ("maxConcurrentCalls", "tts.voice")
    assert plan.needs_restart == ("serve.port",)
    assert plan.config.max_concurrent_calls == 4 and plan.config.tts.voice == "alloy"
    assert plan.config.serve.port == old.serve.port  # the socket we listen on stays


def test_nothing_changed_is_an_empty_plan() -> None:
    old = cfg()
    plan = plan_reload(old, cfg())
    assert plan.config is old and not plan.changed and plan.needs_restart == ()


def test_paths_compare_objects_by_key_and_lists_whole() -> None:
    assert changed_paths({"a": {"b": 1, "c": [1, 2]}}, {"a": {"b": 1, "c": [2, 1]}}) == ["a.c"]
    assert changed_paths({"a": 1}, {"a": 1, "b": 2}) == ["b"]
    assert changed_paths(1, 2) == ["(top level)"]


@pytest.mark.parametrize(("path", "live"), [
    ("responseApiKey", True), ("tts.elevenlabs.voiceId", True), ("tts.apiKey", False),
    ("tts.baseUrl", False), ("streaming.sttModel", False), ("someFutureKey", False),
])
def test_keys_not_listed_need_a_restart(path: str, live: bool) -> None:
    assert is_live(path) is live
