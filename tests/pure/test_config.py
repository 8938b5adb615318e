"""Config: seed keys and defaults, file formats, strict validation with key paths, env."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from voicecall_trio.config import build_config, load_config
from voicecall_trio.errors import ConfigError


def test_no_config_means_mock_with_seed_defaults() -> None:
    c = build_config({}, {})
    assert c.provider == "mock"
    assert (c.serve.port, c.serve.bind, c.serve.path) == (3334, "127.0.0.1", "/voice/webhook")
    assert c.outbound.default_mode == "notify" and c.outbound.notify_hangup_delay_sec == 3
    assert c.inbound_policy == "disabled" and c.allow_from == []
    assert c.max_duration_seconds == 300 and c.max_concurrent_calls == 1
    assert c.transcript_timeout_ms == 180_000 and c.response_timeout_ms == 30_000
    assert c.response_model == "openai/gpt-4o-mini"
    assert c.streaming.stream_path == "/voice/stream" and not c.streaming.enabled
    assert c.tunnel.provider == "none" and c.tunnel.allow_ngrok_free_tier
    assert str(c.journal_path).endswith("clawd/voice-calls/calls.jsonl")
    assert c.mock.answer_delay_ms == 300 and c.mock.caller_script


def test_whole_assistant_config_is_accepted() -> None:
    doc = {"gateway": {"port": 1}, "plugins": {"entries": {
        "other": {"config": {"whatever": True}},
        "voice-call": {"enabled": True, "config": {"provider": "mock", "toNumber": "+15550005678"}},
    }}}
    assert build_config(doc, {}).to_number == "+15550005678"


@pytest.mark.parametrize(("doc", "path"), [
    ({"provider": "twilio", "fromNumber": "+15550001234"}, "twilio.accountSid"),
    ({"twilio": {"acountSid": "x"}}, "twilio.acountSid"),
    ({"fromNumber": "5550001234"}, "fromNumber"),
    ({"allowFrom": ["+15550001234", "12"]}, "allowFrom.1"),
    ({"serve": {"port": "x"}}, "serve.port"),
    ({"outbound": {"defaultMode": "shout"}}, "outbound.defaultMode"),
    ({"provider": "telnyx", "fromNumber": "+15550001234",
      "telnyx": {"apiKey": "k", "connectionId": "c"}}, "telnyx.publicKey"),
    ({"provider": "telnyx", "fromNumber": "+15550001234",
      "telnyx": {"apiKey": "k", "connectionId": "c", "publicKey": "bm90IGEga2V5"}},
     "telnyx.publicKey"),
    ({"bogus": 1}, "bogus"),
])
def test_errors_name_the_key_path(doc: dict[str, object], path: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_config(doc, {})
    assert str(info.value).startswith(path + ":"), str(info.value)


def test_errors_inside_a_plugin_entry_carry_the_full_path() -> None:
    doc = {"plugins": {"entries": {"voice-call": {"config": {"serve": {"prot": 1}}}}}}
    with pytest.raises(ConfigError, match=r"^plugins\.entries\.voice-call\.config\.serve\.prot:"):
        build_config(doc, {})


def test_env_fallbacks_fill_missing_credentials_and_the_file_wins() -> None:
    env = {"TWILIO_ACCOUNT_SID": "ACenv", "TWILIO_AUTH_TOKEN": "tok", "OPENAI_API_KEY": "sk"}
    c = build_config({"provider": "twilio", "fromNumber": "+15550001234",
                      "twilio": {"accountSid": "ACfile"}}, env)
    assert c.twilio.account_sid == "ACfile" and c.twilio.auth_token == "tok"
    assert c.streaming.openai_api_key == "sk"


@pytest.mark.parametrize("suffix", [".json", ".json5", ".toml"])
def test_file_formats(tmp_path: Path, suffix: str) -> None:
    text = {
        ".json": json.dumps({"toNumber": "+15550005678", "serve": {"port": 4000}}),
        ".json5": "{\n  // comment\n  toNumber: '+15550005678',\n  serve: {port: 4000,},\n}",
        ".toml": 'toNumber = "+15550005678"\n[serve]\nport = 4000\n',
    }[suffix]
    file = tmp_path / f"config{suffix}"
    file.write_text(text)
    c = load_config(file, {})
    assert (c.to_number, c.serve.port) == ("+15550005678", 4000)


def test_config_file_discovery_and_socket_override(tmp_path: Path) -> None:
    (tmp_path / "voicecall").mkdir()
    (tmp_path / "voicecall" / "config.toml").write_text(f'store = "{tmp_path}/s"\n')
    env = {"XDG_CONFIG_HOME": str(tmp_path)}
    c = load_config(None, env)
    assert c.socket_path(env) == tmp_path / "s" / "voicecall.sock"
    assert c.socket_path({"VOICECALL_SOCKET": "/x/y.sock"}) == Path("/x/y.sock")


def test_unreadable_or_garbage_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.json", {})
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_config(bad, {})


@pytest.mark.parametrize(("doc", "env", "key"), [
    ({"responseApiKey": "sk-ours", "streaming": {"openaiApiKey": "sk-stream"}},
     {"OPENAI_API_KEY": "sk-env"}, "sk-ours"),
    ({"streaming": {"openaiApiKey": "sk-stream"}}, {"OPENAI_API_KEY": "sk-env"}, "sk-env"),
    ({"streaming": {"openaiApiKey": "sk-stream"}}, {}, "sk-stream"),
    ({}, {}, None),
])
def test_the_reply_key_is_ours_then_the_env_then_streaming(
        doc: dict[str, Any], env: dict[str, str], key: str | None) -> None:
    assert build_config(doc, env).response_key() == key


def test_reply_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"^responseTimeoutMs:"):
        build_config({"responseTimeoutMs": 0}, {})
    for bad in ("ftp://x", "http://[bad/v1", "http://x:99999/v1", "http:///v1", "https://"):
        # each passed a prefix check, and urlsplit raised at start-up: a traceback, no daemon
        with pytest.raises(ConfigError, match=r"^responseBaseUrl:"):
            build_config({"responseBaseUrl": bad}, {})
    with pytest.raises(ConfigError, match=r"^responseModel:"):
        build_config({"responseModel": " "}, {})


def test_doctor_says_who_answers_without_the_key() -> None:
    from voicecall_trio.cli.doctor.local import replies_detail

    assert replies_detail(build_config({}, {})).startswith("replies: only a registered agent")
    keyed = replies_detail(build_config({}, {"OPENAI_API_KEY": "sk-secret"}))
    assert keyed == "replies: built-in, gpt-4o-mini at https://api.openai.com/v1"
    local = build_config({"responseBaseUrl": "http://127.0.0.1:11434/v1",
                          "responseModel": "ollama/llama3.1"}, {})
    assert replies_detail(local) == ("replies: built-in, llama3.1 at "
                                     "http://127.0.0.1:11434/v1 (no key)")
    secret = build_config({"responseBaseUrl": "https://user:sk-pw@llm.example/v1?key=sk-q"}, {})
    assert "sk-" not in replies_detail(secret)



def test_a_file_that_is_not_utf8_or_is_huge_is_a_config_error(tmp_path: Path) -> None:
    """``serve``, ``doctor`` and SIGHUP all read through ``load_config``: a binary file must
    be a ConfigError naming it (doctor's ``config`` check fails, serve exits 1), never a
    UnicodeDecodeError traceback; a file of many MiB is refused, not read into memory."""
    binary = tmp_path / "config.json"
    binary.write_bytes(b'{"store": "/tmp/x", "note": "\xff\xfe"}')
    with pytest.raises(ConfigError, match=r"config\.json.*UTF-8"):
        load_config(binary, {})
    huge = tmp_path / "huge.json"
    huge.write_bytes(b" " * (8 * 1024 * 1024) + b"{}")
    with pytest.raises(ConfigError, match=r"huge\.json.*over"):
        load_config(huge, {})

    from voicecall_trio.cli.doctor.local import check_config

    check, config = check_config(str(binary), {})
    assert check.status == "fail" and config is None
