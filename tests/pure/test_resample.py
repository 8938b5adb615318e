"""24 kHz s16le -> 8 kHz mu-law against the vectors' sox conversion; streaming = one-shot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voicecall_trio.media import mulaw
from voicecall_trio.media.framer import FRAME_BYTES, Framer
from voicecall_trio.media.resample import ToUlaw8k

VECTORS = Path(__file__).resolve().parents[3] / "shared" / "vectors"
if not (VECTORS / "tts_reply_24k_s16le.pcm").exists():
    pytest.skip(f"TTS vectors not found in {VECTORS}", allow_module_level=True)
PCM = (VECTORS / "tts_reply_24k_s16le.pcm").read_bytes()
REFERENCE = (VECTORS / "tts_reply_8k.ulaw").read_bytes()


def convert(pieces: list[bytes], source_rate: int = 24000) -> bytes:
    converter = ToUlaw8k(source_rate)
    return b"".join(converter.feed(piece) for piece in pieces) + converter.flush()


def correlation(a: bytes, b: bytes) -> float:
    x = mulaw.decode(a).astype(np.float64)
    y = mulaw.decode(b).astype(np.float64)
    n = min(len(x), len(y))
    x, y = x[:n], y[:n]
    return float(np.dot(x, y) / np.sqrt(np.dot(x, x) * np.dot(y, y)))


def test_the_vectors_are_the_ones_described() -> None:
    assert len(PCM) == 99340 and len(REFERENCE) == 16557


def test_conversion_matches_sox_by_correlation_and_length() -> None:
    ours = convert([PCM])
    assert len(ours) == len(REFERENCE)  # 49670 / 3, rounded the way sox does
    assert correlation(ours, REFERENCE) >= 0.99
    # and it is band-limited: plain decimation scores below the filtered conversion
    naive = mulaw.encode(np.frombuffer(PCM, dtype="<i2")[::3].astype(np.int16))
    assert correlation(ours, REFERENCE) > correlation(naive, REFERENCE)


def test_no_lag_against_the_reference() -> None:
    ours = mulaw.decode(convert([PCM])).astype(np.float64)
    ref = mulaw.decode(REFERENCE).astype(np.float64)
    scores = {lag: float(np.dot(ours[max(0, lag):len(ours) + min(0, lag)],
                                ref[max(0, -lag):len(ref) + min(0, -lag)]))
              for lag in range(-4, 5)}
    assert max(scores, key=lambda lag: scores[lag]) == 0


@pytest.mark.parametrize("size", [1, 3, 4001, 4800, 1 << 20])
def test_fixed_piece_sizes_match_one_shot(size: int) -> None:
    whole = convert([PCM])
    pieces = [PCM[i:i + size] for i in range(0, len(PCM), size)]
    streamed = convert(pieces)
    assert abs(len(streamed) - len(whole)) <= 2
    assert correlation(streamed, whole) > 0.9999


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=9000), min_size=1, max_size=40))
def test_arbitrary_pieces_match_one_shot(cuts: list[int]) -> None:
    pieces, at = [], 0
    for cut in cuts:
        pieces.append(PCM[at:at + cut])
        at += cut
    pieces.append(PCM[at:])
    streamed = convert(pieces)
    whole = convert([PCM])
    assert abs(len(streamed) - len(whole)) <= 2
    assert correlation(streamed, whole) > 0.9999


def test_an_odd_byte_waits_for_its_other_half() -> None:
    converter = ToUlaw8k(8000)  # no resampling: one byte of mu-law per sample
    assert converter.feed(b"\x00") == b""
    assert converter.feed(b"\x00\x10") == mulaw.encode(np.array([0], dtype=np.int16))
    assert converter.feed(b"") == b""
    assert converter.flush() == b""  # the lone 0x10 is half a sample: dropped


def test_empty_and_silent_input() -> None:
    assert convert([]) == b""
    silence = convert([bytes(48000)])  # 1 s of zeros
    assert abs(len(silence) - 8000) <= 2 and set(silence) <= {0xFF, 0x7F}


def test_other_source_rates() -> None:
    assert len(convert([bytes(2 * 16000)], 16000)) == pytest.approx(8000, abs=2)
    assert len(convert([bytes(2 * 44100)], 44100)) == pytest.approx(8000, abs=2)
    with pytest.raises(ValueError, match="below"):
        ToUlaw8k(4000)


def test_full_scale_noise_does_not_wrap() -> None:
    rng = np.random.default_rng(7)
    loud = rng.choice(np.array([-32768, 32767], dtype=np.int16), size=24000)
    out = convert([loud.tobytes()])
    assert len(out) == pytest.approx(8000, abs=2)  # clipped by soxr, not an exception


def test_frames_of_the_converted_reply_end_in_padding() -> None:
    framer = Framer()
    frames = framer.push(convert([PCM]))
    last = framer.flush()
    assert len(frames) == 103 and last is not None
    assert len(last) == FRAME_BYTES and last.endswith(b"\xff" * (FRAME_BYTES - 77))


def test_flush_and_close_let_go_of_the_resampler() -> None:
    converter = ToUlaw8k()
    converter.feed(PCM[:4800])
    converter.flush()
    with pytest.raises(ValueError, match="after flush"):
        converter.feed(PCM[:4800])
    cut_short = ToUlaw8k()
    cut_short.feed(PCM[:4800])
    cut_short.close()
    assert cut_short.flush() == b""
