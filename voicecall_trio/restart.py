"""After a restart, each call the journal left live is settled or resumed: the I/O around
``recovery.py``'s pure verdicts.

For each such call: ask ``recovery.before_carrier`` (some are settled from the record alone),
ask the carrier for the others and take ``recovery.after_carrier``'s verdict, then either end
the call (hanging up first if the carrier may still have it) or hand it back to the supervisor
to run again with its timers. A restart never dials.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

from . import recovery
from .call import CLEANUP_TIMEOUT_S, LiveCall
from .errors import ProviderError
from .model import CallRecord
from .providers import RemoteCallState

if TYPE_CHECKING:
    from .supervisor import Supervisor

log = logging.getLogger("voicecall.calls")


async def recover(sup: Supervisor, record: CallRecord) -> None:
    """Settle or resume one call found live in the journal."""
    sup.calls.note_provider_id(record.provider_call_id, record.call_id)
    verdict = recovery.before_carrier(record, sup.clock(), sup.config.max_duration_seconds)
    if verdict.action == "ask-carrier":
        try:
            remote: RemoteCallState | None = await sup.provider.fetch_state(record)
        except ProviderError as exc:
            log.warning("call %s: cannot ask the carrier after restart: %s",
                        record.call_id, exc)
            remote = None
        verdict = recovery.after_carrier(remote)
    log.info("call %s: %s", record.call_id, verdict.why)
    call = LiveCall(record)
    if verdict.action == "end":
        if verdict.hang_up:
            await _hangup_quietly(sup, record)
        call.carrier_gone = True
        sup.finish(call, verdict.reason or "error", by_carrier=True)
        return
    await sup.resume(call)


async def _hangup_quietly(sup: Supervisor, record: CallRecord) -> None:
    with trio.move_on_after(CLEANUP_TIMEOUT_S):
        try:
            await sup.provider.hangup(record)
        except ProviderError as exc:
            log.warning("call %s: hangup failed: %s", record.call_id, exc)


__all__ = ["recover"]
