"""Who answers the caller, and how the answer is spoken, in the call's nursery.

Who: a registered gateway agent (``agent.register``) first, else the built-in client
(``agent/builtin.py``) when it is configured, else nobody (transcripts are still recorded).
When: on each final transcript of a conversation call (inbound calls are conversations),
never on notify calls, and never while a ``continue`` waits (that transcript is its answer).

A newer final transcript, or a barge-in on a media stream (the voice session calls
``interrupt``), cancels the reply in flight: its completion request is closed and its
unspoken sentences dropped; the next reply sees everything the caller said, and the
transcript keeps what was spoken. A reply that fails or takes longer than
``responseTimeoutMs`` gives one log line (never a key) and, unless some of it was already
spoken, a short spoken fallback; the call goes on.

How: on a media stream (``sup.speech_queues(call)``, provided with issue #10's voice
session) each sentence is handed to ``sup.say`` as soon as it is complete, in order; on paths
that cannot queue audio (Twilio ``<Gather>``, Telnyx ``speak``, mock) the reply is spoken
whole. A reply that ends the call (the model's ``end_call`` tool, or ``endCall: true`` from
an agent) is spoken without listening, and the call hangs up (``hangup-bot``) once the
carrier reports that speech played (the call's ``spoken`` counter, model rule 6).

Each turn's milestones go to the call's ``Waterfall`` (``metadata.turns``, the last 50), and
the reply's own latency to ``metadata.turnLatencyMs`` (the last 50).
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from .errors import ChatError, VoiceCallError
from .text import clean_text

if TYPE_CHECKING:
    from .agent.builtin import BuiltinResponder
    from .agent.waterfall import Waterfall
    from .call import LiveCall
    from .supervisor import Supervisor

log = logging.getLogger("voicecall.calls")

FALLBACK_REPLY = "Sorry, I'm having trouble answering right now. Could you say that again?"
TURN_LATENCIES_KEPT = 50
MAX_QUEUED_SENTENCES = 64  # a reply's sentences waiting to be spoken on a stream
SPOKEN_WAIT_S = 60.0  # how long a reply waits for the carrier to report its speech played


class _Throttle:
    """One warning line per ``every_s`` for a failure that may repeat on every turn of every
    call (a reply server that is down), with how often it happened meanwhile."""

    def __init__(self, every_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.every_s = every_s
        self.clock = clock  # process-wide by default, like the log it limits
        self.count = 0
        self._next_at = float("-inf")

    def warn(self, message: str, *args: object) -> bool:
        """Log ``message`` unless a line went out less than ``every_s`` ago; True if logged."""
        self.count += 1
        now = self.clock()
        if now < self._next_at:
            return False
        suffix = f" ({self.count - 1} more since the last such line)" if self.count > 1 else ""
        log.warning(message + suffix, *args)
        self.count = 0
        self._next_at = now + self.every_s
        return True


# per supervisor (one daemon, or one test's rig), so one daemon's failures never hide another's
_reply_failures: weakref.WeakKeyDictionary[Supervisor, _Throttle] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class AgentReply:
    """What a gateway agent answered: the text to say, and whether to hang up after it."""

    text: str | None
    end_call: bool = False


Responder = Callable[[dict[str, Any]], Awaitable["str | AgentReply | None"]]


def speech_queues(sup: Supervisor, call: LiveCall) -> bool:
    """Whether speech can be queued sentence by sentence (a media stream: issue #10)."""
    queues: Callable[[LiveCall], bool] = getattr(sup, "speech_queues", lambda c: False)
    return bool(queues(call))


def maybe_reply(sup: Supervisor, call: LiveCall) -> None:
    """A final transcript arrived: interrupt the reply in flight, and answer if it is ours."""
    interrupt(sup, call)  # the caller said more: everything is answered at once
    builtin = sup.builtin
    if ((sup.responder is None and builtin is None) or call.continue_waiting
            or call.nursery is None or call.record.terminal
            or call.record.metadata.get("mode") != "conversation"):
        return
    waterfall = _waterfall(sup, call)
    if waterfall is not None:
        waterfall.mark("finalTranscript", at=trio.current_time())
    call.reply_scope = trio.CancelScope()
    call.nursery.start_soon(_reply, sup, call, call.reply_scope)


def interrupt(sup: Supervisor, call: LiveCall) -> None:
    """Cancel the reply in flight (its HTTP request is closed, its unspoken sentences
    dropped); the voice session drops audio already queued itself."""
    if call.reply_scope is not None:
        call.reply_scope.cancel()
        call.reply_scope = None


def _waterfall(sup: Supervisor, call: LiveCall) -> Waterfall | None:
    waterfall: Waterfall | None = getattr(call, "waterfall", None)
    if waterfall is not None and waterfall.on_change is None:
        waterfall.restore(call.record.metadata.get("turns"))  # a resumed call keeps them

        def publish() -> None:
            if not call.record.terminal:
                sup.note(call, turns=waterfall.turns())
        waterfall.on_change = publish
    return waterfall


async def _reply(sup: Supervisor, call: LiveCall, scope: trio.CancelScope) -> None:
    with scope:
        waterfall = _waterfall(sup, call)
        if waterfall is not None:
            waterfall.mark("replyRequested", at=trio.current_time())
        started = trio.current_time()
        responder = sup.responder
        try:
            if responder is not None:
                await _agent_reply(sup, call, responder, started)
            elif sup.builtin is not None:
                await _builtin_reply(sup, call, sup.builtin, started)
        except Exception:  # a bug in a reply must not end the call
            log.exception("call %s: reply failed", call.record.call_id)


def _note_latency(sup: Supervisor, call: LiveCall, started: float) -> None:
    latency_ms = round((trio.current_time() - started) * 1000)
    kept = list(call.record.metadata.get("turnLatencyMs", []))[-(TURN_LATENCIES_KEPT - 1):]
    sup.note(call, turnLatencyMs=[*kept, latency_ms])


# -- a gateway agent ------------------------------------------------------------------------
async def _agent_reply(sup: Supervisor, call: LiveCall, responder: Responder,
                       started: float) -> None:
    record = call.record
    remote = record.to if record.direction == "outbound" else record.from_
    history = [{"speaker": e.speaker, "text": e.text, "timestamp": e.timestamp}
               for e in record.transcript]
    params = {"callId": record.call_id, "from": remote,
              "transcript": history[-1]["text"] if history else "",
              "history": history}
    timeout_ms = sup.config.response_timeout_ms
    answer: str | AgentReply | None = None
    with trio.move_on_after(timeout_ms / 1000) as timer:
        try:
            answer = await responder(params)
        except Exception as exc:  # the agent's failure must not end the call
            log.warning("call %s: agent reply failed: %s", record.call_id, exc)
    if timer.cancelled_caught:
        log.warning("call %s: agent reply timed out after %d ms", record.call_id, timeout_ms)
    reply = answer if isinstance(answer, AgentReply) else AgentReply(answer)
    # an agent's text is repaired, never stored raw
    text = clean_text(str(reply.text)).strip() if reply.text is not None else ""
    waterfall = _waterfall(sup, call)
    if text and waterfall is not None:  # an agent answers whole: its first token and
        now = trio.current_time()      # sentence are its answer
        waterfall.mark("firstToken", at=now)
        waterfall.mark("firstSentence", at=now)
    _note_latency(sup, call, started)
    if reply.end_call:
        await _say_and_hang_up(sup, call, text)
        return
    before = call.record.spoken
    await _say(sup, call, text or FALLBACK_REPLY)
    await _wait_heard(sup, call, before)


# -- the built-in client ----------------------------------------------------------------------
async def _builtin_reply(sup: Supervisor, call: LiveCall, builtin: BuiltinResponder,
                         started: float) -> None:
    record = call.record
    waterfall = _waterfall(sup, call)
    queued = speech_queues(sup, call)
    send, receive = trio.open_memory_channel[str](MAX_QUEUED_SENTENCES)
    sentences: list[str] = []
    spoken_before = call.record.spoken
    said = 0  # sentences handed to speech on a stream
    dropped = 0

    def on_sentence(text: str) -> None:
        nonlocal dropped
        if not queued:
            sentences.append(text)
            return
        try:
            send.send_nowait(text)
        except trio.WouldBlock:  # speech is far behind the model: keep what is queued
            dropped += 1
            if dropped == 1:
                log.warning("call %s: %d reply sentences wait to be spoken; dropping more",
                            record.call_id, MAX_QUEUED_SENTENCES)

    async def speak_sentences() -> None:
        nonlocal said
        async for text in receive:
            if await _say(sup, call, text):
                said += 1

    failure: ChatError | None = None
    end_call = False
    async with trio.open_nursery() as nursery:
        if queued:
            nursery.start_soon(speak_sentences)
        try:
            with send:
                result = await builtin.reply(record, on_sentence=on_sentence,
                                             waterfall=waterfall)
            end_call = result.end_call
        except ChatError as exc:
            failure = exc
    _note_latency(sup, call, started)
    if failure is not None:
        throttle = _reply_failures.setdefault(sup, _Throttle())
        throttle.warn("call %s: built-in reply failed: %s", record.call_id, failure.message)
        if said:
            return  # some of it was spoken: that is what the caller heard
        before = call.record.spoken
        await _say(sup, call, FALLBACK_REPLY)
        await _wait_heard(sup, call, before)
        return
    text = " ".join(sentences)
    if end_call:
        if queued:
            await _wait_spoken(sup, call, spoken_before + said)
            _hang_up(sup, call, "the model called end_call")
        else:
            await _say_and_hang_up(sup, call, text)
        return
    if queued:
        if not said:
            await _say(sup, call, FALLBACK_REPLY)
        return  # the voice session marks firstAudioOut and heard itself
    before = call.record.spoken
    await _say(sup, call, text or FALLBACK_REPLY)
    await _wait_heard(sup, call, before)


# -- speaking ---------------------------------------------------------------------------------
async def _say(sup: Supervisor, call: LiveCall, text: str, *, listen: bool = True) -> bool:
    """Speak ``text``; a call that cannot speak any more is logged, not raised."""
    try:
        await sup.say(call, text, listen=listen)
    except VoiceCallError as exc:
        log.warning("call %s: reply not spoken: %s", call.record.call_id, exc)
        return False
    if not speech_queues(sup, call):
        waterfall = _waterfall(sup, call)
        if waterfall is not None:  # on these paths: the speak request went out
            waterfall.mark("firstAudioOut", at=trio.current_time())
    return True


async def _wait_spoken(sup: Supervisor, call: LiveCall, target: int, *,
                       quiet: bool = False) -> bool:
    """Wait (bounded) until the carrier reported ``target`` utterances played; False if it
    did not (or the call ended)."""
    with trio.move_on_after(SPOKEN_WAIT_S):
        record = await call.wait_until(lambda r: r.terminal or r.spoken >= target)
        return not record.terminal
    if not quiet:
        log.warning("call %s: speech not reported played within %d s", call.record.call_id,
                    SPOKEN_WAIT_S)
    return False


async def _wait_heard(sup: Supervisor, call: LiveCall, before: int) -> None:
    """Mark ``heard`` when the carrier reports the reply played (not on ``<Gather>``)."""
    waterfall = _waterfall(sup, call)
    if waterfall is None or speech_queues(sup, call):
        return
    # quiet: a <Gather> turn is never reported played (its answer is the caller's words)
    if await _wait_spoken(sup, call, before + 1, quiet=True):
        waterfall.mark("heard", at=trio.current_time())


async def _say_and_hang_up(sup: Supervisor, call: LiveCall, text: str) -> None:
    """Say the goodbye without listening, then hang up once it was played."""
    if text:
        before = call.record.spoken
        if await _say(sup, call, text, listen=False) and await _wait_spoken(
                sup, call, before + 1):
            waterfall = _waterfall(sup, call)
            if waterfall is not None and not speech_queues(sup, call):
                waterfall.mark("heard", at=trio.current_time())
    _hang_up(sup, call, "the reply ended the call")


def _hang_up(sup: Supervisor, call: LiveCall, why: str) -> None:
    if not call.record.terminal:
        log.info("call %s: %s; hanging up", call.record.call_id, why)
        sup.finish(call, "hangup-bot", by_carrier=False)


__all__ = ["FALLBACK_REPLY", "AgentReply", "Responder", "interrupt", "maybe_reply",
           "speech_queues"]
