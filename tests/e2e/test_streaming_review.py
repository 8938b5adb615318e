"""Review (R2): a whole daemon on the simulators, stopped or ended at awkward moments.

Same rig as ``test_streaming_e2e.py`` (real port and socket, FakeTwilio, FakeRealtimeSTT,
FakeTTS on loopback); every wait is on a condition under a bound.
"""

from __future__ import annotations

import logging

import pytest
import trio
from test_streaming_e2e import placed, streaming_rig, streams, until

from voicecall_trio.rpc.protocol import RpcError


def failures(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Log lines that are errors or carry a traceback (a clean stop has none)."""
    return [f"{r.name}: {r.getMessage()}" for r in caplog.records
            if r.levelno >= logging.ERROR or r.exc_info is not None]


async def test_a_stop_while_speech_waits_for_its_tts_closes_1001_and_answers_speak(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with streaming_rig([]) as rig:
        call_id, twilio = await placed(rig)
        (stream,) = streams(twilio)
        asked = len(rig.tts.requests)  # (the greeting's was made while the phone rang)
        rig.tts.first_byte_delay = 30.0  # the next one stalls before its first byte
        outcome: list[object] = []

        async def speak() -> None:
            try:
                await rig.rpc("voicecall.speak", {"callId": call_id, "message": "Still there?"})
                outcome.append("spoken")
            except (RpcError, OSError, trio.BrokenResourceError, trio.ClosedResourceError,
                    EOFError) as exc:
                outcome.append(exc)

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(speak)
                await rig.tts.wait_for_requests(asked + 1)
                rig.daemon.handle.stop()
                await until(rig.fake, lambda: stream.close_code is not None)
                assert stream.close_code == 1001
        assert outcome and outcome[0] != "spoken"
    assert failures(caplog) == []
