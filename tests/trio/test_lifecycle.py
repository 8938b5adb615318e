"""The call lifecycle's seams (issue 9): one writer of records, dial before the call's task,
pure inbound/outbound policy, deterministic clocks and ids, one health report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from rigs import real_time_limit, rig

from voicecall_trio.call import LiveCall
from voicecall_trio.config import build_config
from voicecall_trio.errors import CarrierError, InvalidInput, ProviderError
from voicecall_trio.health import health_report
from voicecall_trio.model import CallRecord
from voicecall_trio.policy import inbound_refusal, mask, outbound_request
from voicecall_trio.providers.mock import MockProvider
from voicecall_trio.supervisor import Supervisor

WAIT_S = 20  # real seconds: a hang fails


class RefusingMock(MockProvider):
    async def dial(self, record: CallRecord) -> str:
        raise ProviderError("Twilio 21215: geo permission")


async def test_a_failed_dial_raises_plainly_and_starts_no_call_task(
    tmp_path: Path, autojump_clock: Any
) -> None:
    async with rig(tmp_path, mock_class=RefusingMock) as r:
        with pytest.raises(CarrierError, match="21215"):
            await r.sup.initiate("+15555550123", "Hello", "notify")
        assert not r.sup.live  # the slot is free again
        (record,) = r.sup.list_calls()
        assert record.state.value == "failed" and "21215" in record.metadata["lastError"]
        assert await r.journal_states(record.call_id) == ["initiated", "failed"]


async def test_every_change_to_a_live_record_goes_through_the_supervisors_store(
    tmp_path: Path, autojump_clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Turn latency, ``initialSpoken`` and ``lastError`` included: nothing but ``_store``
    replaces a live call's record."""
    inside = 0
    bypasses: list[CallRecord] = []  # records set outside Supervisor._store
    original_set = LiveCall.set

    def checked_set(self: LiveCall, record: CallRecord) -> None:
        if not inside:
            bypasses.append(record)
        original_set(self, record)

    def watch_store(sup: Supervisor) -> None:
        original_store = sup._store

        def store(*args: Any, **kwargs: Any) -> None:
            nonlocal inside
            inside += 1
            try:
                original_store(*args, **kwargs)
            finally:
                inside -= 1

        monkeypatch.setattr(sup, "_store", store)

    monkeypatch.setattr(LiveCall, "set", checked_set)
    async with (real_time_limit(WAIT_S),
                rig(tmp_path, mock={"callerScript": ["What time is it?"]}) as r):
        watch_store(r.sup)

        async def responder(params: dict[str, Any]) -> str:
            return "Nine o'clock."

        r.sup.set_responder(responder)
        record = await r.sup.initiate("+15555550123", "Hello", "conversation")
        final = await r.sup.live[record.call_id].wait_until(
            lambda rec: "turnLatencyMs" in rec.metadata and len(rec.transcript) >= 3)
        assert final.metadata["initialSpoken"] is True
        await r.sup.end(record.call_id)
    async with rig(tmp_path / "refused", mock_class=RefusingMock) as r:
        watch_store(r.sup)
        with pytest.raises(CarrierError):
            await r.sup.initiate("+15555550123", "Hello", "notify")
    assert bypasses == []


async def test_call_ids_and_times_come_from_the_injected_sources(
    tmp_path: Path, autojump_clock: Any
) -> None:
    async with rig(tmp_path, maxConcurrentCalls=2) as r:
        first = await r.sup.initiate("+15555550123", "Hello", "notify")
        second = await r.sup.initiate("+15555550124", "Hello", "notify")
        assert first.call_id.endswith("000000000001") and second.call_id.endswith("2")
        assert first.started_at == int(first.started_at)  # the rig's trio clock, in ms
        assert abs(first.started_at / 1000 - r.sup.clock()) < 5


CONFIG = {"allowFrom": ["+15550001111"], "maxConcurrentCalls": 2}
REFUSALS = [
    # policy, caller, accepting, active -> refusal (None: accepted)
    ("disabled", "+15550001111", True, 0, "inboundPolicy is disabled"),
    ("allowlist", "+15550001111", True, 0, None),
    ("allowlist", "+15550002222", True, 0, "caller is not in allowFrom"),
    ("allowlist", "", True, 0, "caller is not in allowFrom"),  # anonymous never matches
    ("pairing", "+15550001111", True, 0, None),
    ("open", "+15550002222", True, 0, None),
    ("open", "+15550002222", True, 2, "Maximum concurrent calls (2) reached"),
    ("open", "+15550002222", False, 0, "the daemon is shutting down"),
]


@pytest.mark.parametrize(("policy", "caller", "accepting", "active", "refusal"), REFUSALS)
def test_inbound_policy_is_a_table(policy: str, caller: str, accepting: bool, active: int,
                                   refusal: str | None) -> None:
    config = build_config({**CONFIG, "inboundPolicy": policy}, {})
    assert inbound_refusal(config, caller, accepting=accepting, active_calls=active) == refusal


def test_outbound_requests_are_checked_before_anything_is_written() -> None:
    config = build_config({"toNumber": "+15550009999"}, {})
    assert outbound_request(config, None, "Hi", None) == ("+15550009999", "notify")
    assert outbound_request(config, "+15550001111", "Hi", "conversation")[1] == "conversation"
    for to, message, mode in [("12345", "Hi", None), ("+15550001111", " ", None),
                              ("+15550001111", "Hi", "shout"),
                              ("+15550001111", "cut \ud83d", None)]:
        with pytest.raises(InvalidInput):
            outbound_request(config, to, message, mode)


def test_numbers_are_masked_in_logs() -> None:
    assert mask("+15550001234") == "+1******1234" and mask("") == "anonymous"


async def test_the_health_report_is_built_in_one_place(tmp_path: Path,
                                                       autojump_clock: Any) -> None:
    async with rig(tmp_path) as r:
        bare = health_report(r.sup, started=0.0, public_url=None)
        assert list(bare) == ["ok", "version", "uptimeS", "activeCalls", "provider",
                              "publicUrl"]
        full = health_report(r.sup, started=0.0, public_url="https://x", listen=["a:1"],
                             ready=True)
        assert list(full)[-2:] == ["listen", "ready"] and full["provider"] == "mock"
