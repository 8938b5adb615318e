"""The fake Twilio's playback arithmetic (``testing/twilio/playback.py``): when marks echo."""

from __future__ import annotations

import pytest

from voicecall_trio.testing.twilio.playback import Playback


@pytest.mark.parametrize(("steps", "expected"), [
    # (time, what, bytes or name) ... -> [(name, due)]
    ([(0.0, "mark", "idle")], [("idle", 0.0)]),
    ([(0.0, "audio", 8000), (0.0, "mark", "a")], [("a", 1.0)]),
    ([(0.0, "audio", 8000), (0.5, "audio", 4000), (0.5, "mark", "a")], [("a", 1.5)]),
    ([(0.0, "audio", 800), (2.0, "audio", 800), (2.0, "mark", "a")], [("a", 2.1)]),  # idle gap
    ([(0.0, "audio", 1600), (0.0, "mark", "a"), (0.0, "audio", 1600), (0.0, "mark", "b")],
     [("a", 0.2), ("b", 0.4)]),
])
def test_a_mark_is_due_when_the_audio_before_it_has_played(
    steps: list[tuple[float, str, int | str]], expected: list[tuple[str, float]],
) -> None:
    playback = Playback()
    for at, what, value in steps:
        if what == "audio":
            assert isinstance(value, int)
            playback.audio(at, value)
        else:
            playback.mark(at, str(value))
    got = []
    while (due := playback.next_due()) is not None:
        assert playback.pop_due(due - 1e-9) == []  # not a moment early
        got += [(name, due) for name in playback.pop_due(due)]
    assert [n for n, _ in got] == [n for n, _ in expected]
    assert [t for _, t in got] == pytest.approx([t for _, t in expected])


def test_clear_drops_what_is_unplayed_and_hands_back_every_pending_mark() -> None:
    playback = Playback()
    playback.audio(0.0, 16000)
    playback.mark(0.0, "a")
    playback.audio(0.0, 8000)
    playback.mark(0.0, "b")
    assert playback.unplayed_s(0.5) == pytest.approx(2.5)
    assert playback.clear(0.5) == (["a", "b"], 20000)
    assert playback.next_due() is None and playback.unplayed_s(0.5) == 0.0
    playback.mark(0.6, "c")  # nothing queued any more: due at once
    assert playback.pop_due(0.6) == ["c"]
    assert playback.clear(1.0) == ([], 0)  # clearing an idle buffer is harmless
