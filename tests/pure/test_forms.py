"""The fast form decoder agrees with ``urllib.parse.parse_qsl`` on any input."""

from __future__ import annotations

from urllib.parse import parse_qs, parse_qsl

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voicecall_trio.providers.forms import first_values, form_pairs

# fragments, so escapes (valid, truncated, invalid UTF-8) and separators meet often
FRAGMENTS = st.sampled_from([*"ab=&+%2F0é9 ;\x00", "%C3%A9", "%ZZ", "%e9", "=&", "%2"])
FORM_TEXT = st.lists(FRAGMENTS).map("".join)


@given(FORM_TEXT)
def test_lenient_decoding_matches_parse_qsl(text: str) -> None:
    assert form_pairs(text) == parse_qsl(text, keep_blank_values=True)


@given(FORM_TEXT)
def test_strict_decoding_matches_parse_qsl(text: str) -> None:
    try:
        expected = parse_qsl(text, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        with pytest.raises(ValueError):
            form_pairs(text, strict=True)
    else:
        assert form_pairs(text, strict=True) == expected


@given(FORM_TEXT)
def test_first_values_match_parse_qs(text: str) -> None:
    expected = {k: v[0] for k, v in parse_qs(text, keep_blank_values=True).items()}
    assert first_values(text) == expected


def test_a_twilio_body_decodes() -> None:
    body = "CallSid=CA1&From=%2B15550001111&SpeechResult=yes+please&Empty=&Flag"
    assert form_pairs(body) == [("CallSid", "CA1"), ("From", "+15550001111"),
                                ("SpeechResult", "yes please"), ("Empty", ""), ("Flag", "")]


@given(st.text())
def test_any_text_decodes_as_parse_qsl_does(text: str) -> None:
    assert form_pairs(text) == parse_qsl(text, keep_blank_values=True)
