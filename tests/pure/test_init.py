"""``voicecall init``'s pure parts: the TOML it renders loads back as the config it describes,
values come from flags, the environment or prompts (secrets through the secret prompt), bad
values and missing ones name their flags, and the file is private."""

from __future__ import annotations

import os
import stat
import tomllib
from pathlib import Path

import pytest

from voicecall_trio.cli.config_template import FROM as FROM_FIELD
from voicecall_trio.cli.config_template import render_config, toml_string
from voicecall_trio.cli.init import Asker, collect, write_private
from voicecall_trio.cli.init import check as check_config
from voicecall_trio.config import build_config
from voicecall_trio.errors import Failed, UsageError

SID = "AC" + "3" * 32
TOKEN = "init-auth-token-0123456789"
FROM = "+15550001234"
TELNYX_KEY = "KEY0123456789ABCDEF"
PUBLIC_KEY = "MCowBQYDK2VwAyEA" + "A" * 43 + "="  # base64 SPKI shape; validated by the loader


def no_prompts() -> Asker:
    def refuse(prompt: str) -> str:
        raise AssertionError(f"unexpected prompt {prompt!r}")

    return Asker(interactive=False, line=refuse, secret=refuse)


@pytest.mark.parametrize("value", [
    "plain", 'quo"te', "back\\slash", "new\nline", "tab\tcr\r", "del\x7fnul\x01",
    "unicode é ü 日本", "emoji 😀", "", "'single'", "trailing\\",
])
def test_toml_strings_round_trip(value: str) -> None:
    assert tomllib.loads(f"x = {toml_string(value)}")["x"] == value


def test_twilio_config_loads_back_with_the_given_values() -> None:
    values, from_env = collect("twilio", {"account_sid": SID, "auth_token": TOKEN,
                                          "from_number": FROM}, {}, no_prompts())
    text = render_config("twilio", values, from_env, public_url="https://v.example.com",
                         tunnel="ngrok")
    config = build_config(tomllib.loads(text), {})
    assert config.provider == "twilio" and config.from_number == FROM
    assert config.twilio.account_sid == SID and config.twilio.auth_token == TOKEN
    assert config.public_url == "https://v.example.com" and config.tunnel.provider == "ngrok"
    assert text.count("\n#") > 10  # commented for a reader


def test_mock_needs_nothing_and_omits_unset_sections() -> None:
    values, from_env = collect("mock", {}, {}, no_prompts())
    text = render_config("mock", values, from_env, public_url=None, tunnel=None)
    config = build_config(tomllib.loads(text), {})
    assert config.provider == "mock" and config.public_url is None
    assert "[tunnel]" not in text and "[twilio]" not in text


def test_values_in_the_environment_are_not_copied_into_the_file() -> None:
    env = {"TWILIO_AUTH_TOKEN": TOKEN}
    values, from_env = collect("twilio", {"account_sid": SID, "from_number": FROM}, env,
                               no_prompts())
    assert from_env == {"twilio.authToken": "TWILIO_AUTH_TOKEN"}
    text = render_config("twilio", values, from_env, public_url=None, tunnel=None)
    assert TOKEN not in text and "$TWILIO_AUTH_TOKEN" in text
    check_config(text, env)  # loads where the daemon has the variable
    with pytest.raises(UsageError, match="--auth-token"):
        check_config(text, {})


def test_without_a_terminal_the_missing_flags_are_named() -> None:
    with pytest.raises(UsageError) as caught:
        collect("telnyx", {"api_key": TELNYX_KEY}, {}, no_prompts())
    message = str(caught.value)
    assert "--connection-id" in message and "--public-key" in message
    assert "--from-number" in message and "--api-key" not in message


def test_on_a_terminal_secrets_go_through_the_secret_prompt_only() -> None:
    asked: list[tuple[str, str]] = []

    def line(prompt: str) -> str:
        asked.append(("line", prompt))
        return {"Twilio Account SID (AC...): ": SID}.get(prompt, FROM)

    def secret(prompt: str) -> str:
        asked.append(("secret", prompt))
        return TOKEN

    values, _ = collect("twilio", {}, {}, Asker(interactive=True, line=line, secret=secret))
    assert values == {"twilio.accountSid": SID, "twilio.authToken": TOKEN, "fromNumber": FROM}
    assert [kind for kind, _ in asked] == ["line", "secret", "line"]
    assert "Auth Token" in asked[1][1]


def test_an_empty_answer_is_asked_again_then_refused() -> None:
    answers = iter(["", "", ""])
    asker = Asker(interactive=True, line=lambda p: next(answers), secret=lambda p: "x")
    with pytest.raises(UsageError, match="--from-number"):
        asker.ask(FROM_FIELD)


@pytest.mark.parametrize(("given", "flag"), [
    ({"from_number": "555-0100"}, "--from-number"),
    ({"public_key": "not a key"}, "--public-key"),
])
def test_a_bad_value_names_its_flag(given: dict[str, str], flag: str) -> None:
    base = {"api_key": TELNYX_KEY, "connection_id": "conn-1", "public_key": PUBLIC_KEY,
            "from_number": FROM}
    values, from_env = collect("telnyx", {**base, **given}, {}, no_prompts())
    with pytest.raises(UsageError, match=flag):
        check_config(render_config("telnyx", values, from_env, public_url=None, tunnel=None),
                     {})


# -- the file -----------------------------------------------------------------------------------


def test_the_file_is_0600_and_a_new_directory_0700_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        path = tmp_path / "new" / "config.toml"
        write_private(str(path), "provider = \"mock\"\n", force=False)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_an_existing_file_is_kept_unless_forced_and_then_made_private(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("old")
    path.chmod(0o644)
    with pytest.raises(Failed, match="--force"):
        write_private(str(path), "new", force=False)
    assert path.read_text() == "old"
    write_private(str(path), "new", force=True)
    assert path.read_text() == "new" and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["config.toml"]  # no temporary left


def test_a_symlink_is_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    link = tmp_path / "config.toml"
    link.symlink_to(target)
    with pytest.raises(Failed):
        write_private(str(link), "x", force=False)
    assert not target.exists()
    write_private(str(link), "x", force=True)  # replaces the link itself
    assert not link.is_symlink() and not target.exists()


def test_telnyx_config_loads_back_with_a_real_public_key() -> None:
    import base64

    import nacl.signing

    key = base64.b64encode(bytes(nacl.signing.SigningKey.generate().verify_key)).decode()
    values, from_env = collect("telnyx", {"api_key": TELNYX_KEY, "connection_id": "conn-1",
                                          "public_key": key, "from_number": FROM}, {},
                               no_prompts())
    text = render_config("telnyx", values, from_env, public_url=None,
                         tunnel="tailscale-funnel")
    check_config(text, {})
    config = build_config(tomllib.loads(text), {})
    assert (config.telnyx.api_key, config.telnyx.connection_id, config.telnyx.public_key) == \
        (TELNYX_KEY, "conn-1", key)
    assert config.tunnel.provider == "tailscale-funnel"
