"""The list form of ``voicecall.status`` always fits one reply line (pure)."""

from __future__ import annotations

import json

import msgspec

from voicecall_trio.model import CallState, TranscriptEntry, new_record
from voicecall_trio.rpc.methods import LIST_BUDGET_BYTES, _call_list
from voicecall_trio.rpc.protocol import MAX_LINE_BYTES, encode_result


def record(n: int, *, ended: bool, text_chars: int = 4000) -> object:
    base = new_record(provider="mock", direction="outbound", from_="+15550001234",
                      to="+15555550123", call_id=f"call-{n:04d}", at=n,
                      metadata={"mode": "conversation", "initialMessage": "m" * text_chars})
    turns = tuple(TranscriptEntry(n, "bot" if i % 2 else "user", "t" * text_chars)
                  for i in range(2))
    state = CallState.COMPLETED if ended else CallState.LISTENING
    return msgspec.structs.replace(base, state=state, transcript=turns)


def test_hundreds_of_long_calls_still_fit_one_line_newest_kept() -> None:
    records = [record(0, ended=False)] + [record(n, ended=True) for n in range(1, 400)]
    result = _call_list(records, active=1)
    line = encode_result(1, result)
    assert len(line) < MAX_LINE_BYTES  # before: ~4.8 MB, a line no client can read
    ids = [call["callId"] for call in result["calls"]]
    assert ids[0] == "call-0000"  # the active call is always there
    assert ids[-1] == "call-0399" and ids == sorted(ids)  # newest kept, order kept
    assert result["omitted"] == 400 - len(ids) > 0
    assert len(json.dumps(result)) <= LIST_BUDGET_BYTES + 64 * len(ids)


def test_a_short_list_is_whole_and_has_no_omitted_key() -> None:
    records = [record(n, ended=n > 0, text_chars=10) for n in range(5)]
    result = _call_list(records, active=1)
    assert [c["callId"] for c in result["calls"]] == [f"call-{n:04d}" for n in range(5)]
    assert "omitted" not in result
