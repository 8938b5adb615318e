"""Answering the callee through a registered agent (``agent.register``), in the call's nursery.

With an agent registered and a conversation call, each final transcript from the callee
starts one reply task in that call's nursery; a newer transcript cancels the older reply (the
callee said more: it is answered all at once), and a ``continue`` waiting for the callee takes
precedence over the agent. A reply that fails or takes longer than ``responseTimeoutMs`` is
replaced by a short spoken fallback, and the call goes on. Each reply's latency is kept in
the call's ``metadata.turnLatencyMs`` (the last 50).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio

from .errors import VoiceCallError
from .text import clean_text

if TYPE_CHECKING:
    from .call import LiveCall
    from .supervisor import Supervisor

log = logging.getLogger("voicecall.calls")

FALLBACK_REPLY = "Sorry, I'm having trouble answering right now. Could you say that again?"
TURN_LATENCIES_KEPT = 50

Responder = Callable[[dict[str, Any]], Awaitable[str | None]]


def maybe_reply(sup: Supervisor, call: LiveCall) -> None:
    """Answer the callee through the registered agent, unless a ``continue`` is waiting."""
    if (sup.responder is None or call.continue_waiting or call.nursery is None
            or call.record.terminal
            or call.record.metadata.get("mode") != "conversation"):
        return
    if call.reply_scope is not None:
        call.reply_scope.cancel()  # the callee said more: answer everything at once
    call.reply_scope = trio.CancelScope()
    call.nursery.start_soon(_reply, sup, call, call.reply_scope, sup.responder)


async def _reply(sup: Supervisor, call: LiveCall, scope: trio.CancelScope,
                 responder: Responder) -> None:
    with scope:
        record = call.record
        remote = record.to if record.direction == "outbound" else record.from_
        history = [{"speaker": e.speaker, "text": e.text, "timestamp": e.timestamp}
                   for e in record.transcript]
        params = {"callId": record.call_id, "from": remote,
                  "transcript": history[-1]["text"] if history else "",
                  "history": history}
        timeout_ms = sup.config.response_timeout_ms
        started = trio.current_time()
        text: str | None = None
        with trio.move_on_after(timeout_ms / 1000) as timer:
            try:
                text = await responder(params)
            except Exception as exc:  # the agent's failure must not end the call
                log.warning("call %s: agent reply failed: %s", record.call_id, exc)
        if text is not None:
            text = clean_text(str(text))  # an agent's text is repaired, never stored raw
        if timer.cancelled_caught:
            log.warning("call %s: agent reply timed out after %d ms", record.call_id,
                        timeout_ms)
        latency_ms = round((trio.current_time() - started) * 1000)
        kept = list(call.record.metadata.get("turnLatencyMs", []))[-(TURN_LATENCIES_KEPT - 1):]
        sup.note(call, turnLatencyMs=[*kept, latency_ms])
        try:
            await sup.say(call, text.strip() if text and text.strip() else FALLBACK_REPLY,
                          listen=True)
        except VoiceCallError as exc:
            log.warning("call %s: reply not spoken: %s", record.call_id, exc)


__all__ = ["FALLBACK_REPLY", "Responder", "maybe_reply"]
