"""tunnel/ngrok.py: the agent's command line, its environment and its JSON log (pure)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voicecall_trio.tunnel import ngrok

TOKEN = "2abcDEFghiJKLmnoPQRstu_1234567890abcdefghi"


def line(**fields: Any) -> str:
    return json.dumps({"t": "2026-12-01T12:00:00Z", **fields})


def test_command_line_has_no_secret_and_adds_the_domain() -> None:
    assert ngrok.command("/bin/ngrok", bind="127.0.0.1", port=3334, domain=None) == [
        "/bin/ngrok", "http", "127.0.0.1:3334", "--log", "stdout", "--log-format", "json"]
    assert ngrok.command("ngrok", bind="127.0.0.1", port=1, domain="me.ngrok.app")[-2:] == [
        "--url", "me.ngrok.app"]


@pytest.mark.parametrize(("bind", "expected"), [
    ("127.0.0.1", "127.0.0.1:80"), ("0.0.0.0", "127.0.0.1:80"), ("", "127.0.0.1:80"),
    ("::", "127.0.0.1:80"), ("::1", "[::1]:80"), ("10.0.0.5", "10.0.0.5:80"),
])
def test_forward_address(bind: str, expected: str) -> None:
    assert ngrok.forward_address(bind, 80) == expected


def test_token_goes_through_the_child_environment_only() -> None:
    env = ngrok.child_env({"PATH": "/bin", "HOME": "/h"}, TOKEN)
    assert env == {"PATH": "/bin", "HOME": "/h", "NGROK_AUTHTOKEN": TOKEN}
    assert ngrok.child_env({"PATH": "/bin"}, None) == {"PATH": "/bin"}
    # a token already in the environment is inherited as it is
    assert ngrok.child_env({"NGROK_AUTHTOKEN": "x"}, None) == {"NGROK_AUTHTOKEN": "x"}


def test_started_tunnel_line_gives_the_url() -> None:
    event = ngrok.parse_line(line(lvl="info", msg="started tunnel", obj="tunnels",
                                  name="command_line", addr="http://127.0.0.1:3334",
                                  url="https://ab12.ngrok-free.app"))
    assert event == ngrok.Started("https://ab12.ngrok-free.app")
    assert isinstance(event, ngrok.Started)
    assert ngrok.public_url(event, "/voice/webhook") == \
        "https://ab12.ngrok-free.app/voice/webhook"


@pytest.mark.parametrize("raw", [
    "", "not json", "[1,2]", "null", "\xff", b"\xff\xfe",
    line(lvl="info", msg="client session established", obj="csess"),
    line(lvl="info", msg="started tunnel"),  # no url
    line(lvl="info", msg="started tunnel", url="ftp://x.example"),
    line(lvl="info", msg="started tunnel", url="https://x.example/path"),
    line(lvl="info", msg="started tunnel", url="https://user@x.example"),
    line(lvl="info", msg="started tunnel", url="https://x.example:99999"),
    line(lvl="info", msg="started tunnel", url=12),
    line(lvl="info", msg="started tunnel", url="https://" + "x" * 3000),
    line(lvl="info", msg="started tunnel", url="https://x.example?q=1"),
    line(lvl="info", msg="open conn", err="<nil>"),
    line(lvl="info", msg="open conn", err=None),
    line(lvl="dbug", msg="heartbeat", err=""),
    # ngrok's own info line about a missing default config file carries an err
    line(lvl="info", msg="ignoring default config path, could not stat it",
         path="/root/.config/ngrok/ngrok.yml", err="stat ...: no such file or directory"),
])
def test_lines_that_say_nothing(raw: str | bytes) -> None:
    assert ngrok.parse_line(raw) is None


def test_an_auth_failure_gives_the_code_and_hides_the_token() -> None:
    err = (f"authentication failed: The authtoken you specified does not look like a proper "
           f"ngrok tunnel authtoken.\n\nYour authtoken: {TOKEN}\n\nInstructions ...\r\n\r\n"
           "ERR_NGROK_105\r\n")
    event = ngrok.parse_line(line(lvl="eror", msg="session closing", obj="tunnels.session",
                                  err=err), [TOKEN])
    assert isinstance(event, ngrok.LogError)
    assert event.code == "ERR_NGROK_105"
    assert TOKEN not in event.message and "[redacted]" in event.message
    assert event.message.startswith("session closing authentication failed")
    assert "\n" not in event.message and len(event.message) <= 300


@pytest.mark.parametrize("fields", [
    {"lvl": "crit", "msg": "command failed"},
    {"lvl": "eror", "msg": "failed to reconnect session"},
    {"lvl": "warn", "msg": "x", "err": "failed to start tunnel: ERR_NGROK_320"},
    {"msg": "no level", "err": "failed"},
    {"lvl": "warn", "msg": "x", "err": {"nested": True}},
])
def test_error_lines(fields: dict[str, Any]) -> None:
    event = ngrok.parse_line(line(**fields))
    assert isinstance(event, ngrok.LogError) and event.message


def test_a_domain_not_on_the_account() -> None:
    event = ngrok.parse_line(line(lvl="eror", msg="session closing",
                                  err="failed to start tunnel: The endpoint "
                                      "'https://me.ngrok.app' is not on your account. "
                                      "ERR_NGROK_320"))
    assert isinstance(event, ngrok.LogError)
    assert event.code == "ERR_NGROK_320" and "not on your account" in event.describe()


def test_describe_adds_the_code_once() -> None:
    assert ngrok.LogError("boom", "ERR_NGROK_1").describe() == "boom (ERR_NGROK_1)"
    assert ngrok.LogError("boom ERR_NGROK_1", "ERR_NGROK_1").describe() == "boom ERR_NGROK_1"


def test_redact_ignores_short_or_empty_secrets() -> None:
    assert ngrok.redact("a b c", ["", "b"]) == "a b c"
    assert ngrok.redact("xx secret1 yy", ["secret1"]) == "xx [redacted] yy"


def test_exit_cause() -> None:
    assert ngrok.exit_cause(1, None, "") == "ngrok exited (status 1)"
    assert ngrok.exit_cause(1, None, f"ERROR: bad token {TOKEN}\nERROR: ERR_NGROK_105\n",
                            [TOKEN]) == \
        "ngrok exited (status 1): ERROR: bad token [redacted] ERROR: ERR_NGROK_105"
    assert ngrok.exit_cause(2, ngrok.LogError("gone", "ERR_NGROK_9"), "junk") == \
        "ngrok exited (status 2): gone (ERR_NGROK_9)"


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8)


def test_a_line_nested_too_deep_says_nothing() -> None:
    assert ngrok.parse_line("[" * 30_000 + "]" * 30_000) is None
    assert ngrok.parse_line('{"err": ' + "[" * 900 + "]" * 900 + "}") is not None


@given(st.binary(max_size=400))
def test_any_bytes_parse_without_raising(raw: bytes) -> None:
    assert ngrok.parse_line(raw, [TOKEN]) is None or True


@given(st.dictionaries(st.sampled_from(["lvl", "msg", "err", "url", "obj", "x"]), JSON_VALUES,
                       max_size=5), st.booleans())
def test_any_log_object_gives_a_bounded_answer_without_the_token(
        fields: dict[str, Any], quote_token: bool) -> None:
    if quote_token:
        fields["err"] = f"{fields.get('err', '')} Your authtoken: {TOKEN}"
    event = ngrok.parse_line(json.dumps(fields), [TOKEN])
    if isinstance(event, ngrok.LogError):
        assert TOKEN not in event.describe() and len(event.message) <= 300
    elif isinstance(event, ngrok.Started):
        assert ngrok.tunnel_url(event.url) == event.url


def test_a_warning_is_fatal_only_with_ngroks_code() -> None:
    update = ngrok.parse_line(line(lvl="warn", msg="failed to check for update",
                                   obj="updater", err="Post https://update.equinox.io: EOF"))
    assert isinstance(update, ngrok.LogError) and not update.fatal
    coded = ngrok.parse_line(line(lvl="warn", msg="x", err="failed: ERR_NGROK_320"))
    assert isinstance(coded, ngrok.LogError) and coded.fatal
    for level in ("eror", "crit"):
        event = ngrok.parse_line(line(lvl=level, msg="failed to reconnect session"))
        assert isinstance(event, ngrok.LogError) and event.fatal
