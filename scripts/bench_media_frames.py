"""Stamped caller audio and the figures computed from what arrived, for the media benchmark.

Every inbound 20 ms frame starts with a 6-byte stamp (stream index, sequence number), so the
STT sink can tell which stream a frame belongs to, that none was lost or reordered, and when
it was sent (the generator and the sink share one process and so one clock). The other 154
bytes come from the vectors' recorded speech, so the audio is real mu-law; the sink checks
every frame byte for byte against what was sent. Six bytes are a whole number of base64
groups, so a frame's base64 is the stamp's 8 characters followed by the tail's, precomputed.
Pure: no trio, no sockets.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Final

FRAME_BYTES: Final = 160
FRAME_S: Final = 0.020
STAMP_BYTES: Final = 6
HELLO = (Path(__file__).resolve().parents[1] / "voicecall_trio" / "testing" / "audio"
         / "hello_table_for_two_8k.ulaw")


def stamp(stream: int, seq: int) -> bytes:
    return stream.to_bytes(2, "big") + seq.to_bytes(4, "big")


def read_stamp(frame: bytes | bytearray | memoryview) -> tuple[int, int]:
    return int.from_bytes(frame[0:2], "big"), int.from_bytes(frame[2:6], "big")


class StampedAudio:
    """The caller audio every stream sends: frame ``seq`` of stream ``i`` is
    ``stamp(i, seq) + tail[seq % len(tail)]``."""

    def __init__(self, ulaw: bytes | None = None) -> None:
        audio = HELLO.read_bytes() if ulaw is None else ulaw
        count = max(1, len(audio) // FRAME_BYTES)
        frames = [audio[k * FRAME_BYTES:(k + 1) * FRAME_BYTES].ljust(FRAME_BYTES, b"\xff")
                  for k in range(count)]
        self.tails = [f[STAMP_BYTES:] for f in frames]
        self.tails_b64 = [base64.b64encode(t).decode("ascii") for t in self.tails]

    def frame(self, stream: int, seq: int) -> bytes:
        return stamp(stream, seq) + self.tails[seq % len(self.tails)]

    def payload_b64(self, stream: int, seq: int) -> str:
        return (base64.b64encode(stamp(stream, seq)).decode("ascii")
                + self.tails_b64[seq % len(self.tails_b64)])

    def matches(self, frame: bytes | bytearray, stream: int, seq: int) -> bool:
        return frame[STAMP_BYTES:] == self.tails[seq % len(self.tails)] and \
            read_stamp(frame) == (stream, seq)


def media_message(stream_sid: str, audio: StampedAudio, stream: int, seq: int) -> bytes:
    """Twilio's ``media`` message for frame ``seq`` (Twilio numbers messages from 1, with
    ``connected`` unnumbered and ``start`` as 1, so media ``seq`` is message ``seq + 2``)."""
    return (f'{{"event":"media","sequenceNumber":"{seq + 2}","media":{{"track":"inbound",'
            f'"chunk":"{seq + 1}","timestamp":"{seq * 20}","payload":"'
            f'{audio.payload_b64(stream, seq)}"}},"streamSid":"{stream_sid}"}}').encode()


def connected_message() -> bytes:
    return b'{"event":"connected","protocol":"Call","version":"1.0.0"}'


def start_message(account_sid: str, stream_sid: str, call_sid: str,
                  parameters: dict[str, str]) -> bytes:
    import json

    return json.dumps({
        "event": "start", "sequenceNumber": "1",
        "start": {"accountSid": account_sid, "streamSid": stream_sid, "callSid": call_sid,
                  "tracks": ["inbound"],
                  "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000,
                                  "channels": 1},
                  "customParameters": parameters},
        "streamSid": stream_sid}, separators=(",", ":")).encode()


def stop_message(account_sid: str, stream_sid: str, call_sid: str, seq: int) -> bytes:
    return (f'{{"event":"stop","sequenceNumber":"{seq}","stop":{{"accountSid":"{account_sid}",'
            f'"callSid":"{call_sid}"}},"streamSid":"{stream_sid}"}}').encode()


def mark_message(stream_sid: str, name: str, seq: int) -> bytes:
    import json

    return json.dumps({"event": "mark", "sequenceNumber": str(seq), "streamSid": stream_sid,
                       "mark": {"name": name}}, separators=(",", ":")).encode()


# -- figures ---------------------------------------------------------------------------------


def pct(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def pacing_errors(arrivals: Sequence[float], *, lead_s: float, frame_s: float = FRAME_S,
                  since: float = -math.inf, until: float = math.inf) -> list[float]:
    """How far each outbound frame of one utterance arrived from the pacer's schedule (s).

    The pacer sends frame n at most ``lead_s`` before it is due at ``t0 + n * frame_s``, t0
    being frame 0's send: the first frames go out at once to build the lead, and from frame
    ``lead_s / frame_s`` on, frame n should arrive at ``arrivals[0] + n * frame_s - lead_s``.
    Each figure is ``|arrival_n - that|`` for those frames that arrived in
    ``[since, until)`` (e.g. while every call was speaking, and before a barge-in).
    """
    if not arrivals:
        return []
    t0 = arrivals[0]
    first = math.ceil(lead_s / frame_s - 1e-9)
    return [abs(t - (t0 + n * frame_s - lead_s))
            for n, t in enumerate(arrivals) if n >= first and since <= t < until]


def rebased_errors(arrivals: Sequence[float], *, lead_s: float, frame_s: float = FRAME_S,
                   since: float = -math.inf, until: float = math.inf
                   ) -> tuple[list[float], int]:
    """``pacing_errors`` measured against the schedule the pacer itself keeps: when a frame
    arrives more than a frame after it was due to play, the far end has run dry and the
    pacer starts a new run from that frame (``media/pacing.Pacer``), so the reference starts
    over there too. Returns the errors and how many times that happened (each one a gap the
    caller heard); a stall then counts once, not in every later frame."""
    errors: list[float] = []
    rebases = 0
    first = math.ceil(lead_s / frame_s - 1e-9)
    t0, n0 = (arrivals[0], 0) if arrivals else (0.0, 0)
    for n, t in enumerate(arrivals):
        k = n - n0
        if t > t0 + k * frame_s + frame_s:  # later than its playout by more than a frame
            rebases += 1
            t0, n0, k = t, n, 0
        if k >= first and since <= t < until:
            errors.append(abs(t - (t0 + k * frame_s - lead_s)))
    return errors, rebases


def late_frames(arrivals: Sequence[float], frame_s: float = FRAME_S) -> int:
    """Frames that arrived after they were due to play (``arrivals[0] + n * frame_s``): a
    gap the caller would hear."""
    if not arrivals:
        return 0
    t0 = arrivals[0]
    return sum(1 for n, t in enumerate(arrivals) if t > t0 + n * frame_s)


def summary_ms(values: Iterable[float]) -> dict[str, float]:
    """p50 / p99 / max of seconds, in ms rounded to 0.01 ms, with the count."""
    data = list(values)
    return {"n": len(data), "p50_ms": round(pct(data, 50) * 1000, 3),
            "p99_ms": round(pct(data, 99) * 1000, 3),
            "max_ms": round(max(data) * 1000, 3) if data else math.nan}


__all__ = [
    "FRAME_BYTES",
    "FRAME_S",
    "STAMP_BYTES",
    "StampedAudio",
    "connected_message",
    "late_frames",
    "mark_message",
    "media_message",
    "pacing_errors",
    "pct",
    "read_stamp",
    "rebased_errors",
    "stamp",
    "start_message",
    "stop_message",
    "summary_ms",
]
