"""``FakeDirectory``: the supervisor as a carrier shell sees it (a ``CallDirectory``), in memory.

A carrier shell is tested by handing it webhooks and a directory, then looking at what it
delivered and what the records became. This is that directory: it keeps records in a dict,
applies each event with ``model.apply`` exactly as the supervisor does, and answers inbound
offers with a one-switch policy (accept every call, or none). It never journals, never
publishes and never talks to a carrier, so a test can check what a shell did without a daemon.

Like the supervisor it finds a call by ``callId`` first, then by the carrier's id; it answers a
repeated offer (the same carrier id, or one for a call it already holds) as a duplicate with the
first outcome; and it stamps every change with its own clock, never the carrier's. The clock and
the id source are injected for tests that want fixed times or ids.

Compose rather than copy: pass what differs (``provider``, ``accept``, ``metadata``, ``clock``,
``ids``), or subclass and override ``store`` to check every record the directory writes.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import trio

from ..events import AnyEvent, CallInitiated
from ..model import CallRecord, apply, new_record
from ..providers import InboundDecision, InboundOutcome

if TYPE_CHECKING:
    from ..providers import CallDirectory

__all__ = ["FakeDirectory"]


def _wall_ms() -> int:
    return int(time.time() * 1000)


def _uuid4() -> str:
    return str(uuid.uuid4())


class FakeDirectory:
    """An in-memory ``CallDirectory`` (see the module docstring).

    ``records``: every call by ``callId``; ``delivered``: every event ``deliver`` was handed, in
    order (found or not); ``offers``: every inbound offer, duplicates included.
    ``deliver_delay``: seconds each ``deliver`` takes on the trio clock (a slow supervisor).
    """

    def __init__(
        self,
        *records: CallRecord,
        provider: str = "fake",
        accept: bool = True,
        metadata: Mapping[str, Any] | None = None,
        clock: Callable[[], int] = _wall_ms,
        ids: Callable[[], str] = _uuid4,
        deliver_delay: float = 0.0,
    ) -> None:
        self.provider = provider  # the ``provider`` of the inbound records it creates
        self.accept = accept
        #: the ``metadata`` of each accepted inbound call (copied per call)
        self.metadata: dict[str, Any] = dict(
            {"mode": "conversation"} if metadata is None else metadata
        )
        self.clock = clock  # the daemon's clock in ms: ``at`` for new records and ``apply``
        self.ids = ids  # the ``callId`` of each inbound call
        self.deliver_delay = deliver_delay
        self.records: dict[str, CallRecord] = {}
        self.delivered: list[AnyEvent] = []
        self.offers: list[CallInitiated] = []
        self._outcomes: dict[str, InboundOutcome] = {}
        for record in records:
            self.add(record)

    def add(self, record: CallRecord) -> CallRecord:
        """A call the directory holds already (placed by the test); returns it."""
        self.records[record.call_id] = record
        return record

    def store(self, record: CallRecord) -> CallRecord:
        """Keep ``record`` as its call's latest; every write by ``deliver`` and ``offer_inbound``
        goes through here (override it to check each one)."""
        self.records[record.call_id] = record
        return record

    def find(
        self, *, call_id: str | None = None, provider_call_id: str | None = None
    ) -> CallRecord | None:
        if call_id is not None:
            return self.records.get(call_id)
        if not provider_call_id:
            return None
        return next((r for r in self.records.values()
                     if r.provider_call_id == provider_call_id), None)

    async def deliver(self, event: AnyEvent) -> CallRecord | None:
        """Apply ``event`` to the call it names; the record after it (None: no such call)."""
        if self.deliver_delay:
            await trio.sleep(self.deliver_delay)
        self.delivered.append(event)
        record = self.find(call_id=event.call_id) if event.call_id else None
        record = record or self.find(provider_call_id=event.provider_call_id)
        if record is None:
            return None
        return self.store(apply(record, event, self.clock()))

    async def offer_inbound(self, event: CallInitiated) -> InboundOutcome:
        """Accept (a new inbound record, the offer applied) or reject, once per carrier id."""
        self.offers.append(event)
        key = event.provider_call_id or event.id
        first = self._outcomes.get(key)
        if first is not None:
            record = first.record
            if record is not None:  # as it is now (it may have ended since)
                record = self.find(call_id=record.call_id) or record
            return InboundOutcome(first.decision, record, duplicate=True)
        known = self.find(provider_call_id=event.provider_call_id)
        if known is not None:
            return InboundOutcome(InboundDecision.ACCEPT, known, duplicate=True)
        if not self.accept:
            outcome = InboundOutcome(InboundDecision.REJECT, None)
        else:
            at = self.clock()
            record = new_record(provider=self.provider, direction="inbound", from_=event.from_,
                                to=event.to, provider_call_id=event.provider_call_id,
                                call_id=self.ids(), at=at,
                                metadata=dict(self.metadata))
            outcome = InboundOutcome(InboundDecision.ACCEPT, self.store(apply(record, event, at)))
        self._outcomes[key] = outcome
        return outcome

    def kinds(self) -> list[str]:
        """The class names of the delivered events, in order (``["CallAnswered", ...]``)."""
        return [type(event).__name__ for event in self.delivered]


if TYPE_CHECKING:
    _conforms: CallDirectory = FakeDirectory()  # mypy checks the whole protocol here
