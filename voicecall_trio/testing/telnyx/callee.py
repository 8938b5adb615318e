"""The fake Telnyx's call simulation: calls come to exist (placed, offered inbound, or already
there after a restart), ring and are answered or refused as their ``Callee`` says, speak and are
answered with the callee's next scripted line once transcription is on, and hang up; each step
queues the webhook Telnyx would send. The REST layer above calls into it for each action.
"""

from __future__ import annotations

import base64
import math
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, Literal

import trio

from .values import _OUTCOME_CAUSE, Callee, FakeCall, _iso, _Outgoing
from .webhooks import WebhookSender


class CallSimulation(WebhookSender):
    """What happens to calls, and the webhooks each step queues."""

    def add_call(
        self,
        call_control_id: str | None = None,
        *,
        direction: Literal["outbound", "inbound"] = "outbound",
        from_: str = "+15550001234",
        to: str = "+14155551234",
        call_id: str | None = None,
        alive: bool = True,
        answered: bool = True,
        callee: Callee | None = None,
        webhook_url: str | None = None,
    ) -> FakeCall:
        """A call the carrier already has (e.g. from before a daemon restart); no webhook."""
        call = self._new_call(
            call_control_id, direction=direction, from_=from_, to=to,
            callee=callee or self.callee_for(to if direction == "outbound" else from_),
            webhook_url=webhook_url,
        )
        if call_id is not None:
            call.client_state = base64.b64encode(call_id.encode()).decode("ascii")
        call.answered = answered
        call.state = "answered" if answered else call.state
        if not alive:
            call.alive, call.state = False, "hangup"
            call.hangup_cause, call.hangup_source = "normal_clearing", "callee"
        self._notify()
        return call

    def start_inbound(
        self,
        from_: str,
        to: str,
        *,
        script: Sequence[str] | None = None,
        webhook_url: str | None = None,
    ) -> str:
        """Someone calls ``to``: send ``call.initiated`` (incoming, parked); returns its id.

        The daemon is then expected to answer (``call.answered`` follows) or reject
        (``call.hangup`` with ``call_rejected`` follows)."""
        caller = replace(self.callee_for(from_), answer_delay=None)
        if script is not None:
            caller = replace(caller, script=tuple(script))
        call = self._new_call(None, direction="inbound", from_=from_, to=to, callee=caller,
                              webhook_url=webhook_url)
        call.state = "parked"
        self._emit(call, "call.initiated", direction="incoming", state="parked",
                   caller_id_name=from_, **self._parties(call))
        return call.call_control_id

    def answer(self, call_control_id: str) -> None:
        """The remote party of an outbound call picks up now."""
        self._answer(self._call(call_control_id))

    def callee_hangup(self, call_control_id: str, *, cause: str = "normal_clearing") -> None:
        """The remote party hangs up (``hangup_source`` is whichever side it is)."""
        call = self._call(call_control_id)
        source = "callee" if call.direction == "outbound" else "caller"
        self._end(call, cause, source)

    def say(self, call_control_id: str, text: str, *, is_final: bool = True) -> bool:
        """The remote party says ``text`` now; sent only while transcription is on."""
        call = self._call(call_control_id)
        if not (call.alive and call.transcribing):
            return False
        self._transcript(call, text, is_final=is_final)
        return True

    def send_event(
        self, call_control_id: str, event_type: str, payload: Mapping[str, Any] | None = None
    ) -> str:
        """Queue any event for a call (e.g. ``call.dtmf.received`` with ``{"digit": "5"}``);
        ``payload`` adds to the call's common fields. Returns the event id."""
        call = self._call(call_control_id)
        return self._emit(call, event_type, **dict(payload or {}))

    def release_held(self) -> None:
        """Queue again every event held back by ``hold_next``, in their original order."""
        for call in self.calls.values():
            held, call._held = call._held, []
            for item in held:
                self._enqueue(call, item)

    def _new_call(
        self,
        call_control_id: str | None,
        *,
        direction: Literal["outbound", "inbound"],
        from_: str,
        to: str,
        callee: Callee,
        webhook_url: str | None,
    ) -> FakeCall:
        ccid = call_control_id or "v3:" + secrets.token_urlsafe(24)
        call = FakeCall(ccid, direction, from_, to, callee, webhook_url=webhook_url,
                        script=list(callee.script), start_time=_iso(self._clock()))
        self.calls[ccid] = call
        if self._nursery is not None:
            send, receive = trio.open_memory_channel[_Outgoing](math.inf)
            call._queue = send
            self._nursery.start_soon(self._worker, call, receive)
        return call

    def _parties(self, call: FakeCall) -> dict[str, Any]:
        return {"from": call.from_, "to": call.to, "start_time": call.start_time}

    def _emit(self, call: FakeCall, event_type: str, **payload: Any) -> str:
        item = self._outgoing(call, event_type, payload)
        self._enqueue(call, item)
        return item.event_id

    def _answer(self, call: FakeCall) -> None:
        if not call.alive or call.answered:
            return
        call.answered, call.state = True, "answered"
        self._emit(call, "call.answered", state="answered", **self._parties(call))
        self._notify()

    def _end(self, call: FakeCall, cause: str, source: str) -> None:
        if not call.alive:
            return
        call.alive, call.state, call.transcribing = False, "hangup", False
        call.hangup_cause, call.hangup_source = cause, source
        self._emit(call, "call.hangup", state="hangup", hangup_cause=cause,
                   hangup_source=source,
                   sip_hangup_cause="200" if cause == "normal_clearing" else "487",
                   **self._parties(call))
        self._notify()

    def _transcript(self, call: FakeCall, text: str, *, is_final: bool) -> None:
        self._emit(call, "call.transcription", transcription_data={
            "confidence": 0.97 if is_final else 0.71,
            "is_final": is_final,
            "transcript": text,
            "transcription_track": "inbound",
        })

    def _reply(self, call: FakeCall) -> None:
        """The remote party answers what the bot just said (when it has lines left)."""
        call.owed_reply = False
        if not call.script or not call.alive:
            return
        text = call.script.pop(0)
        if call.callee.interim:
            words = text.split()
            self._transcript(call, " ".join(words[: max(1, len(words) // 2)]), is_final=False)
        self._transcript(call, text, is_final=True)

    def _speak_started(self, call: FakeCall, text: str) -> None:
        call.speaking += 1
        call.spoken.append(text)
        self._emit(call, "call.speak.started")
        if self.speak_duration <= 0:
            self._speak_ended(call)
        else:
            assert self._nursery is not None
            self._nursery.start_soon(self._speak_later, call)

    async def _speak_later(self, call: FakeCall) -> None:
        await trio.sleep(self.speak_duration)
        self._speak_ended(call)

    def _speak_ended(self, call: FakeCall) -> None:
        call.speaking = max(0, call.speaking - 1)
        if not call.alive:
            return
        self._emit(call, "call.speak.ended", status="completed")
        if call.transcribing:
            self._reply(call)
        else:
            call.owed_reply = True

    async def _ring(self, call: FakeCall) -> None:
        await trio.sleep(call.callee.answer_delay or 0.0)
        self._pick_up(call)

    def _pick_up(self, call: FakeCall) -> None:
        """The ringing ends as the callee decided: answered, busy, no answer, rejected."""
        if call.callee.outcome == "answer":
            self._answer(call)
        else:
            self._end(call, _OUTCOME_CAUSE[call.callee.outcome], "callee")

