"""How much CPU one inbound 20 ms frame costs on its way to the STT (not a test).

Times ``RealtimeTranscriber.send_audio`` (the per-frame path: append to the pending buffer,
wake the sender), ``realtime.append`` (the base64 JSON of an append message) and wsproto's
framing of that message (what trio-websocket adds before its socket write, which is not
timed here), for one frame per append and for frames batched five to an append. The issue's
budget for the whole inbound frame path (WebSocket read, Twilio decode, this) is 30 us a frame.

    .venv/bin/python scripts/stt_frame_cost.py
"""

from __future__ import annotations

import time

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request, TextMessage

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


def client_connection() -> WSConnection:
    """A wsproto client past its handshake (with a server in memory), masking as clients do."""
    client, server = WSConnection(ConnectionType.CLIENT), WSConnection(ConnectionType.SERVER)
    server.receive_data(client.send(Request(host="h", target="/v1/realtime")))
    next(server.events())
    client.receive_data(server.send(AcceptConnection()))
    assert isinstance(next(client.events()), AcceptConnection)
    return client


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
    ws = client_connection()
    one, batch = TextMessage(append(FRAME)), TextMessage(append(five))
    print(f"wsproto framing, one an append:   {per_call_us(lambda: ws.send(one)):6.2f} us")
    print(f"wsproto framing, five an append:  {per_call_us(lambda: ws.send(batch)) / 5:6.2f} us"
          " a frame")


if __name__ == "__main__":
    trio.run(main)
