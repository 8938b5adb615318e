"""Sentences as the reply streams in, and text cleaned for speech (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voicecall_trio.agent.sentences import MAX_SENTENCE_CHARS, SentenceSplitter, clean_spoken
from voicecall_trio.testing.chat import tokens


def split(text: str, pieces: list[str] | None = None) -> list[str]:
    splitter = SentenceSplitter()
    out = [s for piece in (pieces or tokens(text)) for s in splitter.feed(piece)]
    rest = splitter.flush()
    return [*out, rest] if rest else out


def test_the_first_sentence_is_out_before_the_reply_ends() -> None:
    splitter = SentenceSplitter()
    assert splitter.feed("Sure.") == []  # "." may still be "Sure.5": wait for the next char
    assert splitter.feed(" A table") == ["Sure."]
    assert splitter.feed(" for two is booked. Anything") == ["A table for two is booked."]
    assert splitter.feed(" else?") == []
    assert splitter.flush() == "Anything else?"
    assert splitter.flush() is None


@pytest.mark.parametrize(("text", "sentences"), [
    ("Dr. Smith will see you at 3.30 p.m. tomorrow. Is that fine?",
     ["Dr. Smith will see you at 3.30 p.m. tomorrow.", "Is that fine?"]),
    ("Call J. Doe, e.g. tonight. OK!", ["Call J. Doe, e.g. tonight.", "OK!"]),
    ('He said "Yes." Then he left... Right?!', ['He said "Yes."', "Then he left...",
                                                  "Right?!"]),
    ("1. Bring your ID\n2. Pay at the desk", ["1. Bring your ID", "2. Pay at the desk"]),
    ("Wait (really.) Yes.", ["Wait (really.)", "Yes."]),
    ("No end at all", ["No end at all"]),
    ("   ", []),
])
def test_boundaries(text: str, sentences: list[str]) -> None:
    assert split(text) == sentences


def test_a_run_without_full_stops_is_cut_at_a_comma_or_space() -> None:
    text = ", ".join(f"item number {n}" for n in range(100))
    out = split(text)
    assert len(out) > 1 and all(len(s) <= MAX_SENTENCE_CHARS for s in out)
    assert " ".join(out) == text
    blob = split("x" * 1000)
    assert [len(s) for s in blob] == [300, 300, 300, 100]


@given(st.text(alphabet="ab .!?\n,", max_size=300), st.integers(min_value=1, max_value=7))
def test_nothing_is_lost_whatever_the_chunking(text: str, size: int) -> None:
    pieces = [text[i:i + size] for i in range(0, len(text), size)]
    assert "".join(split(text, pieces)).replace(" ", "").replace("\n", "") == \
        text.replace(" ", "").replace("\n", "")


@pytest.mark.parametrize(("raw", "spoken"), [
    ("**Great** choice!", "Great choice!"),
    ("That's *really* __very__ ~~not~~ good", "That's really very not good"),
    ("# Opening hours\nWe open at _nine_.", "Opening hours. We open at nine."),
    ("- Bring ID\n- Pay at the desk\n", "Bring ID. Pay at the desk"),
    ("1) one\n2) two", "one. two"),
    ("See [our menu](https://example.com/menu).", "See our menu."),
    ("Visit https://www.example.com/a?b=c, or www.test.org.", "Visit example.com, or test.org."),
    ("Run `make`:\n```bash\nmake all\n```", "Run make: make all."),
    ("Party time 🎉🎉 ❤️ 👍🏽!", "Party time!"),
    ("A family: 👨‍👩‍👧 here", "A family: here"),
    ("| a | b |\n|---|---|\n| 1 | 2 |", "a b. 1 2"),
    ("> quoted words", "quoted words"),
    ("snake_case_name stays", "snake_case_name stays"),
    ("Price: 5 * 3 = 15", "Price: 5 3 = 15"),
    ("", ""),
])
def test_spoken_text_is_clean(raw: str, spoken: str) -> None:
    assert clean_spoken(raw) == spoken


def test_non_latin_text_and_accents_are_kept() -> None:
    assert clean_spoken("Grüße aus Köln. こんにちは。") == "Grüße aus Köln. こんにちは。"
