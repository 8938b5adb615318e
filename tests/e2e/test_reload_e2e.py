"""SIGHUP on a real ``voicecall serve`` process (mock carrier): the file given with ``--config``
is re-read, a safe change applies, a restart-only change is logged by key path, a broken file
keeps the old config, and the process never dies of the signal."""

from __future__ import annotations

import json
import signal
import time

from conftest import POLL_INTERVAL_S, Daemon, MakeDaemon


def wait_stderr(d: Daemon, needle: str, count: int = 1, timeout: float = 15.0) -> str:
    """Poll (bounded) until ``needle`` appears ``count`` times in the daemon's stderr."""
    deadline = time.monotonic() + timeout
    while True:
        text = d.stderr_text()
        if text.count(needle) >= count:
            return text
        assert d.running(), f"daemon exited:\n{text}"
        assert time.monotonic() < deadline, f"no {needle!r} within {timeout}s:\n{text}"
        time.sleep(POLL_INTERVAL_S)


def test_sighup_reloads_the_config_file_of_a_running_daemon(make_daemon: MakeDaemon) -> None:
    d = make_daemon(maxConcurrentCalls=1, mock={"outcome": "answered"})
    first = d.rpc("voicecall.initiate", {"to": "+15555550123", "message": "One",
                                         "mode": "conversation"})
    with d.connect() as conn:
        refused = conn.request("voicecall.initiate", {"to": "+15555550123", "message": "Two"})
    assert refused["error"]["code"] == -32003

    changed = {**d.config, "maxConcurrentCalls": 2, "serve": {"port": 0, "path": "/moved"}}
    d.config_path.write_text(json.dumps(changed), encoding="utf-8")
    d.signal(signal.SIGHUP)
    text = wait_stderr(d, "reload: applied maxConcurrentCalls")
    assert "reload: serve.path changed; it needs a restart" in text
    second = d.rpc("voicecall.initiate", {"to": "+15555550123", "message": "Two",
                                          "mode": "conversation"})
    assert second["initiated"] is True
    status = d.rpc("voicecall.status", {"callId": first["callId"]})
    assert status["found"] and status["call"]["state"] not in ("hangup-bot", "error")

    d.config_path.write_text("{ this is not json", encoding="utf-8")
    d.signal(signal.SIGHUP)
    wait_stderr(d, "reload: keeping the old config")
    assert d.health()["ok"] is True
    with d.connect() as conn:  # the limit of 2 is still in force
        third = conn.request("voicecall.initiate", {"to": "+15555550123", "message": "Three"})
    assert third["error"]["code"] == -32003
    assert d.stop() == 0
