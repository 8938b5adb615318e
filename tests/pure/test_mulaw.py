"""G.711 mu-law tables: the classic coder's values, round trips within the quantisation step."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from voicecall_trio.media import mulaw

ALL = np.arange(-32768, 32768, dtype=np.int16)


def g711_encode(x: int) -> int:
    """The coder as G.711 describes it, one sample at a time: the reference for the table."""
    sign = 0x80 if x < 0 else 0
    value = min(abs(x), mulaw.CLIP) + mulaw.BIAS
    exponent = value.bit_length() - 8
    mantissa = (value >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


def test_the_encode_table_is_the_g711_coder_for_every_sample() -> None:
    table = mulaw.encode(ALL)
    assert len(table) == 65536
    assert all(table[i] == g711_encode(int(x)) for i, x in enumerate(ALL))


@pytest.mark.parametrize(("sample", "code"), [
    (0, 0xFF), (-1, 0x7F), (1, 0xFF), (32767, 0x80), (-32768, 0x00), (32635, 0x80),
    (-32635, 0x00), (100, 0xF2), (-100, 0x72),
])
def test_known_codes(sample: int, code: int) -> None:
    assert mulaw.encode(np.array([sample], dtype=np.int16)) == bytes([code])


def test_silence_decodes_to_zero_and_the_extremes_to_32124() -> None:
    assert mulaw.SILENCE == 0xFF
    assert mulaw.decode(bytes([0xFF, 0x7F])).tolist() == [0, 0]
    assert mulaw.decode(bytes([0x80, 0x00])).tolist() == [32124, -32124]


def test_decode_then_encode_is_the_identity_on_codes() -> None:
    codes = bytes(range(256))
    back = mulaw.encode(mulaw.decode(codes))
    # 0x7F (-0) decodes to 0, which encodes as 0xFF (+0): the one code with a twin
    assert [b for a, b in zip(codes, back, strict=True) if a != b] == [0xFF]


def test_round_trip_is_within_half_a_step_everywhere() -> None:
    back = mulaw.decode(mulaw.encode(ALL)).astype(np.int32)
    x = ALL.astype(np.int32)
    inside = np.abs(x) <= mulaw.CLIP
    value = np.minimum(np.abs(x), mulaw.CLIP) + mulaw.BIAS
    exponent = np.floor(np.log2(value)).astype(np.int32) - 7
    half_step = 1 << (exponent + 2)
    assert (np.abs(back - x)[inside] <= half_step[inside]).all()
    assert (np.abs(back[~inside]) == 32124).all()  # clipped: the top code


def test_decode_is_a_new_int16_array_and_encode_takes_any_int16_view() -> None:
    data = bytes(range(0, 256, 3))
    decoded = mulaw.decode(data)
    assert decoded.dtype == np.int16 and len(decoded) == len(data)
    decoded[0] = 1  # writable: not a view of the table
    strided = ALL[::1000]  # not contiguous
    assert mulaw.encode(strided) == mulaw.encode(strided.copy())
    assert mulaw.encode(np.zeros(0, dtype=np.int16)) == b""


@given(st.binary(max_size=512))
def test_codes_survive_a_round_trip_except_minus_zero(data: bytes) -> None:
    assert mulaw.encode(mulaw.decode(data)) == data.replace(b"\x7f", b"\xff")
