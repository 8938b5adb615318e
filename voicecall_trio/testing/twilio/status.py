"""A fake Twilio call's status: moving it (``initiated`` ... ``completed``), the status callbacks
each move owes (per ``StatusCallbackEvent``), and ending a call exactly once, with its final
callback sent in the background. Once a call exists, only this layer changes its ``status``.
"""

from __future__ import annotations

import time
from typing import Literal

from .values import FINAL_STATUSES, FakeCall
from .webhooks import WebhookSender


class CallStatus(WebhookSender):
    """Status moves and their callbacks; ``_end`` is the only way a call ends."""

    @staticmethod
    def _event_of(status: str) -> str:
        if status == "in-progress":
            return "answered"
        return "completed" if status in FINAL_STATUSES else status

    def _set_status(self, call: FakeCall, status: str) -> list[tuple[str, str]] | None:
        """Move the call; the status callback's params when one is due, else None."""
        call.status = status
        if status == "in-progress" and call.answered_at is None:
            call.answered_at = time.time()
        self._notify()
        if not call.status_callback or self._event_of(status) not in call.status_events:
            return None
        return self._status_params(call, number_level=call.direction == "inbound")

    async def _send_status(self, call: FakeCall, params: list[tuple[str, str]] | None) -> None:
        if params is not None and call.status_callback:
            await self._deliver(call.sid, "status", call.status_callback, params)

    def _end(self, call: FakeCall, status: str,
             by: Literal["twiml", "rest", "callee", "carrier", "error"]) -> None:
        """End a call (once): stop its TwiML and send the final callback in the background."""
        if call.terminal:
            return
        call.ended_at = time.time()
        call.ended_by = by
        params = self._set_status(call, status)
        if call._scope is not None:
            call._scope.cancel()
        if self._nursery is None or self._stop.is_set():
            call.done.set()  # shutting down: no more callbacks
            return
        self._nursery.start_soon(self._finish, call, params)

    async def _finish(self, call: FakeCall, params: list[tuple[str, str]] | None) -> None:
        try:
            await self._send_status(call, params)
            for late in call._deferred:  # out-of-order quirk: the early ones arrive last
                await self._send_status(call, late)
            call._deferred.clear()
        finally:
            call.done.set()
            self._notify()

