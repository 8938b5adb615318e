"""The system prompt with the call's context, the bounded history, and the waterfall (pure)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from voicecall_trio.agent.prompt import (
    DEFAULT_SYSTEM_PROMPT,
    MAX_MESSAGE_CHARS,
    build_messages,
    history_messages,
)
from voicecall_trio.agent.waterfall import MAX_TURNS, Waterfall
from voicecall_trio.model import CallRecord, CallState, TranscriptEntry

NOW = datetime(2026, 3, 14, 19, 5, tzinfo=timezone(timedelta(hours=1), "CET"))


def entry(speaker: str, text: str, final: bool = True) -> TranscriptEntry:
    return TranscriptEntry(timestamp=0, speaker=speaker, text=text, is_final=final)


def record(direction: str = "outbound", *lines: TranscriptEntry,
           initial: str = "Hi, it's the bot.") -> CallRecord:
    return CallRecord(call_id="c1", provider="mock", direction=direction,  # type: ignore[arg-type]
                      state=CallState.LISTENING, from_="+15550000001", to="+15550000002",
                      transcript=tuple(lines),
                      metadata={"mode": "conversation", "initialMessage": initial})


def test_the_default_prompt_and_an_outbound_call_s_context() -> None:
    [system, *rest] = build_messages(None, record("outbound"), NOW)
    assert system["role"] == "system" and rest == []
    text = system["content"]
    assert text.startswith(DEFAULT_SYSTEM_PROMPT)
    assert "You placed this call to +15550000002." in text
    assert "You opened the call with this message: Hi, it's the bot." in text
    assert "Saturday, 14 March 2026, 19:05 CET" in text


def test_a_custom_prompt_and_an_inbound_call() -> None:
    [system] = build_messages("  You are Trattoria's host.  ", record("inbound"), NOW)
    text = system["content"]
    assert text.startswith("You are Trattoria's host.\n\nCall context:")
    assert "inbound call from +15550000001" in text and "opened the call" not in text
    assert build_messages("   ", record("inbound"), NOW)[0]["content"].startswith(
        DEFAULT_SYSTEM_PROMPT)


def test_history_roles_merging_and_interim_lines() -> None:
    lines = [entry("bot", "Hello."), entry("user", "Hi"), entry("user", "partial", False),
             entry("user", "I need a table."), entry("bot", "Sure."), entry("bot", " "),
             entry("user", "For two.")]
    assert history_messages(lines) == [
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Hi I need a table."},
        {"role": "assistant", "content": "Sure."},
        {"role": "user", "content": "For two."}]


def test_the_newest_turns_within_the_budget() -> None:
    lines = [entry("user" if n % 2 else "bot", f"line {n}") for n in range(100)]
    kept = history_messages(lines, max_messages=10)
    assert len(kept) == 10 and kept[-1]["content"] == "line 99"
    assert kept[0]["content"] == "line 90"
    by_size = history_messages(lines, max_chars=30)
    assert [m["content"] for m in by_size] == ["line 96", "line 97", "line 98", "line 99"]
    huge = history_messages([entry("user", "x" * 10_000)], max_chars=100)
    assert huge == [{"role": "user", "content": "x" * MAX_MESSAGE_CHARS}]  # the newest goes in


def test_waterfall_turns_offsets_and_bounds() -> None:
    fall = Waterfall()
    changes: list[int] = []
    fall.on_change = lambda: changes.append(1)
    fall.mark("finalTranscript", at=10.0)  # no turn open: a Gather/mock result starts one
    fall.mark("replyRequested", at=10.001)
    fall.mark("firstToken", at=10.3)
    fall.mark("firstToken", at=10.4)  # only the first mark of a stage counts
    fall.usage({"total_tokens": 12})
    fall.mark("firstAudioOut", at=10.5)
    assert fall.turns() == [{"callerStopped": 0.0, "finalTranscript": 0.0,
                             "replyRequested": 1.0, "firstToken": 300.0,
                             "firstAudioOut": 500.0, "usage": {"total_tokens": 12}}]
    # on a stream the voice session marks callerStopped, then the final transcript follows
    fall.mark("callerStopped", at=20.0)
    fall.mark("finalTranscript", at=20.25)
    assert fall.turns()[-1] == {"callerStopped": 0.0, "finalTranscript": 250.0}
    # a second final transcript (Gather) opens the next turn by itself
    fall.mark("finalTranscript", at=30.0)
    assert len(fall.turns()) == 3 and changes
    for n in range(MAX_TURNS + 5):
        fall.mark("finalTranscript", at=40.0 + n)
    assert len(fall.turns()) == MAX_TURNS
    with pytest.raises(ValueError, match="unknown waterfall stage"):
        fall.mark("bogus", at=1.0)


def test_marks_before_any_turn_are_ignored() -> None:
    fall = Waterfall()
    fall.mark("heard", at=1.0)
    fall.usage({"total_tokens": 1})
    assert fall.turns() == [] and fall.current() is None


def test_a_resumed_call_keeps_its_journaled_turns() -> None:
    fall = Waterfall(max_turns=3)
    fall.restore([{"callerStopped": 0, "firstAudioOut": 5.0}, "junk",
                  {"callerStopped": 0, "firstAudioOut": 6.0}])
    fall.mark("finalTranscript", at=1.0)
    fall.mark("finalTranscript", at=2.0)
    assert [t.get("firstAudioOut") for t in fall.turns()] == [6.0, None, None]
    fall.restore([{"callerStopped": 0}])  # only before any new turn
    assert len(fall.turns()) == 3


def test_reply_failures_are_logged_once_a_minute_with_a_count(caplog: Any) -> None:
    from voicecall_trio.replies import _Throttle

    now = [0.0]
    throttle = _Throttle(60.0, clock=lambda: now[0])
    assert throttle.warn("failed: %s", "a")
    assert not throttle.warn("failed: %s", "b")
    now[0] = 59.9
    assert not throttle.warn("failed: %s", "c")
    now[0] = 60.0
    assert throttle.warn("failed: %s", "d")
    assert [r.getMessage() for r in caplog.records] == [
        "failed: a", "failed: d (2 more since the last such line)"]
