"""The call supervisor: the only place that changes live calls.

Task tree (see docs/architecture.md)::

    Supervisor.run                      owns the calls nursery
    └── call task (one per live call)   owns the call's own nursery
        ├── max-duration timer          starts when the call is answered
        ├── initial message             for carriers that don't speak it themselves
        ├── notify hang-up              notify mode: hang up N s after the message was spoken
        └── agent reply                 conversation mode with a registered agent: answer each
                                        final transcript (a newer one cancels an older reply)

Whatever ends a call task (the callee hanging up, ``end``, a timer, cancellation at
shutdown, a bug), its shielded ``finally`` hangs up at the carrier if the carrier may still
have the call, journals the terminal record and frees the concurrency slot.

Carrier events arrive through ``deliver`` (the ``CallDirectory`` protocol); each is applied
with the pure ``model.apply``; a changed record is journaled and published to subscribers.

A record is encoded for the journal *before* it replaces the one in memory (the same bytes are
then queued), so a record that cannot be written is refused (``InvalidInput``) and changes
nothing: memory and disk never disagree. Text from outside (carrier events, the agent's
replies) is repaired on the way in; text from a client is refused if it is not valid Unicode.

Memory holds the live calls and the last ``MAX_ENDED_REMEMBERED`` ended ones; any other call
the journal's kept files know is read back through the journal's index (one positioned read
in a worker thread), so an ended call is always found, and a carrier's call id seen before
(this run or an earlier one) is never offered as a new call again.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec
import trio

from . import model, recovery
from .config import E164, VoiceCallConfig
from .errors import (
    CallNotConnected,
    CallNotFound,
    CarrierError,
    ConcurrencyLimit,
    InvalidInput,
    TranscriptTimeout,
    VoiceCallError,
)
from .events import (
    AnyEvent,
    CallEnded,
    CallError,
    CallEvent,
    CallInitiated,
    CallSpeaking,
    CallSpeech,
    EndReason,
)
from .model import CallRecord
from .providers.base import (
    InboundDecision,
    InboundOutcome,
    Provider,
    ProviderError,
    RemoteCallState,
)
from .store import Journal, JournalError, ReplayResult, encode_record

log = logging.getLogger("voicecall.calls")

DEFAULT_GREETING = "Hello! How can I help you today?"
FALLBACK_REPLY = "Sorry, I'm having trouble answering right now. Could you say that again?"

Responder = Callable[[dict[str, Any]], Awaitable[str | None]]
CLEANUP_TIMEOUT_S = 10.0
DIAL_TIMEOUT_S = 30.0  # a dial is shielded from the caller's cancellation, up to this long
RING_GRACE_S = 30.0  # a call unanswered ringTimeoutMs + this after it started is given up
MAX_REMEMBERED_OFFERS = 4096
MAX_ENDED_REMEMBERED = 1000  # ended calls kept in memory for status (oldest forgotten first)


class LiveCall:
    """A call this daemon is running: its record and the means to wait for changes."""

    def __init__(self, record: CallRecord) -> None:
        self.record = record
        self._changed = trio.Event()
        self.ended = trio.Event()
        self.task_done = trio.Event()
        self.carrier_gone = False  # the carrier told us the call is over
        self.continue_waiting = False
        self.nursery: trio.Nursery | None = None  # the call's own nursery, while it runs
        self.reply_scope: trio.CancelScope | None = None

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


Subscriber = trio.MemorySendChannel[dict[str, Any]]


class Supervisor:
    def __init__(
        self,
        config: VoiceCallConfig,
        provider: Provider,
        journal: Journal,
        *,
        clock: Callable[[], float],
        ids: Callable[[], str],
    ) -> None:
        self.config = config
        self.provider = provider
        self.journal = journal
        self.wall_clock = clock  # wall clock, seconds since the epoch
        self.ids = ids  # a new unique id (call ids, the bot's speech events)
        self.live: dict[str, LiveCall] = {}
        self.session: OrderedDict[str, CallRecord] = OrderedDict()  # ended since start
        self._by_provider_id: dict[str, str] = {}
        self._offers: OrderedDict[str, InboundOutcome] = OrderedDict()
        self._subscribers: set[Subscriber] = set()
        self._nursery: trio.Nursery | None = None
        self._accepting = True
        self._offering: dict[str, trio.Event] = {}  # inbound offers being set up
        self.responder: Responder | None = None  # a registered agent (agent.register)
        self.started_at = time.monotonic()

    # -- lifecycle ------------------------------------------------------------------------
    async def run(
        self,
        replayed: ReplayResult | None = None,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            if replayed is not None:
                await self._recover(list(replayed.live.values()))
            task_status.started()
            await trio.sleep_forever()

    async def shutdown(self, grace_s: float) -> None:
        """Stop taking calls, end the live ones, wait up to ``grace_s``, then cancel."""
        self._accepting = False
        for call in list(self.live.values()):
            self._finish(call, "hangup-bot", by_carrier=False)
        with trio.move_on_after(grace_s):
            for call in list(self.live.values()):
                await call.task_done.wait()
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    def live_records(self) -> list[CallRecord]:
        return [call.record for call in self.live.values()]

    # -- lookups ------------------------------------------------------------------------
    def find(
        self, *, call_id: str | None = None, provider_call_id: str | None = None
    ) -> CallRecord | None:
        if call_id:
            call = self.live.get(call_id)
            if call is not None:
                return call.record
            if call_id in self.session:
                return self.session[call_id]
        if provider_call_id:
            cid = self._by_provider_id.get(provider_call_id)
            if cid is not None:
                return self.find(call_id=cid)
        return None

    async def lookup(self, call_id: str) -> CallRecord | None:
        """Any call the daemon knows: live, ended recently (memory), or any other call in the
        journal's kept files (read in a worker thread through the index)."""
        found = self.find(call_id=call_id)
        if found is not None:
            return found
        return await self.journal.lookup(call_id)

    def get_record(self, call_id: str) -> CallRecord | None:
        """``lookup`` for synchronous callers (tests, tools): a call only the journal holds
        costs one positioned read of a (page-cached) line on the calling thread, which never
        waits for the journal's writer. The daemon's own paths use ``lookup``."""
        found = self.find(call_id=call_id)
        if found is not None:
            return found
        return self.journal.lookup_sync(call_id, wait=False)

    async def _known_call(self, provider_call_id: str | None) -> CallRecord | None:
        """The call a carrier's id belongs to, if this daemon ever journaled it."""
        if not provider_call_id:
            return None
        found = self.find(provider_call_id=provider_call_id)
        if found is not None:
            return found
        call_id = self.journal.index.call_for_provider(provider_call_id)
        return None if call_id is None else await self.lookup(call_id)

    def list_calls(self) -> list[CallRecord]:
        """Active calls, then the calls that ended since the daemon started."""
        active = [call.record for call in self.live.values()]
        ended = [r for cid, r in self.session.items() if cid not in self.live]
        return active + ended

    @property
    def active_count(self) -> int:
        return len(self.live)

    # -- subscribers --------------------------------------------------------------------
    def subscribe(self) -> trio.MemoryReceiveChannel[dict[str, Any]]:
        send, receive = trio.open_memory_channel[dict[str, Any]](1024)
        self._subscribers.add(send)
        return receive

    def unsubscribe(self, receive: trio.MemoryReceiveChannel[dict[str, Any]]) -> None:
        for send in list(self._subscribers):
            if send.statistics().open_receive_channels == 0:
                self._subscribers.discard(send)
        receive.close()

    def _publish(self, payload: dict[str, Any]) -> None:
        for send in list(self._subscribers):
            try:
                send.send_nowait(payload)
            except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                # a subscriber that cannot keep up is dropped rather than slowing calls down
                self._subscribers.discard(send)
                send.close()

    # -- state changes: the only writers of call records ----------------------------------
    def _store(self, call: LiveCall, record: CallRecord, event_type: str,
               extra: dict[str, Any] | None = None, *, persist: bool = True) -> None:
        line = _encode(record) if persist else None  # before anything changes
        before = call.record.state
        call.set(record)
        self.session[record.call_id] = record
        if record.provider_call_id:
            self._by_provider_id[record.provider_call_id] = record.call_id
        if line is not None:
            self.journal.append(record, line)
        payload: dict[str, Any] = {"callId": record.call_id, "type": event_type,
                                   "state": record.state.value}
        if extra:
            payload.update(extra)
        if record.state is not before:
            log.info("call %s: %s -> %s (%s)", record.call_id, before, record.state, event_type)
        self._publish(payload)

    def _apply(self, call: LiveCall, event: CallEvent) -> CallRecord:
        record = model.apply(call.record, event, self._now_ms())
        if record is not call.record:
            extra = {k: v for k, v in _event_fields(event).items()
                     if k not in ("id", "callId", "type", "timestamp")}
            # an interim transcript changes nothing worth a journal line (streaming STT sends
            # several a second); it is still published to subscribers
            interim = (isinstance(event, CallSpeech) and not event.is_final
                       and record.state is call.record.state)
            self._store(call, record, _event_type(event), extra, persist=not interim)
            if isinstance(event, CallSpeech) and event.is_final and event.text:
                self._maybe_reply(call)
        return call.record

    # -- agent replies ------------------------------------------------------------------------
    def set_responder(self, responder: Responder | None) -> None:
        self.responder = responder

    def _maybe_reply(self, call: LiveCall) -> None:
        """Answer the callee through the registered agent, unless a ``continue`` is waiting."""
        if (self.responder is None or call.continue_waiting or call.nursery is None
                or call.record.terminal
                or call.record.metadata.get("mode") != "conversation"):
            return
        if call.reply_scope is not None:
            call.reply_scope.cancel()  # the callee said more: answer everything at once
        call.reply_scope = trio.CancelScope()
        call.nursery.start_soon(self._reply, call, call.reply_scope, self.responder)

    async def _reply(self, call: LiveCall, scope: trio.CancelScope, responder: Responder
                     ) -> None:
        with scope:
            record = call.record
            remote = record.to if record.direction == "outbound" else record.from_
            history = [{"speaker": e.speaker, "text": e.text, "timestamp": e.timestamp}
                       for e in record.transcript]
            params = {"callId": record.call_id, "from": remote,
                      "transcript": history[-1]["text"] if history else "",
                      "history": history}
            started = trio.current_time()
            text: str | None = None
            with trio.move_on_after(self.config.response_timeout_ms / 1000) as timer:
                try:
                    text = await responder(params)
                except Exception as exc:  # the agent's failure must not end the call
                    log.warning("call %s: agent reply failed: %s", record.call_id, exc)
            if text is not None:
                text = clean_text(str(text))  # an agent's text is repaired, never stored raw
            if timer.cancelled_caught:
                log.warning("call %s: agent reply timed out after %d ms", record.call_id,
                            self.config.response_timeout_ms)
            latency_ms = round((trio.current_time() - started) * 1000)
            turns = [*list(call.record.metadata.get("turnLatencyMs", []))[-49:], latency_ms]
            call.set(model.with_metadata(call.record, turnLatencyMs=turns))
            try:
                await self._speak(call, text.strip() if text and text.strip() else FALLBACK_REPLY,
                                  listen=True)
            except VoiceCallError as exc:
                log.warning("call %s: reply not spoken: %s", record.call_id, exc)

    def _finish(self, call: LiveCall, reason: EndReason, *, by_carrier: bool) -> None:
        if call.record.terminal:
            return
        call.carrier_gone = call.carrier_gone or by_carrier
        record = model.end_record(call.record, reason, self._now_ms())
        try:
            self._store(call, record, "call.ended", {"reason": reason})
        except InvalidInput as exc:
            # text is checked or repaired on the way in, so this is a bug; but the end of a
            # call is always journaled: repaired, rather than lost
            log.error("call %s: %s; journaling a repaired copy", record.call_id, exc)
            self._store(call, _repaired(record), "call.ended", {"reason": reason})

    def _now_ms(self) -> int:
        return int(self.wall_clock() * 1000)

    # -- CallDirectory ------------------------------------------------------------------
    async def deliver(self, event: AnyEvent) -> CallRecord | None:
        event = clean_event(event)
        call = self._live_for(event)
        if call is None:
            return self.find(call_id=event.call_id, provider_call_id=event.provider_call_id)
        if event.provider_call_id and event.provider_call_id not in self._by_provider_id:
            self._by_provider_id[event.provider_call_id] = call.record.call_id
        if isinstance(event, CallEnded | CallError):
            call.carrier_gone = True
        return self._apply(call, event)

    def _live_for(self, event: CallEvent) -> LiveCall | None:
        if event.call_id and event.call_id in self.live:
            return self.live[event.call_id]
        if event.provider_call_id:
            cid = self._by_provider_id.get(event.provider_call_id)
            if cid is not None:
                return self.live.get(cid)
        return None

    async def offer_inbound(self, event: CallInitiated) -> InboundOutcome:
        event = clean_event(event)
        key = event.provider_call_id or event.id
        seen = self._offers.get(key)
        if seen is not None:
            record = seen.record
            if record is not None:  # as it is now (it may have ended since)
                record = self.find(call_id=record.call_id) or record
            return InboundOutcome(seen.decision, record, duplicate=True)
        setting_up = self._offering.get(key)
        if setting_up is not None:  # a duplicate delivery while the first is being set up
            await setting_up.wait()
            return await self.offer_inbound(event)
        self._offering[key] = trio.Event()
        try:
            return await self._offer(key, event)
        finally:
            self._offering.pop(key).set()

    async def _offer(self, key: str, event: CallInitiated) -> InboundOutcome:
        # A carrier id the journal knows (live or ended, this run or before a restart) is a
        # replay, whatever the policy says now: never a second call, nothing sent.
        known = await self._known_call(event.provider_call_id)
        if known is not None:
            log.info("inbound offer for known call %s (%s): duplicate", known.call_id,
                     known.state.value)
            return InboundOutcome(InboundDecision.ACCEPT, known, duplicate=True)
        reason = self._inbound_refusal(event.from_)
        if reason is not None:
            log.info("inbound call from %s refused: %s", _mask(event.from_), reason)
            outcome = InboundOutcome(InboundDecision.REJECT, None)
            self._remember_offer(key, outcome)
            self._publish({"callId": None, "type": "call.rejected", "from": event.from_,
                           "reason": reason})
            return outcome
        greeting = clean_text(self.config.inbound_greeting or DEFAULT_GREETING)
        record = model.new_record(
            call_id=self.ids(),
            at=self._now_ms(),
            provider=self.provider.name,
            direction="inbound",
            from_=event.from_,
            to=event.to or (self.config.from_number or ""),
            provider_call_id=event.provider_call_id,
            metadata={"mode": "conversation", "initialMessage": greeting},
        )
        record = model.apply(record, event, self._now_ms())
        call = await self._admit_durably(record)
        started = await self._launch(call, dial=False)
        outcome = InboundOutcome(InboundDecision.ACCEPT, started)
        self._remember_offer(key, outcome)  # only once the call really exists
        return outcome

    def _remember_offer(self, key: str, outcome: InboundOutcome) -> None:
        self._offers[key] = outcome
        while len(self._offers) > MAX_REMEMBERED_OFFERS:
            self._offers.popitem(last=False)

    def _inbound_refusal(self, caller: str) -> str | None:
        policy = self.config.inbound_policy
        if not self._accepting:
            return "the daemon is shutting down"
        if policy == "disabled":
            return "inboundPolicy is disabled"
        if policy in ("allowlist", "pairing") and (
            not E164.match(caller or "") or caller not in self.config.allow_from
        ):
            return "caller is not in allowFrom"
        if self.active_count >= self.config.max_concurrent_calls:
            return f"Maximum concurrent calls ({self.config.max_concurrent_calls}) reached"
        return None

    # -- commands -------------------------------------------------------------------------
    async def initiate(self, to: str | None, message: str, mode: str | None) -> CallRecord:
        target = to or self.config.to_number
        if not target:
            raise InvalidInput("No destination: pass `to` or set toNumber in the config")
        if not E164.match(target):
            raise InvalidInput(f"Invalid phone number {target!r}: must be E.164, like +15550001234")
        chosen = mode or self.config.outbound.default_mode
        if chosen not in ("notify", "conversation"):
            raise InvalidInput(f"Invalid mode {chosen!r}: must be notify or conversation")
        if not message.strip():
            raise InvalidInput("message must not be empty")
        _check_text(message)
        if not self._accepting:
            raise VoiceCallError("The daemon is shutting down")
        limit = self.config.max_concurrent_calls
        if self.active_count >= limit:
            raise ConcurrencyLimit(f"Maximum concurrent calls ({limit}) reached")
        record = model.new_record(
            call_id=self.ids(),
            at=self._now_ms(),
            provider=self.provider.name,
            direction="outbound",
            from_=self.config.from_number or "+15550000000",
            to=target,
            metadata={"mode": chosen, "initialMessage": message},
        )
        # the record is on disk before the carrier is asked to dial
        call = await self._admit_durably(record)
        return await self._launch(call, dial=True)

    async def _admit_durably(self, record: CallRecord) -> LiveCall:
        """Count the call (its slot) before anything awaits, then fsync its record."""
        line = _encode(record)  # a record that cannot be written is refused before it counts
        call = LiveCall(record)
        self.live[record.call_id] = call
        self.session[record.call_id] = record
        if record.provider_call_id:
            self._by_provider_id[record.provider_call_id] = record.call_id
        try:
            await self.journal.append_durable(record, line)
        except BaseException as exc:
            # never written (or unknown): the call does not exist; replay ends any stray line
            self.live.pop(record.call_id, None)
            self.session.pop(record.call_id, None)
            call.task_done.set()
            if isinstance(exc, JournalError):
                raise VoiceCallError(f"{exc}; the call was not placed") from None
            raise
        return call

    async def _launch(self, call: LiveCall, *, dial: bool) -> CallRecord:
        assert self._nursery is not None, "supervisor is not running"
        error: ProviderError | None = await self._nursery.start(self._call_task, call, dial)
        if error is not None:
            raise CarrierError(str(error))
        return call.record

    async def _live(self, call_id: str) -> LiveCall:
        call = self.live.get(call_id)
        if call is None:
            if await self.lookup(call_id) is not None:
                raise CallNotConnected("Call has ended")
            raise CallNotFound()
        return call

    async def speak(self, call_id: str, message: str, *, listen: bool | None = None) -> None:
        call = await self._live(call_id)
        if listen is None:
            listen = call.record.metadata.get("mode") == "conversation"
        await self._speak(call, message, listen=listen)

    async def _speak(self, call: LiveCall, text: str, *, listen: bool) -> None:
        if not text.strip():
            raise InvalidInput("message must not be empty")
        _check_text(text)
        if not call.record.state.connected:
            raise CallNotConnected(
                f"Call is not connected (state {call.record.state.value})"
            )
        self._apply(call, CallSpeaking(id=f"bot:{self.ids()}", text=text))
        try:
            await self.provider.speak(call.record, text, listen=listen)
        except ProviderError as exc:
            log.warning("call %s: speak failed: %s", call.record.call_id, exc)
            raise CarrierError(str(exc)) from None

    async def continue_call(self, call_id: str, message: str) -> str:
        call = await self._live(call_id)
        if call.continue_waiting:
            raise CallNotConnected("Another continue is already waiting on this call")
        call.continue_waiting = True
        try:
            start = len(call.record.transcript)
            await self._speak(call, message, listen=True)
            timeout_s = self.config.transcript_timeout_ms / 1000
            with trio.move_on_after(timeout_s):
                while True:
                    text = model.last_user_text_after(call.record, start)
                    if text is not None:
                        return text
                    if call.record.terminal:
                        raise CallNotConnected(
                            f"Call ended ({call.record.end_reason}) before the callee answered"
                        )
                    await call.wait_changed()
            raise TranscriptTimeout(
                f"No reply from the callee within {self.config.transcript_timeout_ms} ms"
            )
        finally:
            call.continue_waiting = False

    async def end(self, call_id: str) -> None:
        """Hang up a call; ending a call that has already ended is a success."""
        call = self.live.get(call_id)
        if call is None:
            if await self.lookup(call_id) is None:
                raise CallNotFound()
            return
        self._finish(call, "hangup-bot", by_carrier=False)
        with trio.move_on_after(CLEANUP_TIMEOUT_S):
            await call.task_done.wait()

    # -- the call task ----------------------------------------------------------------------
    async def _call_task(
        self,
        call: LiveCall,
        dial: bool,
        *,
        task_status: trio.TaskStatus[ProviderError | None],
    ) -> None:
        reported = False
        try:
            async with trio.open_nursery() as nursery:
                call.nursery = nursery
                if dial:
                    try:
                        provider_call_id = await self._dial(call)
                    except ProviderError as exc:
                        log.warning("call %s: dial failed: %s", call.record.call_id, exc)
                        record = model.with_metadata(call.record,
                                                     lastError=clean_text(str(exc)))
                        call.set(record)
                        self._finish(call, "failed", by_carrier=True)
                        task_status.started(exc)
                        reported = True
                        return
                    self._store(
                        call,
                        _with_provider_id(call.record, provider_call_id),
                        "call.dialled",
                        {"providerCallId": provider_call_id},
                    )
                task_status.started(None)
                reported = True
                nursery.start_soon(self._ring_timer, call)
                nursery.start_soon(self._max_duration_timer, call)
                if not self.provider.speaks_initial_message:
                    nursery.start_soon(self._initial_message, call)
                if call.record.metadata.get("mode") == "notify":
                    nursery.start_soon(self._notify_hangup, call)
                await call.ended.wait()
                call.nursery = None
                nursery.cancel_scope.cancel()
        except Exception:
            log.exception("call %s: task failed", call.record.call_id)
            self._finish(call, "error", by_carrier=False)
            if not reported:
                task_status.started(ProviderError("internal error while starting the call"))
        finally:
            with trio.CancelScope(shield=True):
                await self._cleanup(call)

    async def _dial(self, call: LiveCall) -> str:
        """Dial, shielded from the caller's cancellation: a dial cancelled half-way could
        leave a call up at the carrier that we hold no id for, so nobody would hang it up."""
        with trio.CancelScope(shield=True):
            with trio.move_on_after(DIAL_TIMEOUT_S):
                return await self.provider.dial(call.record)
        raise ProviderError(f"the carrier did not answer the dial request in {DIAL_TIMEOUT_S} s")

    async def _cleanup(self, call: LiveCall) -> None:
        # Each step is independent: a journal that cannot be written must not stop the
        # hang-up, and a failed hang-up must not keep the slot.
        try:
            if not call.record.terminal:
                self._finish(call, "hangup-bot", by_carrier=False)
        except Exception:
            log.exception("call %s: could not record the end", call.record.call_id)
        try:
            if not call.carrier_gone and call.record.provider_call_id:
                with trio.move_on_after(CLEANUP_TIMEOUT_S) as scope:
                    try:
                        await self.provider.hangup(call.record)
                    except ProviderError as exc:
                        log.warning("call %s: hangup failed: %s", call.record.call_id, exc)
                if scope.cancelled_caught:
                    log.warning("call %s: hangup timed out", call.record.call_id)
        except Exception:
            log.exception("call %s: hangup failed", call.record.call_id)
        finally:
            self.live.pop(call.record.call_id, None)
            self._forget_old_calls()
            call.task_done.set()

    def _forget_old_calls(self) -> None:
        """Keep at most MAX_ENDED_REMEMBERED ended calls in memory (oldest go first)."""
        ended = len(self.session) - len(self.live)
        if ended <= MAX_ENDED_REMEMBERED:
            return
        for call_id in list(self.session):
            if ended <= MAX_ENDED_REMEMBERED:
                break
            if call_id in self.live:
                continue
            record = self.session.pop(call_id)
            if record.provider_call_id:
                self._by_provider_id.pop(record.provider_call_id, None)
            ended -= 1

    async def _ring_timer(self, call: LiveCall) -> None:
        """Give up on a call nobody answered: a lost final webhook must not hold the slot."""
        record = call.record
        if record.answered_at is not None or record.terminal:
            return
        limit = self.config.ring_timeout_ms / 1000 + RING_GRACE_S
        elapsed = max(0.0, self.wall_clock() - record.started_at / 1000)
        with trio.move_on_after(max(0.0, limit - elapsed)):
            await call.wait_until(lambda r: r.answered_at is not None or r.terminal)
            return
        log.warning("call %s: not answered within ringTimeoutMs + %d s; giving up",
                    record.call_id, RING_GRACE_S)
        self._finish(call, "no-answer", by_carrier=False)

    async def _max_duration_timer(self, call: LiveCall) -> None:
        record = await call.wait_until(lambda r: r.answered_at is not None or r.terminal)
        if record.terminal or record.answered_at is None:
            return
        elapsed = max(0.0, self.wall_clock() - record.answered_at / 1000)
        remaining = max(0.0, self.config.max_duration_seconds - elapsed)
        await trio.sleep(remaining)
        log.info("call %s: maxDurationSeconds (%ss) reached", record.call_id,
                 self.config.max_duration_seconds)
        self._finish(call, "timeout", by_carrier=False)

    async def _initial_message(self, call: LiveCall) -> None:
        record = await call.wait_until(lambda r: r.state.connected or r.terminal)
        message = record.metadata.get("initialMessage")
        if record.terminal or not message or record.metadata.get("initialSpoken"):
            return
        call.set(model.with_metadata(call.record, initialSpoken=True))
        listen = record.metadata.get("mode") == "conversation"
        try:
            await self._speak(call, str(message), listen=listen)
        except VoiceCallError as exc:
            log.warning("call %s: initial message not spoken: %s", record.call_id, exc)

    async def _notify_hangup(self, call: LiveCall) -> None:
        """Hang up ``notifyHangupDelaySec`` after the initial message was spoken."""

        # the first utterance the carrier reports finished is the initial message (speech
        # from the callee meanwhile does not count: it must not cut the message short)
        record = await call.wait_until(lambda r: r.terminal or r.spoken >= 1)
        if record.terminal:
            return
        await trio.sleep(self.config.outbound.notify_hangup_delay_sec)
        self._finish(call, "hangup-bot", by_carrier=False)

    # -- restart reconciliation -------------------------------------------------------------
    async def _recover(self, records: list[CallRecord]) -> None:
        for record in records:
            await self._recover_one(record)

    async def _recover_one(self, record: CallRecord) -> None:
        """Settle or resume one call found live in the journal (policy: recovery.py)."""
        if record.provider_call_id:
            self._by_provider_id[record.provider_call_id] = record.call_id
        verdict = recovery.before_carrier(record, self.wall_clock(),
                                          self.config.max_duration_seconds)
        if verdict.action == "ask-carrier":
            try:
                remote: RemoteCallState | None = await self.provider.fetch_state(record)
            except ProviderError as exc:
                log.warning("call %s: cannot ask the carrier after restart: %s",
                            record.call_id, exc)
                remote = None
            verdict = recovery.after_carrier(remote)
        log.info("call %s: %s", record.call_id, verdict.why)
        call = LiveCall(record)
        if verdict.action == "end":
            if verdict.hang_up:
                await self._hangup_quietly(record)
            call.carrier_gone = True
            self._finish(call, verdict.reason or "error", by_carrier=True)
            return
        assert self._nursery is not None
        self.live[record.call_id] = call
        self.session[record.call_id] = record
        await self._nursery.start(self._call_task, call, False)

    async def _hangup_quietly(self, record: CallRecord) -> None:
        with trio.move_on_after(CLEANUP_TIMEOUT_S):
            try:
                await self.provider.hangup(record)
            except ProviderError as exc:
                log.warning("call %s: hangup failed: %s", record.call_id, exc)


def _with_provider_id(record: CallRecord, provider_call_id: str) -> CallRecord:
    return msgspec.structs.replace(record, provider_call_id=clean_text(provider_call_id))


def _encode(record: CallRecord) -> bytes:
    """The record's journal line, or ``InvalidInput`` if it cannot be written."""
    try:
        return encode_record(record)
    except (ValueError, TypeError, msgspec.EncodeError) as exc:
        raise InvalidInput(f"the call record cannot be journaled: {exc}") from None


def _repaired(record: CallRecord) -> CallRecord:
    """``record`` with every string in it repaired (``clean_text``)."""

    def fix(value: Any) -> Any:
        if isinstance(value, str):
            return clean_text(value)
        if isinstance(value, list | tuple):
            return [fix(item) for item in value]
        if isinstance(value, dict):
            return {fix(key): fix(item) for key, item in value.items()}
        return value

    return msgspec.convert(fix(msgspec.to_builtins(record)), CallRecord)


def valid_text(text: str) -> bool:
    """Encodable as UTF-8 (no lone surrogate: what a gateway sends when it cuts a UTF-16
    string inside an emoji)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def clean_text(text: str) -> str:
    """``text`` with surrogate pairs joined and lone surrogates replaced by U+FFFD."""
    if valid_text(text):
        return text
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _check_text(text: str) -> None:
    if not valid_text(text):
        raise InvalidInput("message is not valid Unicode text (it has a lone surrogate)")


E = TypeVar("E", bound=CallEvent)


def clean_event(event: E) -> E:
    """The event with every string repaired (carrier input is never stored raw)."""
    changes: dict[str, str] = {}
    for name in event.__struct_fields__:
        value = getattr(event, name)
        if isinstance(value, str) and not valid_text(value):
            changes[name] = clean_text(value)
    return msgspec.structs.replace(event, **changes) if changes else event


def _event_type(event: CallEvent) -> str:
    tag = type(event).__struct_config__.tag
    return str(tag)


def _event_fields(event: CallEvent) -> dict[str, Any]:
    out = msgspec.to_builtins(event)
    assert isinstance(out, dict)
    return out


def _mask(number: str) -> str:
    """Log phone numbers without their middle digits."""
    if len(number) <= 6:
        return number or "anonymous"
    return number[:3] + "*" * (len(number) - 6) + number[-3:]


__all__ = ["LiveCall", "Supervisor"]
