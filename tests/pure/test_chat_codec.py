"""The Chat Completions codec (pure) against the vectors made with the official SDK."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voicecall_trio.agent.chat import (
    END_CALL_TOOL,
    ChunkDecoder,
    Done,
    Finished,
    TextDelta,
    ToolCallDelta,
    ToolCalls,
    Usage,
    build_request,
    decode_response,
    error_from_response,
    is_openai,
    model_name,
)
from voicecall_trio.agent.sse import SseParser
from voicecall_trio.errors import ChatStreamError

VECTORS = Path(__file__).resolve().parents[3] / "shared" / "vectors"
CHAT = json.loads((VECTORS / "openai_chat_stream.json").read_text())


def decode(raw: str) -> list[object]:
    decoder = ChunkDecoder()
    return [e for sse in SseParser().feed(raw.encode()) for e in decoder.feed(sse.data)]


def test_the_request_is_the_vector_s() -> None:
    request = CHAT["request"]
    assert build_request("gpt-4o-mini", request["messages"]) == request
    assert build_request("m", [], stream=False, end_call=False) == {"model": "m",
                                                                    "messages": []}
    assert request["tools"][0] == END_CALL_TOOL


@pytest.mark.parametrize(("configured", "sent"), [
    ("openai/gpt-4o-mini", "gpt-4o-mini"),
    ("openrouter/anthropic/claude-3.5-sonnet", "anthropic/claude-3.5-sonnet"),
    ("llama3.1", "llama3.1"),
    ("ollama/", "ollama/"),
])
def test_the_model_sent_drops_the_provider_prefix(configured: str, sent: str) -> None:
    assert model_name(configured) == sent


def test_which_base_url_is_openai_s() -> None:
    assert is_openai("https://api.openai.com/v1") and is_openai("https://API.openai.com")
    assert not is_openai("http://127.0.0.1:11434/v1")
    assert not is_openai("https://openrouter.ai/api/v1")


def test_a_text_stream_joins_to_the_content_with_usage_last() -> None:
    events = decode(CHAT["text_stream"]["sse_raw"])
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert text == CHAT["text_response"]["body"]["choices"][0]["message"]["content"]
    assert [e for e in events if isinstance(e, Finished)] == [Finished("stop")]
    assert isinstance(events[-2], Usage) and events[-2].tokens == {
        "prompt_tokens": 118, "completion_tokens": 14, "total_tokens": 132}
    assert events[-1] == Done()


def test_tool_call_fragments_join_per_index() -> None:
    events = decode(CHAT["tool_call_stream"]["sse_raw"])
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Goodbye!"
    calls = ToolCalls()
    for event in events:
        if isinstance(event, ToolCallDelta):
            calls.add(event)
    [call] = calls.calls()
    assert call.name == "end_call" and call.arguments == {"reason": "caller said goodbye"}
    assert Finished("tool_calls") in events


def test_a_non_streamed_reply_gives_the_same_events() -> None:
    events = decode_response(json.dumps(CHAT["tool_call_response"]["body"]).encode())
    assert TextDelta("Goodbye!") in events and Finished("tool_calls") in events
    [tool] = [e for e in events if isinstance(e, ToolCallDelta)]
    assert tool.name == "end_call" and json.loads(tool.arguments) == {
        "reason": "caller said goodbye"}
    assert events[-1] == Done()


def test_an_error_event_midway_raises() -> None:
    stream = CHAT["stream_error_midway"]
    decoder = ChunkDecoder()
    sses = SseParser().feed(stream["sse_raw"].encode())
    for sse in sses[:-1]:
        decoder.feed(sse.data)
    with pytest.raises(ChatStreamError, match="server_error"):
        decoder.feed(sses[-1].data)


@pytest.mark.parametrize("data", ["not json", "[1, 2]", '"text"'])
def test_garbage_events_raise(data: str) -> None:
    with pytest.raises(ChatStreamError):
        ChunkDecoder().feed(data)


def test_odd_but_valid_chunks_are_tolerated() -> None:
    decoder = ChunkDecoder()
    assert decoder.feed('{"choices": null, "usage": null, "new_field": 1}') == []
    assert decoder.feed('{"choices": [{"index": 1, "delta": {"content": "other"}}]}') == []
    assert decoder.feed('{"choices": [{"delta": {"content": null}}, 7]}') == []
    assert decoder.feed('{"choices": [{"delta": {"tool_calls": [{"function": 5}]}}]}') == [
        ToolCallDelta(index=0)]
    assert decoder.feed('{"usage": {"total_tokens": true}}') == []


def test_tool_calls_are_bounded_and_bad_arguments_read_as_empty() -> None:
    calls = ToolCalls()
    for index in range(20):
        calls.add(ToolCallDelta(index=index, name="end_call", arguments="{"))
    assert len(calls.calls()) == 8 and calls.calls()[0].arguments == {}
    with pytest.raises(ChatStreamError):
        calls.add(ToolCallDelta(index=0, arguments="x" * 5000))


@pytest.mark.parametrize(("name", "retryable"), [
    ("invalid_api_key", False), ("rate_limit_exceeded", True),
    ("insufficient_quota", False), ("server_error", True)])
def test_errors_of_the_vectors(name: str, retryable: bool) -> None:
    [case] = [e for e in CHAT["errors"] if e["name"] == name]
    error = error_from_response(case["status"], json.dumps(case["body"]).encode())
    assert error.status == case["status"] and error.retryable is retryable
    assert error.code == case["body"]["error"]["code"]
    assert "sk-" not in error.message  # the 401 body quotes part of the key: never repeated


def test_an_error_body_that_is_not_json() -> None:
    error = error_from_response(502, b"<html>bad gateway</html>")
    assert error.retryable and error.code is None and "502" in error.message


def test_hostile_nesting_is_a_stream_error_not_a_crash() -> None:
    deep = "[" * 200_000 + "]" * 200_000
    with pytest.raises(ChatStreamError):
        ChunkDecoder().feed(deep)
    calls = ToolCalls()
    calls.add(ToolCallDelta(index=0, name="end_call", arguments="[" * 2000 + "]" * 2000))
    assert calls.calls()[0].arguments == {}
    assert error_from_response(500, deep.encode()).retryable


@given(st.text(max_size=300))
def test_any_event_text_decodes_or_is_a_stream_error(data: str) -> None:
    try:
        ChunkDecoder().feed(data)
    except ChatStreamError:
        pass


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.sampled_from(
                        ["choices", "delta", "content", "tool_calls", "index", "function",
                         "arguments", "name", "usage", "finish_reason", "error", "message"]),
                        inner, max_size=4), max_leaves=20))
def test_any_json_shape_decodes_or_is_a_stream_error(doc: object) -> None:
    try:
        ChunkDecoder().feed(json.dumps(doc))
    except ChatStreamError:
        pass


def test_urls_are_shown_without_credentials() -> None:
    from voicecall_trio.agent.chat import shown_url

    assert shown_url("https://user:sk-pw@llm.example:8443/v1?key=sk-q") == \
        "https://llm.example:8443/v1"
    assert shown_url("http://[::1") == "(unparsable URL)"


@pytest.mark.parametrize(("status", "body", "refused"), [
    (400, b'{"error": {"message": "llama3 does not support tools", "type": "api_error"}}',
     True),
    (400, b'{"error": "registry.ollama.ai/library/gemma:2b does not support tools"}', True),
    (400, b'{"error": {"message": "bad messages", "type": "invalid_request_error"}}', False),
    (500, b'{"error": {"message": "tools are broken", "type": "server_error"}}', False),
    (400, b"<html>Bad Request</html>", False),
])
def test_a_400_about_tools_is_told_apart(status: int, body: bytes, refused: bool) -> None:
    error = error_from_response(status, body)
    assert error.tools_refused is refused and error.status == status
