"""A reload reaches the built-in replies: ``response*`` keys are listed as live (reload.py),
so the next reply after a SIGHUP must use the new model, prompt and key, and a reply key
added by a reload turns built-in replies on. In-process daemon on the mock carrier, the
reload driven directly (``Reloader.reload``, what SIGHUP runs)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import trio

from voicecall_trio.reload import ReloadPlan
from voicecall_trio.reloader import Reloader
from voicecall_trio.testing import running_daemon
from voicecall_trio.testing.chat import FakeChatCompletions, Reply

FAST_MOCK = {"answerDelayMs": 10, "replyDelayMs": 10, "speakMsPerChar": 0}
LIMIT_S = 15


async def one_reply(d: Any, fake: FakeChatCompletions) -> None:
    before = len(fake.requests)
    placed = await d.rpc("voicecall.initiate", {"to": "+15555550123", "message": "Hello.",
                                                "mode": "conversation"})
    call = d.handle.supervisor.live[placed["callId"]]
    with trio.fail_after(LIMIT_S):
        await fake.wait_for(lambda f: len(f.requests) > before)
        await call.wait_until(lambda r: r.terminal)


async def test_a_reloaded_model_prompt_and_key_reach_the_next_reply() -> None:
    store = Path(tempfile.mkdtemp(prefix="vc"))
    async with FakeChatCompletions(default=Reply("Sure.")) as fake:
        doc: dict[str, Any] = {"responseBaseUrl": fake.url, "responseModel": "openai/model-a",
                               "responseSystemPrompt": "Prompt A.",
                               "mock": {**FAST_MOCK, "callerScript": ["Hi"]}}
        async with running_daemon(doc, store=store) as d:
            await one_reply(d, fake)
            first = fake.requests[-1]
            assert first.body["model"] == "model-a"
            assert first.messages[0]["content"].startswith("Prompt A.")
            assert first.authorization is None

            path = store / "config.json"
            path.write_text(json.dumps({**doc, "store": str(store), "serve": {"port": 0},
                                        "responseModel": "openai/model-b",
                                        "responseSystemPrompt": "Prompt B.",
                                        "responseApiKey": "sk-reloaded-key-123"}))
            plan = await Reloader(d.handle, path, {}).reload()
            assert isinstance(plan, ReloadPlan)
            assert set(plan.applied) == {"responseModel", "responseSystemPrompt",
                                         "responseApiKey"}
            await one_reply(d, fake)
            second = fake.requests[-1]
    assert second.body["model"] == "model-b"
    assert second.messages[0]["content"].startswith("Prompt B.")
    assert second.authorization == "Bearer sk-reloaded-key-123"


async def test_a_reply_key_added_by_a_reload_turns_built_in_replies_on() -> None:
    store = Path(tempfile.mkdtemp(prefix="vc"))
    async with FakeChatCompletions(default=Reply("Sure.")) as fake:
        doc: dict[str, Any] = {"mock": {**FAST_MOCK, "callerScript": ["Hi"]}}
        async with running_daemon(doc, store=store) as d:
            assert d.handle.supervisor.builtin is None  # OpenAI's URL and no key
            path = store / "config.json"
            path.write_text(json.dumps({**doc, "store": str(store), "serve": {"port": 0},
                                        "responseBaseUrl": fake.url}))
            plan = await Reloader(d.handle, path, {}).reload()
            assert isinstance(plan, ReloadPlan) and plan.applied == ("responseBaseUrl",)
            await one_reply(d, fake)
    assert fake.requests
