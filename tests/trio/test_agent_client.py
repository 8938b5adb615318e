"""The Chat Completions client against FakeChatCompletions on loopback (real, short times)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
import trio

from voicecall_trio.agent.chat import TextDelta, ToolCallDelta
from voicecall_trio.agent.client import MAX_REPLY_CHARS, ChatClient
from voicecall_trio.errors import ChatError, ChatStreamError
from voicecall_trio.testing.chat import FakeChatCompletions, Reply

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]


@asynccontextmanager
async def served(*replies: Reply, api_key: str | None = "sk-test-key"
                 ) -> AsyncIterator[tuple[FakeChatCompletions, ChatClient]]:
    async with FakeChatCompletions(replies, api_key=api_key) as fake, \
            httpx.AsyncClient() as http:
        yield fake, ChatClient(http, base_url=fake.url, api_key=api_key, model="gpt-4o-mini")


def budget(seconds: float = 5.0) -> float:
    return trio.current_time() + seconds


async def test_a_streamed_reply_arrives_delta_by_delta_with_its_usage() -> None:
    async with served(Reply("Sure. A table for two is booked.")) as (fake, client):
        seen: list[str] = []
        reply = await client.complete(MESSAGES, deadline=budget(), on_event=lambda e: (
            seen.append(e.text) if isinstance(e, TextDelta) else None))
    assert reply.text == "Sure. A table for two is booked."
    assert seen == ["Sure.", " A", " table", " for", " two", " is", " booked."]
    assert reply.finish_reason == "stop" and not reply.end_call
    assert reply.usage == {"prompt_tokens": 100, "completion_tokens": 7, "total_tokens": 107}
    [request] = fake.requests
    assert request.authorization == "Bearer sk-test-key"
    assert request.body["model"] == "gpt-4o-mini" and request.body["stream"] is True
    assert request.body["stream_options"] == {"include_usage": True}
    assert request.body["tools"][0]["function"]["name"] == "end_call"
    assert request.messages == MESSAGES


async def test_end_call_with_its_goodbye() -> None:
    async with served(Reply("Goodbye!", end_call="caller said goodbye")) as (_, client):
        fragments: list[str] = []
        reply = await client.complete(MESSAGES, deadline=budget(), on_event=lambda e: (
            fragments.append(e.arguments) if isinstance(e, ToolCallDelta) else None))
    assert reply.text == "Goodbye!" and reply.end_call
    assert reply.end_reason == "caller said goodbye" and len(fragments) == 3


async def test_no_key_no_authorization_header() -> None:
    async with served(Reply("Hello."), api_key=None) as (fake, client):
        assert (await client.complete(MESSAGES, deadline=budget())).text == "Hello."
    assert fake.requests[0].authorization is None


@pytest.mark.parametrize(("first", "retried"), [
    (Reply.failing(500), True),
    (Reply.failing(503), True),
    (Reply.failing(429), True),
    (Reply.failing(429, "insufficient_quota"), False),
    (Reply.failing(401), False),
    (Reply.failing(400), False),
])
async def test_one_retry_for_transient_failures_only(first: Reply, retried: bool) -> None:
    async with served(first, Reply("Second try.")) as (fake, client):
        if retried:
            reply = await client.complete(MESSAGES, deadline=budget())
            assert (reply.text, reply.attempts) == ("Second try.", 2)
        else:
            with pytest.raises(ChatError) as caught:
                await client.complete(MESSAGES, deadline=budget())
            assert caught.value.status == first.status and not caught.value.retryable
    assert len(fake.requests) == (2 if retried else 1)


async def test_a_second_failure_is_not_retried_again() -> None:
    async with served(Reply.failing(500), Reply.failing(502), Reply("never")) as (fake, client):
        with pytest.raises(ChatError) as caught:
            await client.complete(MESSAGES, deadline=budget())
    assert caught.value.status == 502 and len(fake.requests) == 2


async def test_no_retry_when_the_budget_would_not_allow_it() -> None:
    slow = Reply.failing(500)
    slow.headers = {"retry-after-ms": "2000"}
    async with served(slow, Reply("late")) as (fake, client):
        with pytest.raises(ChatError):
            await client.complete(MESSAGES, deadline=budget(1.0))
    assert len(fake.requests) == 1


async def test_the_budget_bounds_the_whole_reply_and_closes_the_request() -> None:
    # each token is quick, the whole reply is not: the budget is not per read
    async with served(Reply("one two three four five six", token_s=0.1)) as (fake, client):
        started = trio.current_time()
        with pytest.raises(ChatError, match="within 300 ms"):
            await client.complete(MESSAGES, deadline=budget(0.3))
        assert trio.current_time() - started < 1.0
        with trio.fail_after(5):
            await fake.wait_for(lambda f: f.abandoned == 1)


async def test_a_server_that_never_answers_times_out() -> None:
    async with served(Reply(hang=True)) as (fake, client):
        with pytest.raises(ChatError, match="within 200 ms"):
            await client.complete(MESSAGES, deadline=budget(0.2))
        with trio.fail_after(5):
            await fake.wait_for(lambda f: f.abandoned == 1)


async def test_cancelling_a_reply_closes_its_http_request() -> None:
    async with served(Reply("a b c d e f g h", first_token_s=0.05, token_s=0.05)) as (
            fake, client):
        got_first = trio.Event()
        async with trio.open_nursery() as nursery:

            async def run() -> None:
                await client.complete(MESSAGES, deadline=budget(),
                                      on_event=lambda e: got_first.set())

            nursery.start_soon(run)
            await got_first.wait()
            nursery.cancel_scope.cancel()
        with trio.fail_after(5):
            await fake.wait_for(lambda f: f.abandoned == 1)
        assert fake.completed == 0


@pytest.mark.parametrize("broken", [Reply("one two three", cut_after=2),
                                    Reply("one two three", error_after=1)])
async def test_a_truncated_or_broken_stream_is_an_error(broken: Reply) -> None:
    async with served(broken) as (fake, client):
        with pytest.raises(ChatStreamError):
            await client.complete(MESSAGES, deadline=budget())
    assert len(fake.requests) == 1  # a stream that broke is not retried


async def test_a_refused_connection_is_an_error() -> None:
    async with httpx.AsyncClient() as http:
        listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
        port = listener.socket.getsockname()[1]
        await listener.aclose()  # nothing listens there now
        client = ChatClient(http, base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-x",
                            model="m")
        with pytest.raises(ChatError, match="cannot connect") as caught:
            await client.complete(MESSAGES, deadline=budget())
    assert "sk-x" not in str(caught.value) and caught.value.status is None


async def test_a_plain_json_answer_is_read_too() -> None:
    def plain(request: object) -> Reply:
        return Reply("Plain.", end_call="done")

    async with FakeChatCompletions(respond=plain) as fake, httpx.AsyncClient() as http:
        # a server that ignores stream: true and answers one JSON body
        fake.respond = plain
        client = ChatClient(http, base_url=fake.url, api_key=None, model="m")
        original = client._attempt

        async def unstreamed(body: dict[str, object], deadline: float, on_event: object
                             ) -> object:
            body = {**body, "stream": False}
            body.pop("stream_options")
            return await original(body, deadline, on_event)  # type: ignore[arg-type]

        client._attempt = unstreamed  # type: ignore[method-assign,assignment]
        reply = await client.complete(MESSAGES, deadline=budget())
    assert (reply.text, reply.end_call, reply.end_reason) == ("Plain.", True, "done")
    assert reply.usage is not None and reply.usage["total_tokens"] == 101 + 8


async def test_the_key_is_not_in_the_repr() -> None:
    async with httpx.AsyncClient() as http:
        client = ChatClient(http, base_url="https://api.openai.com/v1", api_key="sk-secret",
                            model="m")
        assert "sk-secret" not in repr(client)


async def test_an_oversized_event_is_refused() -> None:
    async with served(Reply("x" * 1_100_000)) as (_, client):  # one "token" over 1 MiB
        with pytest.raises(ChatStreamError, match="over 1048576 bytes"):
            await client.complete(MESSAGES, deadline=budget())


async def test_a_reply_over_the_cap_is_cut_and_its_stream_closed() -> None:
    endless = Reply(" ".join(["word"] * 2000))  # ~10,000 characters
    async with served(endless) as (fake, client):
        reply = await client.complete(MESSAGES, deadline=budget())
        assert len(reply.text) == MAX_REPLY_CHARS
        with trio.fail_after(5):
            await fake.wait_for(lambda f: f.abandoned + f.completed == 1)


class _HeldOpen(httpx.AsyncByteStream):
    """A whole reply, then the stream is held open: no ``[DONE]``, no end."""

    def __init__(self, events: list[bytes]) -> None:
        self.events = events
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for event in self.events:
            yield event
        await trio.sleep_forever()

    async def aclose(self) -> None:
        self.closed = True


async def test_a_finished_reply_whose_stream_is_held_open_is_still_the_reply(
        autojump_clock: object) -> None:
    import json

    def event(delta: dict[str, object], finish: str | None = None) -> bytes:
        chunk = {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return b"data: " + json.dumps(chunk).encode() + b"\n\n"

    body = _HeldOpen([event({"content": "All booked."}), event({}, "stop")])
    transport = httpx.MockTransport(lambda request: httpx.Response(
        200, headers={"content-type": "text/event-stream"}, stream=body))
    async with httpx.AsyncClient(transport=transport) as http:
        client = ChatClient(http, base_url="http://chat.test/v1", api_key=None, model="m")
        started = trio.current_time()
        reply = await client.complete(MESSAGES, deadline=budget(30.0))
    assert reply.text == "All booked." and reply.finish_reason == "stop"
    assert trio.current_time() - started <= 1.5  # the grace, not the 30 s budget
    assert body.closed


async def test_a_server_whose_model_takes_no_tools_is_asked_again_without_end_call(
        caplog: pytest.LogCaptureFixture) -> None:
    """Ollama answers 400 "... does not support tools" for many small local models: the
    reply is asked for again without the tool (and from then on), rather than every turn
    becoming a spoken fallback; the model then cannot end the call (one log line says so)."""
    import logging

    from voicecall_trio.testing.chat import ChatRequest

    def respond(request: ChatRequest) -> Reply:
        if "tools" in request.body:
            return Reply(status=400, error={
                "message": "registry.ollama.ai/library/gemma:2b does not support tools",
                "type": "api_error", "param": None, "code": None})
        return Reply("Hello there.")

    caplog.set_level(logging.WARNING)
    async with FakeChatCompletions(respond=respond) as fake, httpx.AsyncClient() as http:
        client = ChatClient(http, base_url=fake.url, api_key=None, model="gemma:2b")
        first = await client.complete(MESSAGES, deadline=budget())
        second = await client.complete(MESSAGES, deadline=budget())
    assert first.text == second.text == "Hello there."
    assert ["tools" in r.body for r in fake.requests] == [True, False, False]
    assert len([r for r in caplog.records if "end_call" in r.getMessage()]) == 1


async def test_another_400_is_not_retried() -> None:
    async with served(Reply(status=400, error={"message": "bad messages", "type":
                                               "invalid_request_error", "param": None,
                                               "code": None})) as (fake, client):
        with pytest.raises(ChatError) as caught:
            await client.complete(MESSAGES, deadline=budget())
    assert caught.value.status == 400 and len(fake.requests) == 1
