"""CPU per inbound frame on the STT side: ``send_audio`` plus the pump's send (not a test).

``--calls`` transcribers on a loopback socket to a trivial wsproto server (a process of its
own on the other core, so only the pump's process is timed), each fed one 160-byte frame
every 20 ms for ``--seconds``, as a paced call is. Prints that process's CPU per frame (user
and system: the socket write is most of the latter), for the connector given (``lean``:
``stt/ws_client.py``, the default; ``trio-websocket``: ``open_websocket_url``, as before).

    .venv/bin/python scripts/stt_send_cost.py --calls 50 --seconds 5 [--connector NAME]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import trio
from trio_websocket import open_websocket_url
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Ping, Request, TextMessage

from voicecall_trio.stt import pump
from voicecall_trio.stt.pump import RealtimeTranscriber

FRAME = bytes(range(160))


async def _serve_one(stream: trio.SocketStream) -> None:
    """Accept, then read and parse everything (the masking is checked by wsproto)."""
    ws = WSConnection(ConnectionType.SERVER)
    while True:
        try:
            data = await stream.receive_some(65536)
        except trio.BrokenResourceError:
            return
        ws.receive_data(data or None)
        for event in ws.events():
            if isinstance(event, Request):
                await stream.send_all(ws.send(AcceptConnection()))
            elif isinstance(event, Ping):
                await stream.send_all(ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                return
            elif isinstance(event, TextMessage):
                pass
        if not data:
            return


def _server_main(ports: multiprocessing.Queue[int]) -> None:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(trio.serve_tcp, _serve_one, 0)
            ports.put(listeners[0].socket.getsockname()[1])

    trio.run(main)


def start_server() -> int:
    """The server in a process of its own, on the other core; returns its port."""
    ports: multiprocessing.Queue[int] = multiprocessing.Queue()
    multiprocessing.Process(target=_server_main, args=(ports,), daemon=True).start()
    return ports.get(timeout=30)


def trio_websocket_connector(url: str, headers: dict[str, str]
                             ) -> AbstractAsyncContextManager[Any]:
    return open_websocket_url(
        url, extra_headers=[(k.encode(), v.encode()) for k, v in headers.items()],
        max_message_size=pump.MAX_SERVER_MESSAGE, connect_timeout=pump.CONNECT_TIMEOUT_S,
        disconnect_timeout=pump.CLOSE_TIMEOUT_S)


CONNECTORS: dict[str, Callable[[str, dict[str, str]], AbstractAsyncContextManager[Any]]] = {
    "lean": pump.open_realtime, "trio-websocket": trio_websocket_connector}


async def measure(port: int, calls: int, seconds: float, connector: str) -> None:
    pumps = [RealtimeTranscriber(url=f"ws://127.0.0.1:{port}/v1/realtime", api_key="k",
                                 model="m", vad_threshold=0.5, silence_duration_ms=800,
                                 on_event=lambda e: None, on_lost=lambda: None,
                                 connect=CONNECTORS[connector]) for _ in range(calls)]
    async with trio.open_nursery() as nursery:
        for t in pumps:
            await nursery.start(t.run)
        while sum(t.sessions_opened for t in pumps) < calls:  # noqa: ASYNC110 (a script)
            await trio.sleep(0.01)
        frames = int(seconds / 0.02)
        use0, wall0 = resource.getrusage(resource.RUSAGE_SELF), trio.current_time()
        next_at = trio.current_time()
        for _ in range(frames):
            for t in pumps:
                t.send_audio(FRAME)
            next_at += 0.02
            await trio.sleep_until(next_at)
        while sum(t.bytes_sent for t in pumps) < frames * calls * len(FRAME):  # noqa: ASYNC110
            await trio.sleep(0.001)
        use = resource.getrusage(resource.RUSAGE_SELF)
        user, system = use.ru_utime - use0.ru_utime, use.ru_stime - use0.ru_stime
        wall = trio.current_time() - wall0
        sent = sum(t.appends_sent for t in pumps)
        nursery.cancel_scope.cancel()
    n = frames * calls
    print(f"{connector}: {calls} calls x {frames} frames: {(user + system) / n * 1e6:.1f} us "
          f"CPU a frame ({user / n * 1e6:.1f} user + {system / n * 1e6:.1f} system; the "
          f"whole process incl. the trio loop), {n / sent:.2f} frames an append, "
          f"{wall:.1f} s wall")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connector", choices=sorted(CONNECTORS), default="lean")
    args = parser.parse_args()
    port = start_server()
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {0})
    trio.run(measure, port, args.calls, args.seconds, args.connector)


if __name__ == "__main__":
    main()
