"""Built-in replies end to end: a daemon on the mock carrier, its replies from a local
FakeChatCompletions (issue #11's acceptance on mock). Real clock, short mock delays; every
wait is on a change of the call or of the fake, bounded by ``fail_after``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from voicecall_trio.agent.prompt import DEFAULT_SYSTEM_PROMPT
from voicecall_trio.call import LiveCall
from voicecall_trio.events import CallSpeech
from voicecall_trio.model import CallRecord
from voicecall_trio.replies import FALLBACK_REPLY
from voicecall_trio.testing import RunningDaemon, running_daemon
from voicecall_trio.testing.chat import FakeChatCompletions, Reply

FAST_MOCK = {"answerDelayMs": 10, "replyDelayMs": 10, "speakMsPerChar": 0}
LIMIT_S = 15  # bounds a hang; the waits themselves are on events


@asynccontextmanager
async def daemon_with(fake: FakeChatCompletions, script: list[str], **overrides: Any
                      ) -> AsyncIterator[RunningDaemon]:
    config = {"responseBaseUrl": fake.url, "mock": {**FAST_MOCK, "callerScript": script},
              **overrides}
    async with running_daemon(config) as daemon:
        yield daemon


async def place(daemon: RunningDaemon, message: str = "Hello, this is the bot.",
                mode: str = "conversation") -> LiveCall:
    placed = await daemon.rpc("voicecall.initiate", {"to": "+15555550123", "message": message,
                                                     "mode": mode})
    return daemon.handle.supervisor.live[placed["callId"]]


async def until(call: LiveCall, predicate: Any) -> CallRecord:
    with trio.fail_after(LIMIT_S):
        return await call.wait_until(predicate)


def bot_lines(record: CallRecord) -> list[str]:
    return [e.text for e in record.transcript if e.speaker == "bot"]


async def test_an_outbound_conversation_is_answered_by_the_server() -> None:
    replies = [Reply("Great, a table for two at eight."), Reply("See you then!")]
    async with FakeChatCompletions(replies, api_key="sk-test-ours") as fake, \
            daemon_with(fake, ["I'd like a table for two.", "At eight, please.", "Bye"],
                        responseApiKey="sk-test-ours", responseModel="openai/gpt-4o-mini",
                        responseSystemPrompt="You book tables for Trattoria Example.") as d:
        call = await place(d, "Hello from Trattoria Example.")
        final = await until(call, lambda r: r.terminal)
    assert bot_lines(final) == ["Hello from Trattoria Example.",
                                "Great, a table for two at eight.", "See you then!", "OK."]
    assert final.end_reason == "hangup-user"  # the callee's script ran out
    first, second = fake.requests[:2]
    assert first.authorization == "Bearer sk-test-ours"
    assert first.body["model"] == "gpt-4o-mini" and first.body["stream"] is True
    system = first.messages[0]
    assert system["role"] == "system"
    assert system["content"].startswith("You book tables for Trattoria Example.")
    assert "+15555550123" in system["content"]
    assert "Hello from Trattoria Example." in system["content"]  # the initial message
    assert first.messages[1:] == [
        {"role": "assistant", "content": "Hello from Trattoria Example."},
        {"role": "user", "content": "I'd like a table for two."}]
    assert second.messages[1:] == [
        {"role": "assistant", "content": "Hello from Trattoria Example."},
        {"role": "user", "content": "I'd like a table for two."},
        {"role": "assistant", "content": "Great, a table for two at eight."},
        {"role": "user", "content": "At eight, please."}]
    turns = final.metadata["turns"]
    assert len(turns) == 3
    assert {"callerStopped", "finalTranscript", "replyRequested", "firstToken",
            "firstSentence", "firstAudioOut", "heard"} <= set(turns[0])
    assert turns[0]["usage"]["total_tokens"] > 100


async def test_an_inbound_call_gets_the_default_prompt_and_a_keyless_local_server() -> None:
    async with FakeChatCompletions([Reply("Hi! How can I help?")]) as fake, \
            daemon_with(fake, ["Are you open today?"], inboundPolicy="open",
                        responseModel="openrouter/anthropic/claude-3.5-sonnet") as d:
        outcome = await d.rpc("voicecall.simulateInbound", {"from": "+15555550199"})
        call = d.handle.supervisor.live[outcome["callId"]]
        final = await until(call, lambda r: r.terminal)
    assert "Hi! How can I help?" in bot_lines(final)
    request = fake.requests[0]
    assert request.authorization is None  # a local server needs no key
    assert request.body["model"] == "anthropic/claude-3.5-sonnet"
    system = request.messages[0]["content"]
    assert system.startswith(DEFAULT_SYSTEM_PROMPT)
    assert "inbound call from +15555550199" in system
    assert request.messages[-1] == {"role": "user", "content": "Are you open today?"}


async def test_a_server_that_never_answers_gets_a_fallback_and_the_call_goes_on() -> None:
    async with FakeChatCompletions([Reply(hang=True), Reply("Now I can answer.")]) as fake, \
            daemon_with(fake, ["Hello?", "Are you there?", "Bye"],
                        responseTimeoutMs=400) as d:
        call = await place(d)
        record = await until(call, lambda r: "Now I can answer." in bot_lines(r))
        assert not record.terminal
        assert bot_lines(record)[1] == FALLBACK_REPLY
        with trio.fail_after(LIMIT_S):
            await fake.wait_for(lambda f: f.abandoned == 1)  # the stuck request was closed


async def test_a_server_error_gets_a_fallback_and_a_later_turn_a_real_reply() -> None:
    # 500 twice: the first try and its one retry
    script = [Reply.failing(500), Reply.failing(500), Reply("All good now.")]
    async with FakeChatCompletions(script) as fake, \
            daemon_with(fake, ["Hello?", "Are you there?", "Bye"]) as d:
        call = await place(d)
        record = await until(call, lambda r: "All good now." in bot_lines(r))
    assert bot_lines(record)[1:] == [FALLBACK_REPLY, "All good now."]
    assert len(fake.requests) == 3


async def test_end_call_hangs_up_after_the_goodbye_was_spoken() -> None:
    replies = [Reply("Goodbye, have a nice evening!", end_call="caller said goodbye")]
    async with FakeChatCompletions(replies) as fake, \
            daemon_with(fake, ["That's all, thanks, bye!", "never said"]) as d:
        call = await place(d)
        final = await until(call, lambda r: r.terminal)
    assert final.end_reason == "hangup-bot"
    assert bot_lines(final)[-1] == "Goodbye, have a nice evening!"
    assert final.spoken == 2  # the greeting and the goodbye were both played
    assert all(e.text != "never said" for e in final.transcript)
    assert len(fake.requests) == 1


async def test_a_registered_agent_takes_precedence_and_can_end_the_call() -> None:
    async with FakeChatCompletions() as fake, \
            daemon_with(fake, ["Can you hang up?", "never said"]) as d:
        from voicecall_trio.rpc.aclient import TrioClient

        async def respond(params: dict[str, Any]) -> dict[str, Any]:
            return {"text": "Sure, goodbye.", "endCall": True}

        async with trio.open_nursery() as nursery:
            agent = await TrioClient.connect(d.handle.socket_path, {"agent.respond": respond})
            nursery.start_soon(agent.run)
            assert await agent.call("agent.register") == {"registered": True}
            call = await place(d)
            final = await until(call, lambda r: r.terminal)
            await agent.aclose()
            nursery.cancel_scope.cancel()
    assert final.end_reason == "hangup-bot"
    assert bot_lines(final)[-1] == "Sure, goodbye."
    assert fake.requests == []  # the built-in client was not asked
    [turn] = final.metadata["turns"]
    assert {"replyRequested", "firstToken", "firstSentence", "firstAudioOut", "heard"} <= set(
        turn)


async def test_end_call_only_for_a_json_true() -> None:
    async with FakeChatCompletions() as fake, daemon_with(fake, ["Hang up?", "Bye"]) as d:
        from voicecall_trio.rpc.aclient import TrioClient

        async def respond(params: dict[str, Any]) -> dict[str, Any]:
            return {"text": "Not yet.", "endCall": "true"}

        async with trio.open_nursery() as nursery:
            agent = await TrioClient.connect(d.handle.socket_path, {"agent.respond": respond})
            nursery.start_soon(agent.run)
            await agent.call("agent.register")
            call = await place(d)
            final = await until(call, lambda r: r.terminal)
            await agent.aclose()
            nursery.cancel_scope.cancel()
    assert final.end_reason == "hangup-user"  # the callee's script ran out, not end_call
    assert bot_lines(final)[1:] == ["Not yet.", "Not yet."]


async def test_notify_calls_get_no_replies() -> None:
    async with FakeChatCompletions() as fake, daemon_with(fake, ["Thanks!"]) as d:
        call = await place(d, "Your order is ready.", mode="notify")
        final = await until(call, lambda r: r.terminal)
    assert bot_lines(final) == ["Your order is ready."] and fake.requests == []


async def test_without_a_key_openai_is_not_asked() -> None:
    async with running_daemon({"mock": {**FAST_MOCK, "callerScript": ["Hello?"]}}) as d:
        assert d.handle.supervisor.builtin is None
        call = await place(d)
        record = await until(call, lambda r: any(e.speaker == "user" for e in r.transcript))
        assert call.reply_scope is None  # nobody answers; the transcript is still recorded
    assert bot_lines(record) == ["Hello, this is the bot."]
    assert [e.text for e in record.transcript if e.speaker == "user"] == ["Hello?"]


async def test_a_newer_transcript_cancels_the_reply_in_flight() -> None:
    slow = Reply("This reply is too slow to matter.", first_token_s=0.3)
    async with FakeChatCompletions([slow, Reply("Answering both at once.")]) as fake, \
            daemon_with(fake, ["First words.", "Bye"]) as d:
        call = await place(d)
        with trio.fail_after(LIMIT_S):
            await fake.wait_for(lambda f: len(f.requests) == 1)
        # the caller says more while the first reply is still on its way
        await d.handle.supervisor.deliver(CallSpeech(
            id="test:more", provider_call_id=call.record.provider_call_id,
            text="And one more thing.", is_final=True))
        record = await until(call, lambda r: "Answering both at once." in bot_lines(r))
        with trio.fail_after(LIMIT_S):
            await fake.wait_for(lambda f: f.abandoned == 1)
    assert "This reply is too slow to matter." not in bot_lines(record)
    assert fake.requests[1].messages[-1] == {
        "role": "user", "content": "First words. And one more thing."}


async def test_a_refused_key_and_a_refused_connection_never_log_the_key(
        caplog: Any) -> None:
    import logging

    caplog.set_level(logging.DEBUG)
    key = "sk-test-SECRET-0123456789"
    async with FakeChatCompletions(api_key="sk-other") as fake, \
            daemon_with(fake, ["Hello?", "Bye"], responseApiKey=key) as d:
        call = await place(d)
        record = await until(call, lambda r: FALLBACK_REPLY in bot_lines(r))
        assert len(fake.requests) == 1  # a 401 is never retried
    assert not record.terminal
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    await listener.aclose()  # nothing listens there now
    async with running_daemon({"responseBaseUrl": f"http://u:{key}@127.0.0.1:{port}/v1",
                               "responseApiKey": key,
                               "mock": {**FAST_MOCK, "callerScript": ["Hi?", "Bye"]}}) as d:
        call = await place(d)
        await until(call, lambda r: FALLBACK_REPLY in bot_lines(r))
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "built-in reply failed" in logged
    assert key not in logged and "sk-test" not in logged
