"""The built-in mock carrier: a simulated callee, no network.

It behaves like a small, polite phone network: an outbound call rings, then (by
``mock.outcome``) is answered after ``mock.answerDelayMs``, or ends busy / no-answer / failed.
Each thing the bot says takes ``len(text) * mock.speakMsPerChar`` to play; ``mock.replyDelayMs``
later the callee says the next line of ``mock.callerScript`` as a final transcript, and when
the script has run out, the callee hangs up. Inbound calls are simulated with
``simulate_inbound``, which goes through the daemon's inbound policy like a real one.

The simulated callees run in the provider's own nursery (started by the daemon), each
utterance's reply timer in a cancel scope so a newer utterance replaces an older one.
"""

from __future__ import annotations

import itertools
import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import trio
import trio.lowlevel

from ..config import VoiceCallConfig
from ..events import (
    AnyEvent,
    CallAnswered,
    CallEnded,
    CallInitiated,
    CallRinging,
    CallSpeech,
    CallSpoken,
)
from ..model import CallRecord
from . import (
    CallDirectory,
    InboundDecision,
    InboundOutcome,
    RemoteCallState,
    RemoteStatus,
    WebhookRequest,
    WebhookResponse,
    plain,
)

log = logging.getLogger("voicecall.mock")


@dataclass
class _Callee:
    provider_call_id: str
    call_id: str | None
    script: list[str]
    scopes: set[trio.CancelScope] = field(default_factory=set)  # its running tasks
    reply_scope: trio.CancelScope | None = None
    lines_said: int = 0
    gone: bool = False


class MockProvider:
    name = "mock"
    speaks_initial_message = False
    signature_headers: tuple[str, ...] = ()

    def __init__(self, config: VoiceCallConfig) -> None:
        self.config = config.mock
        self.from_number = config.from_number or "+15550000000"
        self._public_url = config.public_url
        self._callees: dict[str, _Callee] = {}
        self._nursery: trio.Nursery | None = None
        self._directory: CallDirectory | None = None
        self._counter = itertools.count(1)
        self.dialled: list[str] = []  # call ids the mock was asked to dial (tests, demo)
        self.hangups: list[str] = []

    def set_public_url(self, url: str | None) -> None:
        self._public_url = url

    @property
    def public_url(self) -> str | None:
        return self._public_url

    async def run(
        self, directory: CallDirectory, *, task_status: trio.TaskStatus[None]
    ) -> None:
        self._directory = directory
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    # -- Provider ---------------------------------------------------------------------------
    async def dial(self, record: CallRecord) -> str:
        provider_call_id = f"mock-{uuid.uuid4().hex[:16]}"
        callee = _Callee(provider_call_id, record.call_id, list(self.config.caller_script))
        self._callees[provider_call_id] = callee
        self.dialled.append(record.call_id)
        self._spawn(self._ring, callee)
        return provider_call_id

    async def hangup(self, record: CallRecord) -> None:
        if record.provider_call_id is None:
            return
        self.hangups.append(record.provider_call_id)
        callee = self._callees.pop(record.provider_call_id, None)
        if callee is not None:
            callee.gone = True
            for scope in list(callee.scopes):
                scope.cancel()

    async def speak(self, record: CallRecord, text: str, *, listen: bool) -> None:
        callee = self._callees.get(record.provider_call_id or "")
        if callee is None or callee.gone:
            return
        if callee.reply_scope is not None:
            callee.reply_scope.cancel()
        callee.reply_scope = trio.CancelScope()
        self._spawn(self._hear, callee, text, callee.reply_scope)

    async def fetch_state(self, record: CallRecord) -> RemoteCallState:
        callee = self._callees.get(record.provider_call_id or "")
        if callee is None or callee.gone:
            return RemoteCallState(RemoteStatus.UNKNOWN)
        return RemoteCallState(RemoteStatus.LIVE, answered=True)

    async def handle_webhook(
        self, request: WebhookRequest, directory: CallDirectory
    ) -> WebhookResponse:
        return plain(404, "the mock carrier sends no webhooks")

    # -- inbound simulation ---------------------------------------------------------------
    async def simulate_inbound(self, from_number: str, to: str | None = None) -> InboundOutcome:
        assert self._directory is not None, "mock provider is not running"
        provider_call_id = f"mock-in-{uuid.uuid4().hex[:16]}"
        offer = CallInitiated(
            id=f"mock:{provider_call_id}:initiated",
            provider_call_id=provider_call_id,
            direction="inbound",
            from_=from_number,
            to=to or self.from_number,
        )
        outcome = await self._directory.offer_inbound(offer)
        if outcome.decision is InboundDecision.ACCEPT and not outcome.duplicate:
            call_id = outcome.record.call_id if outcome.record else None
            callee = _Callee(provider_call_id, call_id, list(self.config.caller_script))
            self._callees[provider_call_id] = callee
            await self._emit(CallAnswered(id=f"mock:{provider_call_id}:answered",
                                          provider_call_id=provider_call_id))
        return outcome

    # -- the simulated callee ---------------------------------------------------------------
    def _spawn(self, fn: object, *args: object) -> None:
        assert self._nursery is not None, "mock provider is not running"
        self._nursery.start_soon(fn, *args)  # type: ignore[arg-type]

    async def _emit(self, event: AnyEvent) -> None:
        assert self._directory is not None
        await self._directory.deliver(event)

    async def _ring(self, callee: _Callee) -> None:
        pid = callee.provider_call_id
        with _owned_by(callee):
            await trio.lowlevel.checkpoint()
            await self._emit(CallRinging(id=f"mock:{pid}:ringing", provider_call_id=pid,
                                         call_id=callee.call_id))
            await trio.sleep(self.config.answer_delay_ms / 1000)
            outcome = self.config.outcome
            if outcome == "answered":
                await self._emit(CallAnswered(id=f"mock:{pid}:answered", provider_call_id=pid,
                                              call_id=callee.call_id))
                return
            self._callees.pop(pid, None)
            callee.gone = True
            await self._emit(CallEnded(id=f"mock:{pid}:ended", provider_call_id=pid,
                                       call_id=callee.call_id, reason=outcome))

    async def _hear(self, callee: _Callee, text: str, reply_scope: trio.CancelScope) -> None:
        pid = callee.provider_call_id
        with _owned_by(callee), reply_scope:
            await trio.sleep(len(text) * self.config.speak_ms_per_char / 1000)
            n = next(self._counter)
            await self._emit(CallSpoken(id=f"mock:{pid}:spoken:{n}", provider_call_id=pid))
            await trio.sleep(self.config.reply_delay_ms / 1000)
            if callee.lines_said >= len(callee.script):
                log.info("mock callee %s: script finished, hanging up", pid)
                self._callees.pop(pid, None)
                callee.gone = True
                await self._emit(CallEnded(id=f"mock:{pid}:hangup", provider_call_id=pid,
                                           reason="hangup-user"))
                return
            line = callee.script[callee.lines_said]
            callee.lines_said += 1
            await self._emit(CallSpeech(id=f"mock:{pid}:said:{callee.lines_said}",
                                        provider_call_id=pid, text=line, confidence=1.0))


@contextmanager
def _owned_by(callee: _Callee) -> Iterator[None]:
    """A cancel scope the callee's hang-up cancels, for one of its tasks."""
    with trio.CancelScope() as scope:
        callee.scopes.add(scope)
        try:
            if callee.gone:
                scope.cancel()
            yield
        finally:
            callee.scopes.discard(scope)
