"""The media-stream hook of built-in replies (issue #11 items 2 and 3), before #10's voice
session lands: a supervisor whose ``speech_queues`` says yes gets each sentence as soon as it
is complete, in order, and an interruption closes the request and drops the rest."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import trio
from rigs import Rig, rig

from voicecall_trio.agent.builtin import make_builtin
from voicecall_trio.call import LiveCall
from voicecall_trio.config import build_config
from voicecall_trio.events import CallSpeech
from voicecall_trio.replies import FALLBACK_REPLY, interrupt
from voicecall_trio.testing.chat import FakeChatCompletions, Reply

LIMIT_S = 10


@asynccontextmanager
async def streamed(tmp_path: Path, *replies: Reply) -> AsyncIterator[
        tuple[Rig, FakeChatCompletions, list[tuple[str, int]]]]:
    """A rig on the real clock whose calls "stream"; ``said`` is (sentence, requests the fake
    had completed when it was handed over)."""
    said: list[tuple[str, int]] = []
    async with FakeChatCompletions(replies) as fake, httpx.AsyncClient() as http, \
            rig(tmp_path, mock={"speakMsPerChar": 0, "replyDelayMs": 60_000,
                                "answerDelayMs": 0}) as r:
        config = build_config({"responseBaseUrl": fake.url}, {})
        r.sup.builtin = make_builtin(config, http)
        original = r.sup.say

        async def say(call: LiveCall, text: str, *, listen: bool) -> None:
            said.append((text, fake.completed))
            await original(call, text, listen=listen)

        r.sup.say = say  # type: ignore[method-assign]
        r.sup.speech_queues = lambda call: True  # type: ignore[attr-defined]
        yield r, fake, said


async def caller_says(r: Rig, call: LiveCall, text: str, n: int) -> None:
    await r.sup.deliver(CallSpeech(id=f"test:{n}", provider_call_id=call.record.provider_call_id,
                                   text=text, is_final=True))


async def answered_call(r: Rig) -> LiveCall:
    """A call whose greeting was said, and the caller's first words (the mock callee is kept
    quiet by a long reply delay: the test speaks for it)."""
    record = await r.sup.initiate("+15555550123", "Hi.", "conversation")
    call = r.sup.live[record.call_id]
    with trio.fail_after(LIMIT_S):
        await call.wait_until(lambda rec: len(rec.transcript) >= 1)
    await caller_says(r, call, "Hello?", 0)
    return call


async def test_each_sentence_is_handed_to_speech_before_the_stream_ends(tmp_path: Path) -> None:
    reply = Reply("First sentence here. Then a second one. And a third.", token_s=0.03)
    async with streamed(tmp_path, reply) as (r, _, said):
        call = await answered_call(r)
        with trio.fail_after(LIMIT_S):
            await call.wait_until(lambda rec: sum(e.speaker == "bot" for e in rec.transcript)
                                  >= 4)
        assert said[1:] == [("First sentence here.", 0), ("Then a second one.", 0),
                            ("And a third.", 1)]
        turn = call.waterfall.current() if call.waterfall else None
        assert turn is not None and turn["firstToken"] <= turn["firstSentence"]
        assert "firstAudioOut" not in turn  # on a stream the voice session marks it


async def test_an_interruption_closes_the_request_and_drops_the_rest(tmp_path: Path) -> None:
    slow = Reply("One is said. Two never is. Three neither.", token_s=0.3)
    async with streamed(tmp_path, slow, Reply("Fresh answer.")) as (r, fake, said):
        call = await answered_call(r)
        with trio.fail_after(LIMIT_S):
            await call.wait_until(lambda rec: any(e.text == "One is said."
                                                  for e in rec.transcript))
        interrupt(r.sup, call)  # barge-in: the voice session calls this
        with trio.fail_after(LIMIT_S):
            await fake.wait_for(lambda f: f.abandoned == 1)
        await caller_says(r, call, "Wait, actually.", 1)
        with trio.fail_after(LIMIT_S):
            await call.wait_until(lambda rec: any(e.text == "Fresh answer."
                                                  for e in rec.transcript))
        texts = [text for text, _ in said]
    assert texts == ["Hi.", "One is said.", "Fresh answer."]
    # the next reply sees what was spoken of the interrupted one, and the caller's words
    assert fake.requests[1].messages[-2:] == [
        {"role": "assistant", "content": "One is said."},
        {"role": "user", "content": "Wait, actually."}]


async def test_a_broken_stream_after_a_spoken_sentence_gets_no_fallback(
        tmp_path: Path) -> None:
    broken = Reply("This much is said. The rest breaks.", error_after=5, token_s=0.01)
    async with streamed(tmp_path, broken) as (r, _, said):
        call = await answered_call(r)
        with trio.fail_after(LIMIT_S):  # the reply is over once its latency is noted
            await call.wait_until(lambda rec: bool(rec.metadata.get("turnLatencyMs")))
        texts = [text for text, _ in said]
    assert texts == ["Hi.", "This much is said."]
    assert FALLBACK_REPLY not in texts


async def test_a_failure_before_any_sentence_gets_the_fallback(tmp_path: Path) -> None:
    async with streamed(tmp_path, Reply.failing(401)) as (r, fake, _):
        call = await answered_call(r)
        with trio.fail_after(LIMIT_S):
            await call.wait_until(lambda rec: any(e.text == FALLBACK_REPLY
                                                  for e in rec.transcript))
    assert len(fake.requests) == 1  # a 401 is never retried

