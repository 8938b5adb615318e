"""Fan-out of call events to subscribers (``voicecall.subscribe``), never slowing a call down.

The supervisor publishes one payload per change; each subscriber has a bounded memory channel.
A subscriber that cannot keep up (its channel is full) or has gone away is dropped rather than
making a call wait for it: a call's state never depends on who is watching.
"""

from __future__ import annotations

from typing import Any

import trio

SUBSCRIBER_BUFFER = 1024  # payloads a subscriber may fall behind before it is dropped

Subscriber = trio.MemorySendChannel[dict[str, Any]]


class EventBus:
    def __init__(self) -> None:
        self._subscribers: set[Subscriber] = set()

    def subscribe(self) -> trio.MemoryReceiveChannel[dict[str, Any]]:
        send, receive = trio.open_memory_channel[dict[str, Any]](SUBSCRIBER_BUFFER)
        self._subscribers.add(send)
        return receive

    def unsubscribe(self, receive: trio.MemoryReceiveChannel[dict[str, Any]]) -> None:
        for send in list(self._subscribers):
            if send.statistics().open_receive_channels == 0:
                self._subscribers.discard(send)
        receive.close()

    def publish(self, payload: dict[str, Any]) -> None:
        for send in list(self._subscribers):
            try:
                send.send_nowait(payload)
            except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                # a subscriber that cannot keep up is dropped rather than slowing calls down
                self._subscribers.discard(send)
                send.close()

    def __len__(self) -> int:
        return len(self._subscribers)


__all__ = ["EventBus", "Subscriber"]
