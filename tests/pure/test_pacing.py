"""The pacer's arithmetic: due times from the base, a bounded lead, re-basing after stalls."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voicecall_trio.media.framer import FRAME_BYTES, Framer
from voicecall_trio.media.pacing import FRAME_S, LEAD_S, Pacer, heard_ms


def send_as_allowed(pacer: Pacer, start: float, frames: int, jitter: float = 0.0) -> list[float]:
    """Send ``frames`` at the earliest allowed moments (plus ``jitter`` late each wake)."""
    now, times = start, []
    for _ in range(frames):
        at = pacer.send_at()
        if at is not None and at > now:
            now = at + jitter
        pacer.sent(now)
        times.append(now)
    return times


def test_frame_n_is_due_at_base_plus_n_frames_and_sent_at_most_lead_early() -> None:
    pacer = Pacer()
    times = send_as_allowed(pacer, 100.0, 50)
    for n, sent in enumerate(times):
        assert 100.0 + n * FRAME_S - LEAD_S - 1e-9 <= sent <= 100.0 + n * FRAME_S
    assert times[:4] == [100.0] * 4  # the first lead's worth goes at once
    assert times[4] == pytest.approx(100.0 + 4 * FRAME_S - LEAD_S)
    assert pacer.end == pytest.approx(100.0 + 50 * FRAME_S)


def test_late_wakes_do_not_accumulate_drift() -> None:
    pacer = Pacer()
    times = send_as_allowed(pacer, 0.0, 500, jitter=0.004)  # every sleep oversleeps 4 ms
    # summing sleeps would end 500 * 4 ms = 2 s late; scheduling from the base stays on time
    assert times[-1] == pytest.approx(499 * FRAME_S - LEAD_S + 0.004)
    assert pacer.end == pytest.approx(500 * FRAME_S)


def test_sent_returns_the_play_time_and_ahead_is_what_is_left() -> None:
    pacer = Pacer(lead_s=0.06)
    assert pacer.send_at() is None and pacer.end is None and pacer.ahead(5.0) == 0.0
    assert pacer.sent(10.0) == 10.0
    assert pacer.sent(10.0) == pytest.approx(10.02)
    assert pacer.ahead(10.0) == pytest.approx(0.04)
    assert pacer.ahead(10.03) == pytest.approx(0.01)
    assert pacer.ahead(11.0) == 0.0


def test_a_stall_rebases_instead_of_bursting() -> None:
    pacer = Pacer()
    send_as_allowed(pacer, 0.0, 10)  # plays until 0.2
    # no audio for a second: the far end ran dry at 0.2
    assert pacer.sent(1.2) == 1.2  # played at once, a new run
    times = send_as_allowed(pacer, 1.2, 10)
    assert times[:3] == [1.2] * 3  # only the lead, not the 50 frames "missed"
    assert times[3] == pytest.approx(1.2 + 4 * FRAME_S - LEAD_S)


def test_up_to_a_frame_late_keeps_the_schedule_with_no_lead() -> None:
    pacer = Pacer(lead_s=0.0)
    pacer.sent(0.0)
    assert pacer.send_at() == pytest.approx(0.02)
    assert pacer.sent(0.035) == pytest.approx(0.02)  # 15 ms late: jitter, same run
    assert pacer.sent(0.2) == 0.2  # 160 ms late: re-based


def test_reset_starts_a_new_run() -> None:
    pacer = Pacer()
    send_as_allowed(pacer, 0.0, 5)
    pacer.reset()
    assert pacer.send_at() is None and pacer.ahead(0.0) == 0.0
    assert pacer.sent(0.01) == 0.01


def test_bad_parameters() -> None:
    with pytest.raises(ValueError):
        Pacer(frame_s=0)
    with pytest.raises(ValueError):
        Pacer(lead_s=-1)


@given(st.lists(st.tuples(st.floats(0, 0.5), st.floats(0, 0.01)), min_size=1, max_size=200),
       st.sampled_from([0.0, 0.02, 0.06, 0.2]))
def test_never_more_than_the_lead_ahead_and_never_a_burst(
        gaps: list[tuple[float, float]], lead: float) -> None:
    """Frames become available after random gaps (TTS stalls) and the sender wakes a little
    late (jitter): a frame is never sent earlier than lead before it plays, plays at most a
    frame after it was sent, and what is buffered over there never exceeds lead + a frame."""
    pacer = Pacer(lead_s=lead)
    now = 0.0
    for gap, jitter in gaps:
        now += gap if gap > 0.3 else 0.0  # mostly back to back, sometimes a stall
        at = pacer.send_at()
        if at is not None and at > now:
            now = at + jitter
        plays = pacer.sent(now)
        assert plays >= now - FRAME_S - 1e-9  # late by at most a frame: no catch-up burst
        assert plays <= now + lead + 1e-9  # early by at most the lead
        assert pacer.ahead(now) <= lead + FRAME_S + 1e-9


@pytest.mark.parametrize(("frames", "ahead", "heard"), [
    (0, 0.0, 0), (10, 0.0, 200), (10, 0.06, 140), (10, 0.5, 0), (10, -1.0, 200), (3, 0.0101, 50),
])
def test_heard_ms(frames: int, ahead: float, heard: int) -> None:
    assert heard_ms(frames, ahead) == heard


def test_framer_cuts_pads_and_keeps_the_rest() -> None:
    framer = Framer()
    assert framer.push(b"") == [] and framer.flush() is None
    assert framer.push(b"\x01" * 100) == [] and framer.pending == 100
    frames = framer.push(b"\x02" * 400)
    assert [len(f) for f in frames] == [FRAME_BYTES] * 3 and framer.pending == 20
    assert frames[0] == b"\x01" * 100 + b"\x02" * 60
    assert framer.push(b"\x03" * FRAME_BYTES)[0] == b"\x02" * 20 + b"\x03" * 140
    last = framer.flush()
    assert last == b"\x03" * 20 + b"\xff" * 140
    assert framer.flush() is None
    exact = framer.push(b"\x04" * FRAME_BYTES)
    assert exact == [b"\x04" * FRAME_BYTES] and framer.flush() is None


def test_the_pure_media_modules_import_nothing_heavy() -> None:
    """DESIGN section 3: the media cores import no trio, httpx or web framework (a fresh
    interpreter, since this one has trio loaded already)."""
    modules = ["voicecall_trio.media", "voicecall_trio.media.mulaw",
               "voicecall_trio.media.resample", "voicecall_trio.media.framer",
               "voicecall_trio.media.pacing"]
    heavy = {"trio", "httpx", "quart", "quart_trio", "hypercorn", "trio_websocket"}
    code = (f"import importlib, sys\n"
            f"for name in {modules!r}: importlib.import_module(name)\n"
            f"print(' '.join(sorted({{m.split('.')[0] for m in sys.modules}} & {heavy!r})))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, check=True)
    assert result.stdout.strip() == ""
