"""A supervisor wired to the mock carrier and a real journal, for tests on MockClock."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from voicecall_trio.calls import Supervisor
from voicecall_trio.config import build_config
from voicecall_trio.providers.mock import MockProvider
from voicecall_trio.store import Journal


class Rig:
    def __init__(self, sup: Supervisor, mock: MockProvider, path: Path) -> None:
        self.sup, self.mock, self.path = sup, mock, path

    async def journal_states(self, call_id: str) -> list[str]:
        if not self.sup.journal._closed:
            await self.sup.journal.flush()
        return [json.loads(line)["state"] for line in self.path.read_text().splitlines()
                if json.loads(line)["callId"] == call_id]

    async def ended(self, call_id: str) -> str:
        call = self.sup.live.get(call_id)
        if call is not None:
            await call.task_done.wait()
        record = self.sup.get_record(call_id)
        assert record is not None
        return record.state.value


@asynccontextmanager
async def rig(tmp_path: Path, replayed: Any = None, **overrides: Any) -> AsyncIterator[Rig]:
    doc: dict[str, Any] = {"store": str(tmp_path), "mock": {"speakMsPerChar": 10}}
    doc.update(overrides)
    config = build_config(doc, {})
    mock = MockProvider(config)
    journal = Journal(config.journal_path, fsync=False)
    sup = Supervisor(config, mock, journal, wall_clock=trio.current_time)
    journal.live_records = sup.live_records
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        await nursery.start(mock.run, sup)
        await nursery.start(sup.run, replayed)
        yield Rig(sup, mock, config.journal_path)
        await sup.shutdown(1)
        nursery.cancel_scope.cancel()
