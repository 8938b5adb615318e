"""Log redaction and formats (pure: records in, lines out; no daemon, no event loop)."""

from __future__ import annotations

import base64
import io
import json
import logging
import sys
from datetime import datetime

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voicecall_trio.config import build_config
from voicecall_trio.logs import configure_logging, learn_secrets, make_handler, redactors
from voicecall_trio.redact import (
    REDACTED,
    Redactor,
    config_secrets,
    mask_phones,
    secret_values,
)

TOKEN = "tw-auth-token-9f8e7d6c5b4a"
OPENAI = "sk-test-openai-0123456789abcdef"
SID = "AC" + "7" * 32
CALL_ID = "3f2b8c1e-5d4a-4e8b-9c2d-1a2b3c4d5e6f"
MAC = "AbCdEfGhIjKlMnOpQrStUvWx"


def record(msg: str, *args: object, level: int = logging.INFO,
           exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise RuntimeError(f"boom with {TOKEN}")
        except RuntimeError:
            exc_info = sys.exc_info()
    return logging.LogRecord("voicecall.test", level, __file__, 1, msg, args, exc_info)


def line(fmt: str, rec: logging.LogRecord, redactor: Redactor | None = None) -> str:
    handler = make_handler(fmt, redactor or Redactor([TOKEN, OPENAI]))  # type: ignore[arg-type]
    assert handler.formatter is not None
    return handler.formatter.format(rec)


# -- which values are secrets ---------------------------------------------------------------


def test_every_credential_named_key_of_the_config_is_a_secret_whatever_its_section() -> None:
    config = build_config({
        "provider": "twilio", "fromNumber": "+15550001234",
        "twilio": {"accountSid": SID, "authToken": TOKEN},
        "streaming": {"openaiApiKey": OPENAI},
        "tunnel": {"ngrokAuthToken": "ngrok-token-123456"},
    }, {})
    found = config_secrets(msgspec.to_builtins(config), {"ELEVENLABS_API_KEY": "el-key-000111",
                                                        "HOME": "/home/someone"})
    assert {TOKEN, OPENAI, "ngrok-token-123456", "el-key-000111"} <= found
    assert base64.b64encode(f"{SID}:{TOKEN}".encode()).decode() in found  # REST Basic auth
    assert "/home/someone" not in found and SID not in found


def test_keys_added_later_are_found_by_their_names() -> None:
    doc = {"tts": {"apiKey": "tts-key-abcdef", "elevenlabs": {"apiKey": "el-abcdefgh"}},
           "responseApiKey": "resp-key-abcdef", "realtime": [{"clientSecret": "cs-abcdef"}],
           "responseModel": "gpt-x", "voice": "coral"}
    assert set(secret_values(doc)) == {"tts-key-abcdef", "el-abcdefgh", "resp-key-abcdef",
                                       "cs-abcdef"}


# -- what redaction removes -------------------------------------------------------------------


@pytest.mark.parametrize("text", [
    f"token is {TOKEN}!",
    f"url https://x.test/?k={TOKEN}",
    f"{{'Authorization': 'Bearer {OPENAI}'}}",
    "Authorization: Basic QUMxMjM0NTY3ODk6c2VjcmV0c2VjcmV0",
    "headers=[(b'authorization', b'Bearer abcdefghijklmnop')]",
    "proxy-authorization=Digest abcdefghijklmnop",
    "Authorization: abcdefghijklmnop",
])
def test_secrets_and_credentials_are_removed(text: str) -> None:
    out = Redactor([TOKEN, OPENAI]).redact(text)
    assert TOKEN not in out and OPENAI not in out
    assert "QUMxMjM0NTY3ODk6c2VjcmV0c2VjcmV0" not in out and "abcdefghijklmnop" not in out
    assert REDACTED in out


def test_url_encoded_forms_of_a_secret_are_removed_too() -> None:
    secret = "p@ss/word+with=odd chars"
    out = Redactor([secret]).redact("body: pw=p%40ss%2Fword%2Bwith%3Dodd%20chars&x=1")
    assert "p%40ss" not in out and REDACTED in out


def test_stream_tokens_lose_their_mac_but_keep_the_call_id() -> None:
    out = Redactor().redact(f"stream token {CALL_ID}.{MAC} refused")
    assert MAC not in out and f"{CALL_ID}.{REDACTED}" in out


def test_an_authorization_value_is_removed_but_the_rest_of_the_line_stays() -> None:
    out = Redactor().redact("Authorization: Basic c2VjcmV0 sent to +15550001234, ok")
    assert out == f"Authorization: Basic {REDACTED} sent to +15550001234, ok"


def test_harmless_text_is_left_alone() -> None:
    text = ("basic auth is off; Bearer tok; call 3f2b8c1e done; voice coral; "
            "authorization header missing")
    assert Redactor(["abc", "short"]).redact(text) == text  # short values are not secrets


def test_learned_secrets_accumulate() -> None:
    redactor = Redactor(["first-secret-1"])
    redactor.add(["second-secret-2", "x"])
    assert len(redactor) == 2
    assert redactor.redact("first-secret-1 second-secret-2") == f"{REDACTED} {REDACTED}"


def test_a_secret_inside_another_is_removed_whole() -> None:
    out = Redactor(["abcdefgh", "abcdefgh-longer"]).redact("v=abcdefgh-longer")
    assert out == f"v={REDACTED}"


# -- phone numbers -------------------------------------------------------------------------


def test_phone_numbers_keep_only_their_last_four_digits() -> None:
    assert mask_phones("from +15550001234 to +447700900123.") == \
        "from +1******1234 to +4*******0123."
    assert mask_phones("id AB+15550001234 x") == "id AB+15550001234 x"  # part of a token
    assert mask_phones("+1******1234") == "+1******1234"  # already masked
    assert mask_phones("From=%2B15550001234&To=%2b447700900123") == \
        "From=%2B1******1234&To=%2b4*******0123"  # as a form or URL carries them


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_phones_are_masked_at_info_and_above_but_not_at_debug(fmt: str) -> None:
    for level in (logging.INFO, logging.WARNING, logging.ERROR):
        assert "+15550001234" not in line(fmt, record("call from %s", "+15550001234",
                                                      level=level))
    assert "+15550001234" in line(fmt, record("call from %s", "+15550001234",
                                              level=logging.DEBUG))


# -- formats --------------------------------------------------------------------------------


@pytest.mark.parametrize("level", [logging.DEBUG, logging.INFO, logging.ERROR])
@pytest.mark.parametrize("fmt", ["text", "json"])
def test_no_secret_in_any_format_at_any_level(fmt: str, level: int) -> None:
    rec = record("auth %s key %r hdr %s", TOKEN, OPENAI, f"Authorization: Bearer {OPENAI}",
                 level=level, exc=True)
    out = line(fmt, rec)
    assert TOKEN not in out and OPENAI not in out
    assert "boom with" in out  # the traceback is there, without the secret


def test_json_is_one_object_a_line_with_the_documented_fields() -> None:
    out = line("json", record("two\nlines with \"quotes\" %s", TOKEN, exc=True))
    assert "\n" not in out
    obj = json.loads(out)
    assert set(obj) == {"ts", "level", "logger", "msg", "exc"}
    assert obj["level"] == "INFO" and obj["logger"] == "voicecall.test"
    assert obj["msg"] == f'two\nlines with "quotes" {REDACTED}'
    assert obj["ts"].endswith("Z")
    assert datetime.fromisoformat(obj["ts"].replace("Z", "+00:00")).utcoffset().total_seconds() == 0
    assert "RuntimeError" in obj["exc"] and TOKEN not in obj["exc"]
    assert "exc" not in json.loads(line("json", record("plain")))


def test_json_escaping_cannot_hide_a_secret() -> None:
    secret = 'quote"and\\backslash-secret'
    out = line("json", record("v=%s", secret), Redactor([secret]))
    assert json.loads(out)["msg"] == f"v={REDACTED}"


def test_configure_logging_installs_one_redacting_handler_and_learn_secrets_extends_it(
) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    stream = io.StringIO()
    try:
        configure_logging("info", log_format="json", redactor=Redactor([TOKEN]), stream=stream)
        assert len(redactors()) == 1
        learn_secrets({"tts": {"apiKey": "reloaded-key-123"}}, {"OPENAI_API_KEY": OPENAI})
        logging.getLogger("voicecall.x").info("%s %s %s", TOKEN, "reloaded-key-123", OPENAI)
        logging.getLogger("httpx").info("not shown: below WARNING")
        lines = stream.getvalue().splitlines()
        assert len(lines) == 1
        assert json.loads(lines[0])["msg"] == " ".join([REDACTED] * 3)
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)


def test_a_record_that_cannot_be_formatted_does_not_dump_its_arguments() -> None:
    stream = io.StringIO()
    handler = make_handler("text", Redactor([TOKEN]), stream)
    handler.handle(record("two args expected %s %s", TOKEN))  # a call-site bug
    out = stream.getvalue()
    assert "could not be formatted (TypeError)" in out and TOKEN not in out
    assert len(out.splitlines()) == 1


def test_warnings_go_through_the_redacting_handler() -> None:
    import warnings

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    stream = io.StringIO()
    logging.captureWarnings(False)  # another test's capture may be stale (pytest resets it)
    try:
        configure_logging("info", log_format="json", redactor=Redactor([TOKEN]), stream=stream)
        # what warnings.warn ends in (pytest records warnings itself, so call it directly)
        warnings.showwarning(f"deprecated thing used with {TOKEN}", UserWarning, __file__, 1)
        (only,) = stream.getvalue().splitlines()
        obj = json.loads(only)
        assert obj["logger"] == "py.warnings" and TOKEN not in only and REDACTED in obj["msg"]
    finally:
        logging.captureWarnings(False)
        root.handlers[:], level = saved
        root.setLevel(level)


# -- properties ---------------------------------------------------------------------------------

TOKEN_CHARS = st.characters(whitelist_categories=("Lu", "Ll", "Nd"), whitelist_characters="-_")


@settings(max_examples=200, deadline=None)
@given(secret=st.text(TOKEN_CHARS, min_size=6, max_size=40),
       before=st.text(max_size=40), after=st.text(max_size=40),
       times=st.integers(min_value=1, max_value=3))
def test_a_known_secret_never_survives_whatever_surrounds_it(
    secret: str, before: str, after: str, times: int
) -> None:
    text = before + (secret + after) * times
    assert secret not in Redactor([secret]).redact(text)


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=200))
def test_redaction_and_masking_never_fail_and_only_remove(text: str) -> None:
    out = mask_phones(Redactor([TOKEN]).redact(text))
    assert TOKEN not in out
    if REDACTED not in out and "*" not in out:
        assert out == text  # nothing matched: untouched
