"""Which calls exist and where to find them: live calls, recently ended ones, the journal.

Memory holds the live calls and the last ``MAX_ENDED_REMEMBERED`` ended ones; any other call
the journal's kept files know is read back through the journal's index (one positioned read
in a worker thread), so an ended call is always found, and a carrier's call id seen before
(this run or an earlier one) is never taken for a new call.

The registry only files records it is handed; it never changes one. The supervisor, the
only writer of call records, tells it about every record it stores (``note``).
"""

from __future__ import annotations

from collections import OrderedDict

from .call import LiveCall
from .journal import Journal
from .model import CallRecord

MAX_ENDED_REMEMBERED = 1000  # ended calls kept in memory for status (oldest forgotten first)


class CallRegistry:
    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.live: dict[str, LiveCall] = {}
        self.session: OrderedDict[str, CallRecord] = OrderedDict()  # known since start
        self._by_provider_id: dict[str, str] = {}

    def note(self, record: CallRecord) -> None:
        """``record`` is its call's latest (live or not)."""
        self.session[record.call_id] = record
        self.note_provider_id(record.provider_call_id, record.call_id)

    def note_provider_id(self, provider_call_id: str | None, call_id: str) -> None:
        if provider_call_id:
            self._by_provider_id[provider_call_id] = call_id

    def knows_provider_id(self, provider_call_id: str) -> bool:
        return provider_call_id in self._by_provider_id

    def add_live(self, call: LiveCall) -> None:
        self.live[call.record.call_id] = call
        self.note(call.record)

    def forget(self, call: LiveCall) -> None:
        """A call that never existed (its first record could not be written)."""
        self.live.pop(call.record.call_id, None)
        self.session.pop(call.record.call_id, None)

    def remove_live(self, call: LiveCall) -> None:
        """The call's task is over; it stays findable as an ended call."""
        self.live.pop(call.record.call_id, None)
        self._forget_old_calls()

    def find_live(self, call_id: str | None, provider_call_id: str | None) -> LiveCall | None:
        if call_id and call_id in self.live:
            return self.live[call_id]
        if provider_call_id:
            cid = self._by_provider_id.get(provider_call_id)
            if cid is not None:
                return self.live.get(cid)
        return None

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

    async def known_call(self, provider_call_id: str | None) -> CallRecord | None:
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


__all__ = ["MAX_ENDED_REMEMBERED", "CallRegistry"]
