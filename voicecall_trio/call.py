"""One live call's task: its nursery, its timers, and the shielded cleanup that always runs.

Task tree (see docs/architecture.md)::

    call task (one per live call)   run_call: owns the call's own nursery
    ├── ring deadline               no answer ringTimeoutMs + RING_GRACE_S after the start
    ├── max-duration timer          starts when the call is answered
    ├── initial message             for carriers that don't speak it themselves
    ├── notify hang-up              notify mode: hang up N s after the message was spoken
    ├── voice session               voice.py, for a call carried on a media stream: the
    │                               stream, its STT session, TTS and paced playback
    └── reply                       replies.py (agent or built-in), per final transcript

The task starts once the call exists at the carrier (the supervisor dials first) or was
offered by it. Whatever ends it (the callee hanging up, ``end``, a timer, cancellation at
shutdown, a bug), its shielded ``finally`` hangs up at the carrier if the carrier may still
have the call, journals the terminal record and frees the concurrency slot.

Nothing here writes a record: every change goes through the supervisor (``finish``, ``note``,
``say``), which stays the only writer of call records.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from .agent.waterfall import Waterfall
from .errors import ProviderError, VoiceCallError
from .model import CallRecord

if TYPE_CHECKING:
    from .supervisor import Supervisor
    from .voice import VoiceSession

log = logging.getLogger("voicecall.calls")

CLEANUP_TIMEOUT_S = 10.0  # a hang-up at the end of a call gives up after this long
RING_GRACE_S = 30.0  # a call unanswered ringTimeoutMs + this after it started is given up


class LiveCall:
    """A call this daemon is running: its record and the means to wait for changes.

    Only the supervisor calls ``set``; everything else reads ``record`` or waits."""

    def __init__(self, record: CallRecord) -> None:
        self.record = record
        self._changed = trio.Event()
        self.ended = trio.Event()
        self.task_done = trio.Event()
        self.carrier_gone = False  # the carrier told us the call is over
        self.continue_waiting = False
        self.nursery: trio.Nursery | None = None  # the call's own nursery, while it runs
        self.reply_scope: trio.CancelScope | None = None
        self.voice: VoiceSession | None = None  # while the call streams (voice.py sets it)
        self.waterfall: Waterfall | None = Waterfall()  # per-turn latency (replies.py)

    def set(self, record: CallRecord) -> None:
        self.record = record
        self._changed.set()
        self._changed = trio.Event()
        if record.terminal:
            self.ended.set()

    async def wait_changed(self) -> None:
        await self._changed.wait()

    async def wait_until(self, predicate: Callable[[CallRecord], bool]) -> CallRecord:
        while not predicate(self.record):
            await self.wait_changed()
        return self.record


async def run_call(sup: Supervisor, call: LiveCall, *,
                   task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """The call's task, in the supervisor's nursery, until the call ends."""
    try:
        async with trio.open_nursery() as nursery:
            call.nursery = nursery
            task_status.started()
            nursery.start_soon(_ring_timer, sup, call)
            nursery.start_soon(_max_duration_timer, sup, call)
            session = sup.voice_factory(sup, call) if sup.voice_factory else None
            if session is not None:  # it speaks the initial message itself, over the stream
                await nursery.start(session.run)
            elif not sup.provider.speaks_initial_message:
                nursery.start_soon(_initial_message, sup, call)
            if call.record.metadata.get("mode") == "notify":
                nursery.start_soon(_notify_hangup, sup, call)
            await call.ended.wait()
            call.nursery = None
            nursery.cancel_scope.cancel()
    except Exception:
        log.exception("call %s: task failed", call.record.call_id)
        sup.finish(call, "error", by_carrier=False)
    finally:
        with trio.CancelScope(shield=True):
            await cleanup(sup, call)


async def cleanup(sup: Supervisor, call: LiveCall) -> None:
    """End the call for good; run shielded. Each step is independent: a journal that cannot
    be written must not stop the hang-up, and a failed hang-up must not keep the slot."""
    try:
        if not call.record.terminal:
            sup.finish(call, "hangup-bot", by_carrier=False)
    except Exception:
        log.exception("call %s: could not record the end", call.record.call_id)
    try:
        if not call.carrier_gone and call.record.provider_call_id:
            with trio.move_on_after(CLEANUP_TIMEOUT_S) as scope:
                try:
                    await sup.provider.hangup(call.record)
                except ProviderError as exc:
                    log.warning("call %s: hangup failed: %s", call.record.call_id, exc)
            if scope.cancelled_caught:
                log.warning("call %s: hangup timed out", call.record.call_id)
    except Exception:
        log.exception("call %s: hangup failed", call.record.call_id)
    finally:
        sup.release(call)


async def _ring_timer(sup: Supervisor, call: LiveCall) -> None:
    """Give up on a call nobody answered: a lost final webhook must not hold the slot."""
    record = call.record
    if record.answered_at is not None or record.terminal:
        return
    limit = sup.config.ring_timeout_ms / 1000 + RING_GRACE_S
    elapsed = max(0.0, sup.clock() - record.started_at / 1000)
    with trio.move_on_after(max(0.0, limit - elapsed)):
        await call.wait_until(lambda r: r.answered_at is not None or r.terminal)
        return
    log.warning("call %s: not answered within ringTimeoutMs + %d s; giving up",
                record.call_id, RING_GRACE_S)
    sup.finish(call, "no-answer", by_carrier=False)


async def _max_duration_timer(sup: Supervisor, call: LiveCall) -> None:
    limit = sup.config.max_duration_seconds  # read at the call's start: a reload leaves it be
    record = await call.wait_until(lambda r: r.answered_at is not None or r.terminal)
    if record.terminal or record.answered_at is None:
        return
    elapsed = max(0.0, sup.clock() - record.answered_at / 1000)
    remaining = max(0.0, limit - elapsed)
    await trio.sleep(remaining)
    log.info("call %s: maxDurationSeconds (%ss) reached", record.call_id, limit)
    sup.finish(call, "timeout", by_carrier=False)


async def _initial_message(sup: Supervisor, call: LiveCall) -> None:
    record = await call.wait_until(lambda r: r.state.connected or r.terminal)
    message = record.metadata.get("initialMessage")
    if record.terminal or not message or record.metadata.get("initialSpoken"):
        return
    sup.note(call, initialSpoken=True)
    listen = record.metadata.get("mode") == "conversation"
    try:
        await sup.say(call, str(message), listen=listen)
    except VoiceCallError as exc:
        log.warning("call %s: initial message not spoken: %s", record.call_id, exc)


async def _notify_hangup(sup: Supervisor, call: LiveCall) -> None:
    """Hang up ``notifyHangupDelaySec`` after the initial message was spoken."""

    delay = sup.config.outbound.notify_hangup_delay_sec  # as when the call started
    # the first utterance the carrier reports finished is the initial message (speech
    # from the callee meanwhile does not count: it must not cut the message short)
    record = await call.wait_until(lambda r: r.terminal or r.spoken >= 1)
    if record.terminal:
        return
    await trio.sleep(delay)
    sup.finish(call, "hangup-bot", by_carrier=False)


__all__ = ["CLEANUP_TIMEOUT_S", "RING_GRACE_S", "LiveCall", "cleanup", "run_call"]
