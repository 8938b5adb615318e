"""Each inbound offer is decided once: a carrier's retries and replays get the first answer.

Carriers redeliver the webhook that offers a new call (a slow answer, a lost reply, a replay);
the daemon must neither place a second call nor send a second rejection. ``OfferBook.once``
runs the decision for the first delivery of a key (the carrier's call id) and hands every
later one the same outcome, marked ``duplicate``; a delivery that arrives while the first is
still being set up waits for it. Outcomes are remembered up to ``MAX_REMEMBERED_OFFERS``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable

import trio

from .model import CallRecord
from .providers import InboundOutcome

MAX_REMEMBERED_OFFERS = 4096


class OfferBook:
    def __init__(self) -> None:
        self._outcomes: OrderedDict[str, InboundOutcome] = OrderedDict()
        self._deciding: dict[str, trio.Event] = {}  # offers being set up

    async def once(self, key: str, decide: Callable[[], Awaitable[InboundOutcome]],
                   current: Callable[[str], CallRecord | None]) -> InboundOutcome:
        """The outcome of the offer ``key``: ``decide()``'s for its first delivery, the same
        (with the call's ``current`` record) for the others."""
        seen = self._outcomes.get(key)
        if seen is not None:
            record = seen.record
            if record is not None:  # as it is now (it may have ended since)
                record = current(record.call_id) or record
            return InboundOutcome(seen.decision, record, duplicate=True)
        deciding = self._deciding.get(key)
        if deciding is not None:  # a duplicate delivery while the first is being set up
            await deciding.wait()
            return await self.once(key, decide, current)
        self._deciding[key] = trio.Event()
        try:
            return await decide()
        finally:
            self._deciding.pop(key).set()

    def remember(self, key: str, outcome: InboundOutcome) -> None:
        """Called by ``decide`` once the outcome is final (an accepted call really exists)."""
        self._outcomes[key] = outcome
        while len(self._outcomes) > MAX_REMEMBERED_OFFERS:
            self._outcomes.popitem(last=False)


__all__ = ["MAX_REMEMBERED_OFFERS", "OfferBook"]
