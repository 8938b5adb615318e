"""The call supervisor: admits calls, runs them, and is the only writer of call records.

It admits calls (outbound ``initiate``, inbound offers decided by ``policy.py``), dials them,
runs each one as a task (``call.py``) in its nursery, applies carrier events (``deliver``, the
``CallDirectory`` protocol) with the pure ``model.apply``, and answers the commands
(``speak``, ``continue``, ``end``, ``status``). Every change to a record goes through
``_store``: journaled, then published on the event bus (``bus.py``).

A record is encoded for the journal *before* it replaces the one in memory (the same bytes are
then queued), so a record that cannot be written is refused (``InvalidInput``) and changes
nothing: memory and disk never disagree. Text from outside (carrier events, the agent's
replies) is repaired on the way in; text from a client is refused if it is not valid Unicode
(``text.py``).

Which calls exist is the registry's job (``registry.py``: memory, then the journal's index);
that each inbound offer is decided once is the offer book's (``offers.py``).

The wall clock (seconds) and the source of call ids are injected: tests pass deterministic
ones, the daemon passes ``time.time`` and ``uuid4``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec
import trio

from . import model, replies, restart
from .bus import EventBus
from .call import CLEANUP_TIMEOUT_S, LiveCall, cleanup, run_call
from .config import VoiceCallConfig
from .errors import (
    CallNotConnected,
    CallNotFound,
    CarrierError,
    ConcurrencyLimit,
    InvalidInput,
    JournalError,
    ProviderError,
    TranscriptTimeout,
    VoiceCallError,
    carrier_error,
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
from .journal import Journal
from .journal_lines import encode_record
from .model import CallRecord
from .offers import OfferBook
from .policy import inbound_metadata, inbound_refusal, mask, outbound_request
from .providers import (
    InboundDecision,
    InboundOutcome,
    Provider,
)
from .registry import CallRegistry
from .replay import ReplayResult
from .replies import Responder
from .text import check_text, clean_event, clean_text, repaired

if TYPE_CHECKING:
    from .agent.builtin import BuiltinResponder
    from .media.stream import MediaStream
    from .voice import VoiceSession

log = logging.getLogger("voicecall.calls")

DIAL_TIMEOUT_S = 30.0  # a dial is shielded from the caller's cancellation, up to this long


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
        self.clock = clock  # wall clock, seconds since the epoch
        self.ids = ids  # a new unique id (call ids, the bot's speech events)
        self.calls = CallRegistry(journal)
        self.live = self.calls.live  # call id -> LiveCall, while its task runs
        self.session = self.calls.session  # call id -> latest record, since start
        self.bus = EventBus()
        self._offers = OfferBook()
        self._nursery: trio.Nursery | None = None
        self._accepting = True
        self.responder: Responder | None = None  # a registered agent (agent.register)
        # streamed calls: the daemon sets this when streaming runs (voice.voice_factory)
        self.voice_factory: Callable[[Supervisor, LiveCall], VoiceSession | None] | None = None
        self.stream_sessions = _StreamSessions(self)
        self.builtin: BuiltinResponder | None = None  # built-in replies, when configured
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
                for record in replayed.live.values():
                    await restart.recover(self, record)
            task_status.started()
            await trio.sleep_forever()

    async def shutdown(self, grace_s: float) -> None:
        """Stop taking calls, end the live ones, wait up to ``grace_s``, then cancel."""
        self._accepting = False
        for call in list(self.live.values()):
            self.finish(call, "hangup-bot", by_carrier=False)
        with trio.move_on_after(grace_s):
            for call in list(self.live.values()):
                await call.task_done.wait()
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    def live_records(self) -> list[CallRecord]:
        return [call.record for call in self.live.values()]

    # -- lookups (CallDirectory.find, status) ---------------------------------------------
    def find(
        self, *, call_id: str | None = None, provider_call_id: str | None = None
    ) -> CallRecord | None:
        return self.calls.find(call_id=call_id, provider_call_id=provider_call_id)

    async def lookup(self, call_id: str) -> CallRecord | None:
        return await self.calls.lookup(call_id)

    def get_record(self, call_id: str) -> CallRecord | None:
        return self.calls.get_record(call_id)

    def list_calls(self) -> list[CallRecord]:
        return self.calls.list_calls()

    @property
    def active_count(self) -> int:
        return len(self.live)

    # -- subscribers --------------------------------------------------------------------
    def subscribe(self) -> trio.MemoryReceiveChannel[dict[str, Any]]:
        return self.bus.subscribe()

    def unsubscribe(self, receive: trio.MemoryReceiveChannel[dict[str, Any]]) -> None:
        self.bus.unsubscribe(receive)

    def set_responder(self, responder: Responder | None) -> None:
        self.responder = responder

    # -- state changes: the only writers of call records ----------------------------------
    def _store(self, call: LiveCall, record: CallRecord, event_type: str | None,
               extra: dict[str, Any] | None = None, *, persist: bool = True) -> None:
        """Replace the call's record: journaled (``persist``), then published as
        ``event_type`` (None: a note kept in memory until the next journaled change)."""
        line = _encode(record) if persist else None  # before anything changes
        before = call.record.state
        call.set(record)
        self.calls.note(record)
        if line is not None:
            self.journal.append(record, line)
        if event_type is None:
            return
        if record.state is not before:
            log.info("call %s: %s -> %s (%s)", record.call_id, before, record.state, event_type)
        self._publish(record, event_type, extra)

    def _publish(self, record: CallRecord, event_type: str,
                 extra: dict[str, Any] | None) -> None:
        payload: dict[str, Any] = {"callId": record.call_id, "type": event_type,
                                   "state": record.state.value}
        if extra:
            payload.update(extra)
        self.bus.publish(payload)

    def note(self, call: LiveCall, **metadata: Any) -> None:
        """Keep ``metadata`` on the live record (turn latency, ``initialSpoken``); journaled
        with the call's next change, which always follows (the speech, the end)."""
        self._store(call, model.with_metadata(call.record, **metadata), None, persist=False)

    def apply_now(self, call: LiveCall, event: CallEvent) -> None:
        """Apply an event of the call's own making (its voice session: speech played,
        transcripts, barge-in), as ``deliver`` does for a carrier's."""
        if call.record.terminal:
            return
        event = clean_event(event)
        if isinstance(event, CallSpeech) and not event.is_final:
            # an interim transcript (several a second) is news for subscribers only: it
            # changes nothing in the record, so nothing is journaled or remembered
            self._publish(call.record, "call.speech", _public_fields(event))
            return
        self._apply(call, event)

    def speech_queues(self, call: LiveCall) -> bool:
        """Whether ``say`` queues audio (a media stream), so a reply can be spoken sentence
        by sentence; elsewhere each ``say`` replaces what the carrier was doing."""
        return call.voice is not None

    def interrupt_reply(self, call: LiveCall) -> None:
        """The callee talked over the bot: the reply being prepared is cancelled."""
        replies.interrupt(self, call)

    def _apply(self, call: LiveCall, event: CallEvent) -> CallRecord:
        record = model.apply(call.record, event, self._now_ms())
        if record is not call.record:
            extra = _public_fields(event)
            # an interim transcript changes nothing worth a journal line (streaming STT sends
            # several a second); it is still published to subscribers
            interim = (isinstance(event, CallSpeech) and not event.is_final
                       and record.state is call.record.state)
            self._store(call, record, _event_type(event), extra, persist=not interim)
            if isinstance(event, CallSpeech) and event.is_final and event.text:
                replies.maybe_reply(self, call)
        return call.record

    def finish(self, call: LiveCall, reason: EndReason, *, by_carrier: bool) -> None:
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
            self._store(call, repaired(record), "call.ended", {"reason": reason})

    def release(self, call: LiveCall) -> None:
        """The call's task is over: free its slot (the end is already recorded)."""
        self.calls.remove_live(call)
        call.task_done.set()

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    # -- CallDirectory ------------------------------------------------------------------
    async def deliver(self, event: AnyEvent) -> CallRecord | None:
        event = clean_event(event)
        call = self.calls.find_live(event.call_id, event.provider_call_id)
        if call is None:
            return self.find(call_id=event.call_id, provider_call_id=event.provider_call_id)
        if event.provider_call_id and not self.calls.knows_provider_id(event.provider_call_id):
            self.calls.note_provider_id(event.provider_call_id, call.record.call_id)
        if isinstance(event, CallEnded | CallError):
            call.carrier_gone = True
        return self._apply(call, event)

    async def offer_inbound(self, event: CallInitiated) -> InboundOutcome:
        event = clean_event(event)
        key = event.provider_call_id or event.id
        return await self._offers.once(key, lambda: self._offer(key, event),
                                       lambda call_id: self.find(call_id=call_id))

    async def _offer(self, key: str, event: CallInitiated) -> InboundOutcome:
        # A carrier id the journal knows (live or ended, this run or before a restart) is a
        # replay, whatever the policy says now: never a second call, nothing sent.
        known = await self.calls.known_call(event.provider_call_id)
        if known is not None:
            log.info("inbound offer for known call %s (%s): duplicate", known.call_id,
                     known.state.value)
            return InboundOutcome(InboundDecision.ACCEPT, known, duplicate=True)
        reason = inbound_refusal(self.config, event.from_, accepting=self._accepting,
                                 active_calls=self.active_count)
        if reason is not None:
            log.info("inbound call from %s refused: %s", mask(event.from_), reason)
            outcome = InboundOutcome(InboundDecision.REJECT, None)
            self._offers.remember(key, outcome)
            self.bus.publish({"callId": None, "type": "call.rejected", "from": event.from_,
                              "reason": reason})
            return outcome
        metadata = inbound_metadata(self.config)
        metadata["initialMessage"] = clean_text(metadata["initialMessage"])
        record = model.new_record(
            call_id=self.ids(),
            at=self._now_ms(),
            provider=self.provider.name,
            direction="inbound",
            from_=event.from_,
            to=event.to or (self.config.from_number or ""),
            provider_call_id=event.provider_call_id,
            metadata=metadata,
        )
        record = model.apply(record, event, self._now_ms())
        call = await self._admit_durably(record)
        started = await self._launch(call, dial=False)
        outcome = InboundOutcome(InboundDecision.ACCEPT, started)
        self._offers.remember(key, outcome)  # only once the call really exists
        return outcome

    # -- commands -------------------------------------------------------------------------
    async def initiate(self, to: str | None, message: str, mode: str | None) -> CallRecord:
        target, chosen = outbound_request(self.config, to, message, mode)
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
        self.calls.add_live(call)
        try:
            await self.journal.append_durable(record, line)
        except BaseException as exc:
            # never written (or unknown): the call does not exist; replay ends any stray line
            self.calls.forget(call)
            call.task_done.set()
            if isinstance(exc, JournalError):
                raise VoiceCallError(f"{exc}; the call was not placed") from None
            raise
        return call

    async def _launch(self, call: LiveCall, *, dial: bool) -> CallRecord:
        """Dial (outbound), then start the call's task. A failed dial raises here, before any
        task exists; until the task runs, cleaning up after a failure is this method's job."""
        assert self._nursery is not None, "supervisor is not running"
        try:
            if dial:
                await self._dial(call)
            await self._nursery.start(run_call, self, call)
        except BaseException as exc:
            if call.task_done.is_set():  # the task ran and cleaned up itself
                raise
            failure = exc if isinstance(exc, CarrierError) else None
            if failure is None and isinstance(exc, Exception):
                log.exception("call %s: task failed", call.record.call_id)
                self.finish(call, "error", by_carrier=False)
                failure = CarrierError("internal error while starting the call")
            with trio.CancelScope(shield=True):
                await cleanup(self, call)
            if failure is not None:
                raise failure from None
            raise
        return call.record

    async def _dial(self, call: LiveCall) -> None:
        """Ask the carrier to dial and record its call id; a failed dial ends the call as
        ``failed`` (the carrier has no call to hang up) and raises ``CarrierError``."""
        try:
            provider_call_id = await self._dial_shielded(call.record)
        except ProviderError as exc:
            log.warning("call %s: dial failed: %s", call.record.call_id, exc)
            self.note(call, lastError=clean_text(str(exc)))
            self.finish(call, "failed", by_carrier=True)
            raise carrier_error(exc) from None
        record = msgspec.structs.replace(call.record,
                                         provider_call_id=clean_text(provider_call_id))
        self._store(call, record, "call.dialled", {"providerCallId": provider_call_id})

    async def _dial_shielded(self, record: CallRecord) -> str:
        """Dial, shielded from the caller's cancellation: a dial cancelled half-way could
        leave a call up at the carrier that we hold no id for, so nobody would hang it up."""
        with trio.CancelScope(shield=True):
            with trio.move_on_after(DIAL_TIMEOUT_S):
                return await self.provider.dial(record)
        raise ProviderError(f"the carrier did not answer the dial request in {DIAL_TIMEOUT_S} s")

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
        await self.say(call, message, listen=listen)

    async def say(self, call: LiveCall, text: str, *, listen: bool) -> None:
        """Have the carrier say ``text`` on a connected call (``call.speaking`` first)."""
        if not text.strip():
            raise InvalidInput("message must not be empty")
        check_text(text)
        if not call.record.state.connected:
            raise CallNotConnected(
                f"Call is not connected (state {call.record.state.value})"
            )
        if call.voice is not None:
            # over the stream: the line enters the transcript when its audio starts
            await call.voice.say(text)
            return
        self._apply(call, CallSpeaking(id=f"bot:{self.ids().replace('-', '')}", text=text))
        try:
            await self.provider.speak(call.record, text, listen=listen)
        except ProviderError as exc:
            log.warning("call %s: speak failed: %s", call.record.call_id, exc)
            raise carrier_error(exc) from None

    async def continue_call(self, call_id: str, message: str) -> str:
        call = await self._live(call_id)
        if call.continue_waiting:
            raise CallNotConnected("Another continue is already waiting on this call")
        call.continue_waiting = True
        # the operator takes this turn: a reply still being prepared for the callee's last
        # words (agent or built-in) is dropped, not spoken over or after the message
        replies.interrupt(self, call)
        try:
            start = len(call.record.transcript)
            await self.say(call, message, listen=True)
            timeout_s = self.config.transcript_timeout_ms / 1000
            if call.voice is not None:
                # over a stream, listening starts once the words were heard (the mark's
                # echo, call.spoken); bounded, should the stream never take the audio
                with trio.move_on_after(timeout_s):
                    await call.wait_until(lambda r: r.terminal or call.voice is None
                                          or call.voice.silent
                                          or model.last_user_text_after(r, start) is not None)
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
        self.finish(call, "hangup-bot", by_carrier=False)
        with trio.move_on_after(CLEANUP_TIMEOUT_S):
            await call.task_done.wait()

    async def resume(self, call: LiveCall) -> None:
        """Run a call found live in the journal after a restart (``restart.py``)."""
        assert self._nursery is not None
        self.calls.add_live(call)
        await self._nursery.start(run_call, self, call)


class _StreamSessions:
    """Which call a media stream belongs to (``media.stream.StreamSessions``)."""

    def __init__(self, sup: Supervisor) -> None:
        self._sup = sup

    def attach(self, call_id: str, stream: MediaStream) -> VoiceSession | None:
        """The call's voice session, if the call is live and streamed, and the carrier's id
        the stream names (Twilio's ``start.callSid``), when it names one, is the call's: a
        token taken from one call's TwiML must not carry another call's audio."""
        call = self._sup.live.get(call_id)
        if call is None or call.record.terminal or call.voice is None:
            return None
        carrier, own = stream.carrier_call_id, call.record.provider_call_id
        if carrier and own and carrier != own:
            return None
        return call.voice.attach(stream)


def _encode(record: CallRecord) -> bytes:
    """The record's journal line, or ``InvalidInput`` if it cannot be written."""
    try:
        return encode_record(record)
    except (ValueError, TypeError, msgspec.EncodeError) as exc:
        raise InvalidInput(f"the call record cannot be journaled: {exc}") from None


def _event_type(event: CallEvent) -> str:
    return str(type(event).__struct_config__.tag)


def _public_fields(event: CallEvent) -> dict[str, Any]:
    """What a ``voicecall.event`` notification tells of an event beyond its call and type."""
    out = msgspec.to_builtins(event)
    assert isinstance(out, dict)
    return {k: v for k, v in out.items() if k not in ("id", "callId", "type", "timestamp")}


__all__ = ["DIAL_TIMEOUT_S", "LiveCall", "Supervisor"]
