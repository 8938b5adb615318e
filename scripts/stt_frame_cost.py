"""How much CPU one inbound 20 ms frame costs on its way to the STT (not a test).

Times ``RealtimeTranscriber.send_audio`` (the per-frame path: append to the pending buffer,
wake the sender) and ``realtime.append`` (the base64 JSON of an append message), for one
frame per append and for frames batched five to an append. The issue's budget for the whole
inbound frame path (WebSocket read, Twilio decode, this) is 30 us a frame.

    .venv/bin/python scripts/stt_frame_cost.py
"""

from __future__ import annotations

import time

import trio

from voicecall_trio.stt.pump import RealtimeTranscriber
from voicecall_trio.stt.realtime import append

FRAME = bytes(range(160))
N = 200_000


def per_call_us(fn: object, n: int = N) -> float:
    assert callable(fn)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - start) / n * 1e6)
    return best


async def main() -> None:
    t = RealtimeTranscriber(url="ws://127.0.0.1:9/v1/realtime", api_key="k", model="m",
                            vad_threshold=0.5, silence_duration_ms=800,
                            on_event=lambda e: None, on_lost=lambda: None)
    t._set_phase("open")  # as while a session is open

    def send() -> None:
        t.send_audio(FRAME)
        if len(t._pending) >= 16000:
            t._pending.clear()

    five = FRAME * 5
    print(f"send_audio, one frame:            {per_call_us(send):6.2f} us")
    print(f"append(), one frame an append:    {per_call_us(lambda: append(FRAME)):6.2f} us")
    print(f"append(), five frames an append:  {per_call_us(lambda: append(five)) / 5:6.2f} us"
          " a frame")


if __name__ == "__main__":
    trio.run(main)
