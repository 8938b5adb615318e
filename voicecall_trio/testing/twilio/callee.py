"""The fake Twilio's callee simulation: an outbound call rings, then the callee answers (or is
busy, or never answers, or the call fails) as its ``Callee`` says; an inbound call is offered to
the number's Voice URL; and the callee can hang up at any time. It hands answered calls to the
TwiML player.
"""

from __future__ import annotations

import trio

from .base import _new_sid
from .player import TwimlPlayer
from .values import Callee, FakeCall, _Doc, _Ending


class CalleeSimulation(TwimlPlayer):
    """Rings, answers, offers inbound calls and hangs up for the simulated party."""

    async def callee_hangup(self, sid: str) -> FakeCall:
        """The callee hangs up now; returns once the final status callback was delivered."""
        call = self.calls[sid]
        if call.answered:
            status = "completed"
        else:  # a callee who declines is busy; a caller who gives up has canceled
            status = "busy" if call.direction == "outbound-api" else "canceled"
        self._end(call, status, by="callee")
        await call.done.wait()
        return call

    def start_inbound(
        self,
        from_: str,
        to: str | None = None,
        *,
        url: str | None = None,
        status_callback: str | None = None,
        callee: Callee | None = None,
        sid: str | None = None,
    ) -> FakeCall:
        """Someone calls the number: POST the offer to its Voice URL, then follow the TwiML.

        ``status_callback`` is the number's "call status changes" URL (final status only);
        ``sid`` lets a test offer the same CallSid again.
        """
        target = url or self.voice_url
        if not target:
            raise ValueError("no Voice URL: pass url= or set FakeTwilio(voice_url=...)")
        call = FakeCall(
            sid=sid or _new_sid(), direction="inbound", from_=from_,
            to=to or self.phone_number, url=target, method="POST",
            status_callback=status_callback,
            status_events=frozenset({"completed"}) if status_callback else frozenset(),
            callee=callee or self.callee(from_), status="ringing", _owner=self,
        )
        self.calls[call.sid] = call
        self._spawn(self._inbound, call)
        self._notify()
        return call


    async def _outbound(self, call: FakeCall) -> None:
        try:
            with trio.CancelScope() as scope:
                call._scope = scope
                await self._ring(call)
            call._scope = None
            if call.terminal or call.status != "in-progress":
                return
            first: _Doc | _Ending = "error"  # unless fetched (a REST update may cut in)
            if call.initial_twiml is not None:
                first = self._parse(call, call.initial_twiml, None)
            else:
                with trio.CancelScope() as scope:
                    call._scope = scope
                    first = await self._request(call, "fetch", call.url or "", call.method)
                call._scope = None
            if call.terminal:
                return
            for late in reversed(call._deferred):
                await self._send_status(call, late)
            call._deferred.clear()
            await self._follow(call, first)
        finally:
            call._scope = None
            if not call.terminal and not self._stop.is_set():
                self._end(call, "completed", by="carrier")

    async def _ring(self, call: FakeCall) -> None:
        for status in ("initiated", "ringing"):
            params = self._set_status(call, status)
            if self.quirks.out_of_order:
                if params is not None:
                    call._deferred.append(params)
            else:
                await self._send_status(call, params)
        outcome = call.callee.outcome
        ring_s = call.timeout_s if outcome == "no-answer" else min(call.callee.ring_s,
                                                                   call.timeout_s)
        await self._wait(ring_s)
        if call.terminal:
            return
        if outcome != "answered":
            self._end(call, outcome, by="callee")
            return
        params = self._set_status(call, "in-progress")
        if self.quirks.out_of_order:
            if params is not None:
                call._deferred.append(params)
        else:
            await self._send_status(call, params)

    async def _inbound(self, call: FakeCall) -> None:
        try:
            first: _Doc | _Ending = "error"
            with trio.CancelScope() as scope:
                call._scope = scope
                first = await self._request(call, "inbound", call.url or "", call.method)
            call._scope = None
            if not call.terminal:
                await self._follow(call, first)
        finally:
            call._scope = None
            if not call.terminal and not self._stop.is_set():
                self._end(call, "completed", by="carrier")

