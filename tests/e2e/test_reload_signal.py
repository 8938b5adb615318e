"""SIGHUP on an in-process daemon (real socket, real HTTP server, mock carrier): the config file
is re-read, safe keys apply to new calls, restart-only keys are logged and ignored, a bad file
keeps the old config, and a live call is left as it was. Signals are real (``os.kill``)."""

from __future__ import annotations

import json
import logging
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from voicecall_trio.config import ServeConfig, VoiceCallConfig, load_config
from voicecall_trio.daemon import DaemonHandle, run_daemon
from voicecall_trio.errors import ConcurrencyLimit
from voicecall_trio.reload import ReloadPlan

WAIT_S = 20  # real seconds: a hang fails
FROM = "+15550001234"
CALLEE = "+15555550123"


def write(path: Path, doc: dict[str, Any]) -> None:
    path.write_text(json.dumps(doc), encoding="utf-8")


def base(store: Path, **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "store": str(store), "serve": {"port": 0}, "fromNumber": FROM,
        "mock": {"answerDelayMs": 10, "replyDelayMs": 10, "speakMsPerChar": 0,
                 "callerScript": ["hello"]},
        "maxConcurrentCalls": 1, "shutdownGraceSeconds": 1,
    }
    doc.update(extra)
    return doc


@asynccontextmanager
async def daemon_with_file(tmp_path: Path, doc: dict[str, Any]) -> AsyncIterator[DaemonHandle]:
    path = tmp_path / "config.json"
    write(path, doc)
    config = load_config(path, {})
    async with trio.open_nursery() as nursery:
        handle: DaemonHandle = await nursery.start(
            lambda task_status: run_daemon(config, config_path=path, environ={},
                                           handle_signals=True, task_status=task_status))
        try:
            yield handle
        finally:
            handle.stop()


async def hup(handle: DaemonHandle) -> ReloadPlan | str:
    assert handle.reloader is not None
    count = len(handle.reloader.outcomes) + 1
    os.kill(os.getpid(), signal.SIGHUP)
    with trio.fail_after(WAIT_S):
        await handle.reloader.wait_reloads(count)
    return handle.reloader.outcomes[count - 1]


async def test_sighup_applies_limits_to_new_calls_and_leaves_the_live_call_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    store = tmp_path / "s"
    async with daemon_with_file(tmp_path, base(store)) as handle:
        sup = handle.supervisor
        first = await sup.initiate(CALLEE, "Hello there", "conversation")
        with pytest.raises(ConcurrencyLimit):
            await sup.initiate(CALLEE, "Second", "conversation")

        write(tmp_path / "config.json", base(store, maxConcurrentCalls=2, maxDurationSeconds=1,
                                             inboundGreeting="Welcome back"))
        outcome = await hup(handle)
        assert isinstance(outcome, ReloadPlan)
        assert outcome.applied == ("inboundGreeting", "maxConcurrentCalls",
                                   "maxDurationSeconds")
        assert sup.config is handle.config and sup.config.max_concurrent_calls == 2
        assert "reload: applied inboundGreeting, maxConcurrentCalls, maxDurationSeconds" in \
            caplog.text

        # a new call is admitted and gets the new one-second limit ...
        second = await sup.initiate(CALLEE, "Second", "conversation")
        with trio.fail_after(WAIT_S):
            await sup.live[second.call_id].task_done.wait()
        assert sup.get_record(second.call_id).state.value == "timeout"  # type: ignore[union-attr]
        # ... while the call that was live at the reload keeps the limit it started with
        assert first.call_id in sup.live
        assert not sup.live[first.call_id].record.terminal


async def test_restart_only_keys_are_logged_by_path_and_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = tmp_path / "s"
    async with daemon_with_file(tmp_path, base(store)) as handle:
        before = handle.config
        write(tmp_path / "config.json", base(store, serve={"port": 0, "path": "/elsewhere"},
                                             tts={"voice": "alloy"},
                                             streaming={"openaiApiKey": "sk-never-logged-1"}))
        outcome = await hup(handle)
        assert isinstance(outcome, ReloadPlan)
        assert outcome.applied == ("tts.voice",)
        assert set(outcome.needs_restart) == {"serve.path", "streaming.openaiApiKey"}
        assert handle.config.serve.path == before.serve.path == "/voice/webhook"
        assert handle.config.tts.voice == "alloy"
        assert "reload: serve.path changed; it needs a restart" in caplog.text
        assert "sk-never-logged-1" not in caplog.text  # key paths, never values


@pytest.mark.parametrize(("content", "why"), [
    ("{not json", "cannot parse config"),
    ('{"maxConcurrentCalls": 0}', "maxConcurrentCalls: must be at least 1"),
    ('{"bogusKey": 1}', "bogusKey: unknown key"),
])
async def test_a_bad_file_keeps_the_old_config_and_says_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: str, why: str
) -> None:
    async with daemon_with_file(tmp_path, base(tmp_path / "s")) as handle:
        before = handle.config
        (tmp_path / "config.json").write_text(content, encoding="utf-8")
        outcome = await hup(handle)
        assert isinstance(outcome, str) and why in outcome
        assert handle.config is before and handle.supervisor.config is before
        assert "reload: keeping the old config" in caplog.text and why in caplog.text
        # still serving: a call goes through as before
        record = await handle.supervisor.initiate(CALLEE, "Still here", "notify")
        assert record.call_id in handle.supervisor.live


async def test_a_deleted_file_keeps_the_old_config(tmp_path: Path) -> None:
    async with daemon_with_file(tmp_path, base(tmp_path / "s")) as handle:
        before = handle.config
        (tmp_path / "config.json").unlink()
        outcome = await hup(handle)
        assert isinstance(outcome, str) and "cannot read config file" in outcome
        assert handle.config is before


async def test_several_signals_are_coalesced_and_never_kill_the_daemon(tmp_path: Path) -> None:
    async with daemon_with_file(tmp_path, base(tmp_path / "s")) as handle:
        assert handle.reloader is not None
        for _ in range(5):
            os.kill(os.getpid(), signal.SIGHUP)
        with trio.fail_after(WAIT_S):
            await handle.reloader.wait_reloads(1)
        assert all(isinstance(o, ReloadPlan) and not o.changed
                   for o in handle.reloader.outcomes)
        assert not handle.stop_event.is_set()


async def test_a_daemon_started_without_a_file_says_there_is_nothing_to_reload(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = VoiceCallConfig(store=str(tmp_path / "s"), serve=ServeConfig(port=0))
    async with trio.open_nursery() as nursery:
        handle: DaemonHandle = await nursery.start(
            lambda task_status: run_daemon(config, environ={}, handle_signals=True,
                                           task_status=task_status))
        outcome = await hup(handle)
        assert isinstance(outcome, str) and "without a config file" in outcome
        assert handle.config is config and not handle.stop_event.is_set()
        handle.stop()
    assert "nothing to re-read" in caplog.text


async def test_a_reload_stuck_reading_a_fifo_does_not_hold_up_shutdown(tmp_path: Path) -> None:
    """The config path replaced by a FIFO nobody writes: ``open`` blocks in the reload's
    thread. Stopping the daemon must not wait for that thread (it is abandoned). A writer
    opens the FIFO after a few seconds either way, so an unfixed daemon fails, not hangs."""
    import threading
    import time

    import trio.testing

    store = tmp_path / "s"
    path = tmp_path / "config.json"
    with trio.fail_after(WAIT_S):
        async with daemon_with_file(tmp_path, base(store)) as handle:
            path.unlink()
            os.mkfifo(path)

            def unblock() -> None:
                time.sleep(4.0)
                with open(path, "w") as fifo:  # let a stuck reader finish
                    fifo.write("{}")

            threading.Thread(target=unblock, daemon=True).start()
            os.kill(os.getpid(), signal.SIGHUP)
            await trio.testing.wait_all_tasks_blocked(0.2)  # the reload waits on its thread
            assert handle.reloader is not None and handle.reloader.outcomes == []
            started = time.monotonic()
        stopped_in = time.monotonic() - started
    assert stopped_in < 3.0
