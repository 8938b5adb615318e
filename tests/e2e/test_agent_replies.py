"""Gateway-delegated replies: agent.register, agent.respond, timeouts and fallbacks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio
from rigs import rig

from voicecall_trio.replies import FALLBACK_REPLY
from voicecall_trio.testing import running_daemon


async def test_a_registered_responder_answers_each_final_transcript(
    tmp_path: Path, autojump_clock: Any
) -> None:
    script = ["What time is it?", "Thanks!", "Bye"]
    async with rig(tmp_path, mock={"callerScript": script}) as r:
        asked: list[dict[str, Any]] = []

        async def responder(params: dict[str, Any]) -> str:
            asked.append(params)
            return f"You said: {params['transcript']}"

        r.sup.set_responder(responder)
        record = await r.sup.initiate("+15555550123", "Hello", "conversation")
        call = r.sup.live[record.call_id]
        final = await call.wait_until(lambda rec: len(rec.transcript) >= 4)
        assert [e.text for e in final.transcript[:4]] == [
            "Hello", "What time is it?", "You said: What time is it?", "Thanks!"]
        assert asked[0]["callId"] == record.call_id and asked[0]["from"] == "+15555550123"
        assert [h["speaker"] for h in asked[0]["history"]] == ["bot", "user"]
        assert final.metadata["turnLatencyMs"][0] == 0


async def test_a_slow_or_failing_agent_gets_a_spoken_fallback(
    tmp_path: Path, autojump_clock: Any
) -> None:
    async with rig(tmp_path, responseTimeoutMs=2000,
                   mock={"callerScript": ["Hello?", "Still there?", "Bye"]}) as r:
        calls = 0

        async def responder(params: dict[str, Any]) -> str:
            nonlocal calls
            calls += 1
            if calls == 1:
                await trio.sleep(60)  # a stuck agent (virtual time): the reply times out
            raise RuntimeError("agent crashed")

        r.sup.set_responder(responder)
        record = await r.sup.initiate("+15555550123", "Hi", "conversation")
        call = r.sup.live[record.call_id]
        final = await call.wait_until(
            lambda rec: sum(e.text == FALLBACK_REPLY for e in rec.transcript) >= 2)
        assert not final.terminal  # the call goes on
        assert final.metadata["turnLatencyMs"][0] == 2000


async def test_a_continue_waiter_takes_the_transcript_instead_of_the_agent(
    tmp_path: Path, autojump_clock: Any
) -> None:
    async with rig(tmp_path, mock={"callerScript": ["one", "two", "three"]}) as r:
        asked: list[str] = []

        async def responder(params: dict[str, Any]) -> str:
            asked.append(params["transcript"])
            return "agent words"

        record = await r.sup.initiate("+15555550123", "Hi", "conversation")
        call = r.sup.live[record.call_id]
        await call.wait_until(lambda rec: any(e.text == "one" for e in rec.transcript))
        r.sup.set_responder(responder)
        assert await r.sup.continue_call(record.call_id, "And then?") == "two"
        assert "two" not in asked


async def test_agent_register_over_the_socket() -> None:
    config = {"mock": {"answerDelayMs": 10, "replyDelayMs": 10, "speakMsPerChar": 0,
                       "callerScript": ["Is the shop open?", "Great", "Bye"]}}
    async with running_daemon(config) as daemon:
        from voicecall_trio.rpc.aclient import TrioClient

        seen: list[dict[str, Any]] = []

        async def respond(params: dict[str, Any]) -> dict[str, Any]:
            seen.append(params)
            return {"text": "Yes, until six."}

        async with trio.open_nursery() as nursery:
            agent = await TrioClient.connect(daemon.handle.socket_path,
                                             {"agent.respond": respond})
            nursery.start_soon(agent.run)
            assert await agent.call("agent.register") == {"registered": True}
            await daemon.rpc("voicecall.subscribe")
            placed = await daemon.rpc("voicecall.initiate",
                                      {"to": "+15555550123", "message": "Hello",
                                       "mode": "conversation"})
            with trio.fail_after(10):  # bounds a hang; the wait itself is on events
                async for note in daemon.client.notifications:
                    event = note.params
                    if (event["callId"] == placed["callId"]
                            and event["type"] == "call.speaking"
                            and event.get("text") == "Yes, until six."):
                        break
            assert seen[0]["transcript"] == "Is the shop open?"
            await agent.aclose()
            nursery.cancel_scope.cancel()


async def test_a_continue_cancels_the_reply_in_flight(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """The operator's ``continue`` takes the turn: a reply still being prepared for the
    callee's previous words is dropped, not spoken over (or after) the continue's message."""
    async with rig(tmp_path, mock={"callerScript": ["one", "two", "three"],
                                   "replyDelayMs": 1000}) as r:
        asked: list[str] = []

        async def responder(params: dict[str, Any]) -> str:
            asked.append(params["transcript"])
            await trio.sleep(0.3)  # virtual: it answers while the continue is under way
            return "agent words"

        r.sup.set_responder(responder)
        record = await r.sup.initiate("+15555550123", "Hi", "conversation")
        call = r.sup.live[record.call_id]
        await call.wait_until(lambda rec: any(e.text == "one" for e in rec.transcript))
        assert await r.sup.continue_call(record.call_id, "And then?") == "two"
        assert len(asked) <= 1  # asked, perhaps, but its answer is dropped
        bot = [e.text for e in call.record.transcript if e.speaker == "bot"]
        assert bot == ["Hi", "And then?"]
