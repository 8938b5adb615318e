"""End to end: real ``voicecall`` processes against a real daemon on the mock carrier.

Every test drives ``voicecall serve`` (a subprocess, see conftest.py) through the CLI or the
raw Unix socket, and checks what a user or a gateway would see: exit codes, stdout JSON,
stderr messages, the journal on disk, the socket file.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import stat
import subprocess
import textwrap
import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import (
    CALLER_SCRIPT,
    PYTHON,
    START_TIMEOUT_S,
    TERMINAL_STATES,
    VOICECALL,
    Daemon,
    LineReader,
    MakeDaemon,
    RpcConnection,
    clean_env,
    daemon_factory,
    short_tmpdir,
)

TO = "+15555550123"


def place_call(daemon: Daemon, message: str, mode: str = "conversation", to: str = TO) -> str:
    result = daemon.run_json("call", "--to", to, "--message", message, "--mode", mode, "--json")
    assert result["initiated"] is True
    assert isinstance(result["callId"], str) and result["callId"]
    return result["callId"]  # type: ignore[no-any-return]


def is_event(call_id: str, kind: str, **fields: Any) -> Any:
    def match(event: dict[str, Any]) -> bool:
        return (event.get("callId") == call_id and event.get("type") == kind
                and all(event.get(k) == v for k, v in fields.items()))

    return match


def transcript(call: dict[str, Any], speaker: str) -> list[str]:
    return [e["text"] for e in call.get("transcript", []) if e["speaker"] == speaker]


# -- notify call ---------------------------------------------------------------------------


def test_notify_call_ends_by_itself_and_is_journaled(daemon: Daemon) -> None:
    message = "Your parcel arrives tomorrow between nine and noon."
    call_id = place_call(daemon, message, mode="notify")

    # nobody ends it: `watch --call-id` returns only once the call is over
    call = daemon.wait_call_ended(call_id)

    status = daemon.run_json("status", "--call-id", call_id, "--json")
    assert set(status) == {"found", "call"}
    assert status["found"] is True
    call = status["call"]
    assert call["callId"] == call_id
    assert call["state"] in TERMINAL_STATES
    assert call["state"] == "hangup-bot"  # notify: the bot hangs up after the message
    assert call["endReason"] == call["state"]
    assert call["endedAt"] >= call["startedAt"]
    assert call["to"] == TO and call["direction"] == "outbound"
    assert call["metadata"]["mode"] == "notify"
    assert message in transcript(call, "bot")

    records = daemon.records_of(call_id)
    assert len(records) >= 2
    assert records[0]["state"] == "initiated"
    assert "providerCallId" not in records[0]  # journaled before the carrier was asked to dial
    assert records[-1]["state"] in TERMINAL_STATES
    assert records[-1]["state"] == call["state"]
    assert message in transcript(records[-1], "bot")
    assert daemon.health()["activeCalls"] == 0


# -- conversation call -------------------------------------------------------------------


def test_conversation_continue_speak_end(daemon: Daemon) -> None:
    events = daemon.watcher()
    call_id = place_call(daemon, "Hi, this is your assistant calling about the meeting.")

    # the callee answers the opening line with the first line of mock.callerScript
    first = events.wait_for(is_event(call_id, "call.speech"))
    assert first["text"] == CALLER_SCRIPT[0]

    reply = daemon.run_json("continue", "--call-id", call_id,
                            "--message", "Does tomorrow at nine work?", "--json")
    assert reply == {"success": True, "transcript": CALLER_SCRIPT[1]}

    spoken = daemon.run_json("speak", "--call-id", call_id, "--message", "Noted.", "--json")
    assert spoken == {"success": True}
    events.wait_for(is_event(call_id, "call.speaking", text="Noted."))

    live = daemon.run_json("status", "--call-id", call_id, "--json")["call"]
    assert live["state"] not in TERMINAL_STATES
    assert daemon.health()["activeCalls"] == 1

    ended = daemon.run_json("end", "--call-id", call_id, "--json")
    assert ended == {"success": True}
    call = daemon.run_json("status", "--call-id", call_id, "--json")["call"]
    assert call["state"] == "hangup-bot"
    assert call["endReason"] == "hangup-bot"
    bot = transcript(call, "bot")
    assert bot[:3] == ["Hi, this is your assistant calling about the meeting.",
                       "Does tomorrow at nine work?", "Noted."]
    assert transcript(call, "user")[:2] == CALLER_SCRIPT[:2]
    assert daemon.health()["activeCalls"] == 0

    # ending an ended call is still a success, and changes nothing
    again = daemon.run("end", "--call-id", call_id, "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout) == {"success": True}
    assert daemon.run_json("status", "--call-id", call_id, "--json")["call"]["state"] == \
        "hangup-bot"
    assert daemon.records_of(call_id)[-1]["state"] == "hangup-bot"

    # and the ended call cannot be spoken to any more
    late = daemon.run("speak", "--call-id", call_id, "--message", "hello?")
    assert late.returncode == 1
    assert late.stderr.startswith("error:")


# -- bad input and errors ------------------------------------------------------------------


def test_call_to_non_e164_number_exits_1(quiet_daemon: Daemon) -> None:
    daemon = quiet_daemon
    done = daemon.run("call", "--to", "12345", "--message", "x")
    assert done.returncode == 1
    assert "E.164" in done.stderr
    assert "12345" in done.stderr
    assert "Traceback" not in done.stderr
    assert daemon.journal_lines() == []  # nothing was placed
    assert daemon.health()["activeCalls"] == 0


def test_continue_unknown_call_exits_1(quiet_daemon: Daemon) -> None:
    daemon = quiet_daemon
    done = daemon.run("continue", "--call-id", "nope", "--message", "x")
    assert done.returncode == 1
    assert "Call not found" in done.stderr
    assert done.stdout == ""
    for command in (["speak", "--call-id", "nope", "--message", "x"],
                    ["end", "--call-id", "nope"]):
        other = daemon.run(*command)
        assert other.returncode == 1, command
        assert "Call not found" in other.stderr


def test_daemon_not_running_exits_3_naming_socket(make_daemon: MakeDaemon) -> None:
    idle = make_daemon(start=False)
    assert not idle.socket.exists()
    for command in (["status"], ["call", "--to", TO, "--message", "x"],
                    ["continue", "--call-id", "c", "--message", "x"]):
        done = idle.run(*command)
        assert done.returncode == 3, (command, done.stderr)
        assert str(idle.socket) in done.stderr
        assert "voicecall serve" in done.stderr  # says how to start it
        assert "Traceback" not in done.stderr

    # an explicit --socket is the one named
    other = idle.workdir / "elsewhere.sock"
    done = idle.run("status", "--socket", str(other))
    assert done.returncode == 3
    assert str(other) in done.stderr

    # a stale socket file (nobody listening) is not a daemon either
    idle.store.mkdir(parents=True, exist_ok=True)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(idle.socket))
    stale.close()
    done = idle.run("status")
    assert done.returncode == 3
    assert str(idle.socket) in done.stderr


def test_usage_error_exits_2(quiet_daemon: Daemon) -> None:
    daemon = quiet_daemon
    done = daemon.run("call", "--to", TO)  # no --message
    assert done.returncode == 2
    assert "message" in (done.stdout + done.stderr).lower()
    assert daemon.journal_lines() == []
    bad_mode = daemon.run("call", "--to", TO, "--message", "x", "--mode", "shout")
    assert bad_mode.returncode == 2
    assert daemon.journal_lines() == []


def test_max_concurrent_calls(make_daemon: MakeDaemon) -> None:
    daemon = make_daemon(maxConcurrentCalls=1)
    first = place_call(daemon, "First call, stays open.")
    second = daemon.run("call", "--to", TO, "--message", "Second call", "--mode",
                        "conversation", "--json")
    assert second.returncode == 1
    assert "Maximum concurrent calls (1) reached" in second.stderr
    assert second.stdout == ""
    assert daemon.journal_call_ids() == {first}  # the refused call was never journaled
    assert daemon.health()["activeCalls"] == 1

    # the slot is released when the first call ends
    assert daemon.run_json("end", "--call-id", first, "--json") == {"success": True}
    assert daemon.health()["activeCalls"] == 0
    third = place_call(daemon, "Third call, fits again.")
    assert third != first
    daemon.run_json("end", "--call-id", third, "--json")


# -- raw socket ----------------------------------------------------------------------------


def test_raw_socket_parse_error_then_next_request_answered(quiet_daemon: Daemon) -> None:
    daemon = quiet_daemon
    with RpcConnection(daemon.socket) as conn:
        conn.send_line(b"this is not json {{{")
        reply = conn.read_reply()
        assert reply["jsonrpc"] == "2.0"
        assert reply["error"]["code"] == -32700
        assert reply["id"] is None

        # the same connection keeps working
        answer = conn.request("daemon.health", timeout=5)
        assert answer["id"] == 1
        assert answer["result"]["ok"] is True
        assert answer["result"]["activeCalls"] == 0
        assert answer["result"]["provider"] == "mock"


def test_raw_socket_unknown_method_and_bad_params(quiet_daemon: Daemon) -> None:
    daemon = quiet_daemon
    with RpcConnection(daemon.socket) as conn:
        unknown = conn.request("voicecall.fly", {})
        assert unknown["error"]["code"] == -32601
        assert unknown["id"] == 1

        missing = conn.request("voicecall.initiate", {"to": TO, "mode": "notify"})
        assert missing["error"]["code"] == -32602
        assert "message" in missing["error"]["message"]

        wrong_type = conn.request("voicecall.initiate", {"to": TO, "message": 42})
        assert wrong_type["error"]["code"] == -32602

        bad_number = conn.request("voicecall.initiate", {"to": "12345", "message": "x"})
        assert bad_number["error"]["code"] == -32006
        assert "E.164" in bad_number["error"]["message"]

        not_found = conn.request("voicecall.continue", {"callId": "nope", "message": "x"})
        assert not_found["error"] == {"code": -32001, "message": "Call not found"}

        status = conn.request("voicecall.status", {"callId": "nope"})
        assert status["result"] == {"found": False}

        assert conn.call("daemon.health")["ok"] is True
    assert daemon.journal_lines() == []  # none of those placed a call


def test_raw_socket_line_over_1mib(quiet_daemon: Daemon) -> None:
    daemon = quiet_daemon
    with RpcConnection(daemon.socket, timeout=20) as conn:
        # just over the limit (the newline arrives with the overflow), then far over it
        # (the daemon gives up on the line before its end arrives)
        for size in (1024 * 1024 + 100, 3 * 1024 * 1024):
            huge = {"jsonrpc": "2.0", "id": 7, "method": "voicecall.initiate",
                    "params": {"to": TO, "message": "x" * size}}
            conn.send(huge)
            reply = conn.read_message(timeout=15)
            assert reply["error"]["code"] in (-32600, -32700), reply
            assert "result" not in reply
        # one error per oversized line, and the connection still works
        conn.send({"jsonrpc": "2.0", "id": "after", "method": "daemon.health"})
        answer = conn.read_message(timeout=5)
        assert answer["id"] == "after"
        assert answer["result"]["ok"] is True
    assert daemon.journal_lines() == []  # the oversized requests did not place a call


def test_socket_file_mode_is_0600(quiet_daemon: Daemon) -> None:
    daemon = quiet_daemon
    mode = os.stat(daemon.socket).st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o600
    assert stat.S_IMODE(os.stat(daemon.socket.parent).st_mode) == 0o700


# -- shutdown and crash recovery -----------------------------------------------------------


def test_sigterm_during_live_call(make_daemon: MakeDaemon) -> None:
    grace = 1.0
    daemon = make_daemon(shutdownGraceSeconds=grace)
    events = daemon.watcher()
    calls = [place_call(daemon, f"Live call number {n}.") for n in (1, 2)]
    for call_id in calls:
        events.wait_for(is_event(call_id, "call.speech"))  # answered and talking
    assert daemon.health()["activeCalls"] == 2

    started = time.monotonic()
    daemon.signal(signal.SIGTERM)
    try:
        status = daemon.proc.wait(timeout=grace + 2)  # type: ignore[union-attr]
    except subprocess.TimeoutExpired:
        pytest.fail(f"daemon still running {grace + 2}s after SIGTERM:\n{daemon.stderr_text()}")
    elapsed = time.monotonic() - started
    assert elapsed <= grace + 2
    assert status == 0, daemon.stderr_text()

    for call_id in daemon.journal_call_ids():
        assert daemon.records_of(call_id)[-1]["state"] in TERMINAL_STATES, call_id
    for call_id in calls:
        assert daemon.records_of(call_id)[-1]["state"] == "hangup-bot"
    assert not daemon.socket.exists()
    assert not daemon.socket.is_symlink()
    assert "Traceback" not in daemon.stderr_text()

    # the CLI now says the daemon is down
    assert daemon.run("status").returncode == 3


def test_kill9_torn_journal_restart(daemon: Daemon) -> None:
    events = daemon.watcher()
    old = place_call(daemon, "This call will be interrupted.")
    events.wait_for(is_event(old, "call.speech"))
    records = daemon.wait_journal(
        lambda rs: any(r["callId"] == old and r.get("providerCallId") for r in rs))
    provider_call_id = next(r["providerCallId"] for r in records if r.get("providerCallId"))

    daemon.kill9()
    events.close()
    assert daemon.records_of(old)[-1]["state"] not in TERMINAL_STATES  # died mid-call
    # an interrupted write: the first half of a record, no newline
    last = daemon.journal.read_bytes().rstrip(b"\n").rsplit(b"\n", 1)[-1]
    torn = last[: len(last) // 2]
    with open(daemon.journal, "ab") as journal:
        journal.write(torn)
    lines_before = len(daemon.journal_lines())

    daemon.start()  # the stale socket and the torn line must not stop it
    health = daemon.health()
    assert health["ok"] is True
    assert health["activeCalls"] == 0  # reconciled: nothing resumed, nothing placed
    err = daemon.stderr_text().lower()
    assert "torn" in err or "unreadable" in err, err

    # no new call was placed: the only call in the journal is the old one
    assert daemon.journal_call_ids() == {old}
    final = daemon.records_of(old)[-1]
    assert final["state"] in TERMINAL_STATES
    assert final["providerCallId"] == provider_call_id
    assert len(daemon.journal_lines()) > lines_before  # the terminal record was appended

    status = daemon.run_json("status", "--call-id", old, "--json")
    assert status["found"] is True
    assert status["call"]["callId"] == old
    assert status["call"]["state"] in TERMINAL_STATES
    assert status["call"]["state"] == final["state"]
    assert daemon.run_json("end", "--call-id", old, "--json") == {"success": True}

    # the restarted daemon works, and the torn line swallowed no record after it
    fresh = place_call(daemon, "After the restart.", mode="notify")
    daemon.wait_call_ended(fresh)
    unreadable = []
    for line in daemon.journal_lines():
        try:
            json.loads(line)
        except ValueError:
            unreadable.append(line)
    assert unreadable == [torn]
    assert daemon.records_of(fresh)[-1]["state"] in TERMINAL_STATES


def test_restart_ends_undialled_and_overdue_calls_without_dialling(
        make_daemon: MakeDaemon) -> None:
    daemon = make_daemon(start=False, maxDurationSeconds=60)
    now = int(time.time() * 1000)
    base = {"provider": "mock", "direction": "outbound", "from": "+15550000000", "to": TO,
            "transcript": [], "metadata": {"mode": "conversation", "initialMessage": "hello"}}
    undialled = {**base, "callId": "c-undialled", "state": "initiated", "startedAt": now - 500}
    overdue = {**base, "callId": "c-overdue", "state": "listening", "startedAt": now - 600_000,
               "answeredAt": now - 599_000, "providerCallId": "mock-overdue"}
    ended = {**base, "callId": "c-ended", "state": "completed", "startedAt": now - 900_000,
             "endedAt": now - 899_000, "endReason": "completed",
             "providerCallId": "mock-ended"}
    daemon.store.mkdir(parents=True)
    daemon.journal.write_text("".join(json.dumps(r) + "\n" for r in (
        {**ended, "state": "answered", "endedAt": None, "endReason": None}, ended,
        undialled, overdue)))

    daemon.start()
    assert daemon.health()["activeCalls"] == 0
    assert daemon.journal_call_ids() == {"c-undialled", "c-overdue", "c-ended"}  # none placed
    expect = {"c-undialled": "error", "c-overdue": "timeout", "c-ended": "completed"}
    for call_id, state in expect.items():
        status = daemon.run_json("status", "--call-id", call_id, "--json")
        assert status["found"] is True, call_id
        assert status["call"]["state"] == state, status
        assert daemon.records_of(call_id)[-1]["state"] == state
    # the undialled call never got a carrier id: it was not dialled at restart
    assert "providerCallId" not in daemon.records_of("c-undialled")[-1]
    assert len(daemon.records_of("c-ended")) == 2  # already over: nothing appended


def _second_serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([VOICECALL, "serve", *args], capture_output=True, text=True,
                          timeout=20, env=clean_env(), stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def clash() -> Iterator[tuple[Daemon, Daemon, dict[str, subprocess.CompletedProcess[str]]]]:
    """A running daemon; a daemon config whose HTTP port is taken; and what `voicecall serve`
    said when started on the running one's store, on its socket, and on the taken port."""
    with short_tmpdir() as workdir, daemon_factory(workdir) as factory:
        first = factory(name="first")
        other = factory(start=False, name="other", store=workdir / "other")
        with socket.socket() as held:  # a TCP port somebody else is listening on
            held.bind(("127.0.0.1", 0))
            held.listen()
            port_taken = factory(start=False, name="port", store=workdir / "port",
                                 serve={"port": held.getsockname()[1]})
            results = {
                "store": _second_serve("--config", str(first.config_path)),
                "socket": _second_serve("--config", str(other.config_path),
                                        "--socket", str(first.socket)),
                "port": _second_serve("--config", str(port_taken.config_path)),
            }
        yield first, port_taken, results


def _still_serving(daemon: Daemon) -> None:
    assert daemon.running()
    assert daemon.socket.exists()
    assert daemon.health()["ok"] is True
    call_id = place_call(daemon, "Still here.", mode="notify")
    daemon.wait_call_ended(call_id)


def test_second_serve_same_store_refused(clash: Any) -> None:
    first, _, results = clash
    done = results["store"]
    assert done.returncode == 1
    assert "already" in done.stderr
    assert str(first.store) in done.stderr
    _still_serving(first)


def test_second_serve_same_socket_refused(clash: Any) -> None:
    first, _, results = clash
    done = results["socket"]
    assert done.returncode == 1
    assert "already" in done.stderr
    assert str(first.socket) in done.stderr
    _still_serving(first)


def test_serve_port_in_use_exits_1_and_cleans_up(clash: Any) -> None:
    first, port_taken, results = clash
    assert results["port"].returncode == 1
    assert not port_taken.socket.exists()  # the control socket was unlinked again
    with open(port_taken.store / ".lock", "a+b") as lock:  # and the store lock released
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    _still_serving(first)


@pytest.mark.parametrize("kind", ["store", "socket", "port"])
def test_start_refusal_message_is_clean(clash: Any, kind: str) -> None:
    _, _, results = clash
    done = results[kind]
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    error_lines = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == 1, done.stderr
    if kind == "port":
        assert "serve.port" in error_lines[0]


# -- watch and tail ------------------------------------------------------------------------


def test_watch_prints_events_and_exits_when_call_ends(daemon: Daemon) -> None:
    events = daemon.watcher()
    call_id = place_call(daemon, "Let us watch this call.")
    events.wait_for(is_event(call_id, "call.speech"))

    watch = daemon.popen("watch", "--call-id", call_id, "--json")
    reader = LineReader(watch.stdout)
    # watch announces on stderr once it is subscribed; from then on no event is missed
    announced = LineReader(watch.stderr).wait_for(lambda line: "watching" in line,
                                                  timeout=START_TIMEOUT_S)
    assert announced is not None and call_id in announced
    daemon.run_json("speak", "--call-id", call_id, "--message", "Ping.", "--json")
    seen = reader.wait_for(lambda line: "Ping." in line, timeout=START_TIMEOUT_S)
    assert seen is not None, (reader.seen, watch.poll())
    event = json.loads(seen)
    assert event["callId"] == call_id and event["type"] == "call.speaking"
    assert watch.poll() is None  # still watching: the call is live

    daemon.run_json("end", "--call-id", call_id, "--json")
    assert watch.wait(timeout=10) == 0
    lines = reader.drain()
    printed = [json.loads(line) for line in lines]
    assert all(e["callId"] == call_id for e in printed)
    assert printed[-1]["state"] == "hangup-bot"
    assert printed[-1]["type"] == "call.ended"

    # a call that has already ended: watch prints it and exits at once
    done = daemon.run("watch", "--call-id", call_id, "--json", timeout=10)
    assert done.returncode == 0
    assert json.loads(done.stdout.strip().splitlines()[-1])["state"] == "hangup-bot"
    # an unknown call: exit 1
    missing = daemon.run("watch", "--call-id", "nope", timeout=10)
    assert missing.returncode == 1
    assert "not found" in missing.stderr.lower()


def test_tail_reads_the_journal_while_the_daemon_is_down(daemon: Daemon) -> None:
    call_id = place_call(daemon, "A call for the record.", mode="notify")
    daemon.wait_call_ended(call_id)
    journal = daemon.journal_lines()
    daemon.signal(signal.SIGINT)  # Ctrl-C stops it as cleanly as SIGTERM
    assert daemon.proc.wait(timeout=daemon.config["shutdownGraceSeconds"] + 2) == 0  # type: ignore[union-attr]
    assert not daemon.socket.exists()
    assert "Traceback" not in daemon.stderr_text()

    done = daemon.run("tail", "--json", "--lines", "100")
    assert done.returncode == 0, done.stderr
    printed = done.stdout.strip().splitlines()
    assert [line.encode() for line in printed] == journal
    records = [json.loads(line) for line in printed]
    assert records[0]["callId"] == call_id and records[0]["state"] == "initiated"
    assert records[-1]["state"] in TERMINAL_STATES

    one = daemon.run("tail", "--json", "--lines", "1")
    assert one.returncode == 0
    assert one.stdout.strip().splitlines() == [journal[-1].decode()]

    human = daemon.run("tail", "--lines", "1")
    assert human.returncode == 0
    assert call_id in human.stdout and records[-1]["state"] in human.stdout

    # after a restart, a call that ended before it is still found, from the journal
    daemon.start()
    status = daemon.run_json("status", "--call-id", call_id, "--json")
    assert status["found"] is True
    assert status["call"]["state"] == records[-1]["state"]
    assert status["call"]["transcript"] == records[-1]["transcript"]
    assert daemon.health()["activeCalls"] == 0
    assert daemon.journal_lines() == journal  # an ended call is not journaled again


# -- the voice_call tool ---------------------------------------------------------------------


def test_tool_schema(quiet_daemon: Daemon) -> None:
    daemon = quiet_daemon
    done = daemon.run("tool", "--schema")
    assert done.returncode == 0, done.stderr
    schema = json.loads(done.stdout)
    assert schema["name"] == "voice_call"
    params = schema["parameters"]
    assert params["type"] == "object"
    assert set(params["properties"]["action"]["enum"]) >= {
        "initiate_call", "continue_call", "speak_to_user", "end_call", "get_status"}
    assert "action" in params["required"]


def test_tool_actions(daemon: Daemon) -> None:
    done = daemon.run("tool", json.dumps(
        {"action": "initiate_call", "message": "hi", "to": TO}))
    assert done.returncode == 0, done.stderr
    started = json.loads(done.stdout)
    assert set(started) == {"callId", "initiated"}
    assert started["initiated"] is True
    call_id = started["callId"]
    daemon.wait_call_ended(call_id)  # default mode notify: it ends by itself

    done = daemon.run("tool", json.dumps({"action": "get_status", "callId": call_id}))
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    assert set(status) == {"found", "call"}
    assert status["found"] is True
    assert status["call"]["callId"] == call_id
    assert status["call"]["state"] in TERMINAL_STATES
    assert "hi" in transcript(status["call"], "bot")

    done = daemon.run("tool", json.dumps({"action": "get_status", "callId": "nope"}))
    assert json.loads(done.stdout)["found"] is False

    for bad in ({"action": "fly_to_the_moon"}, {"action": "continue_call", "callId": call_id},
                {"action": "speak_to_user", "callId": "nope", "message": "x"}):
        done = daemon.run("tool", json.dumps(bad))
        assert done.returncode == 1, (bad, done.stdout, done.stderr)
        result = json.loads(done.stdout)
        assert set(result) == {"error"} and result["error"], bad
    assert daemon.journal_call_ids() == {call_id}


# -- inbound -------------------------------------------------------------------------------


def test_simulate_inbound_disabled_is_refused(quiet_daemon: Daemon) -> None:
    daemon = quiet_daemon
    done = daemon.run("simulate-inbound", "--from", "+15550001111", "--json")
    assert done.returncode == 1
    assert json.loads(done.stdout)["accepted"] is False
    assert daemon.journal_lines() == []
    assert daemon.health()["activeCalls"] == 0
    assert daemon.run_json("status", "--json") == {"calls": []}


def test_simulate_inbound_allowlist(make_daemon: MakeDaemon) -> None:
    greeting = "Thanks for calling the test line, how can I help?"
    caller = "+15550001111"
    daemon = make_daemon(inboundPolicy="allowlist", allowFrom=[caller],
                         inboundGreeting=greeting)
    stranger = daemon.run("simulate-inbound", "--from", "+15550002222", "--json")
    assert stranger.returncode == 1
    assert json.loads(stranger.stdout)["accepted"] is False
    assert daemon.journal_lines() == []

    events = daemon.watcher()
    accepted = daemon.run_json("simulate-inbound", "--from", caller, "--json")
    assert accepted["accepted"] is True
    call_id = accepted["callId"]
    events.wait_for(is_event(call_id, "call.speaking", text=greeting))

    call = daemon.run_json("status", "--call-id", call_id, "--json")["call"]
    assert call["direction"] == "inbound"
    assert call["from"] == caller
    assert greeting in transcript(call, "bot")
    assert daemon.records_of(call_id)[0]["state"] == "initiated"
    assert daemon.run_json("end", "--call-id", call_id, "--json") == {"success": True}
    assert daemon.records_of(call_id)[-1]["state"] == "hangup-bot"


# -- start-up weight ---------------------------------------------------------------------------

HEAVY = ("trio", "quart", "quart_trio", "httpx", "hypercorn")

_IMPORT_PROBE = textwrap.dedent("""
    import json, sys
    from voicecall_trio import cli
    try:
        code = cli.main(sys.argv[1:])
    except SystemExit as exc:
        code = exc.code
    heavy = sorted(m for m in {heavy!r} if m in sys.modules)
    print("@@" + json.dumps({{"code": code, "heavy": heavy}}))
""").format(heavy=HEAVY)


def _probe(*argv: str) -> tuple[dict[str, Any], str]:
    done = subprocess.run([PYTHON, "-c", _IMPORT_PROBE, *argv], capture_output=True, text=True,
                          timeout=30, env=clean_env(), stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    marker = [line for line in done.stdout.splitlines() if line.startswith("@@")]
    assert marker, done.stdout
    return json.loads(marker[-1][2:]), done.stdout


def test_help_does_not_import_heavy_modules() -> None:
    result, out = _probe("--help")
    assert result["code"] in (0, None)
    assert result["heavy"] == []
    for command in ("serve", "call", "continue", "speak", "end", "status", "tail", "watch",
                    "tool"):
        assert command in out

    done = subprocess.run([VOICECALL, "--help"], capture_output=True, text=True, timeout=30,
                          env=clean_env(), stdin=subprocess.DEVNULL)
    assert done.returncode == 0
    assert "call" in done.stdout


def test_status_does_not_import_heavy_modules(quiet_daemon: Daemon) -> None:
    daemon = quiet_daemon
    result, out = _probe("status", "--json", "--config", str(daemon.config_path))
    assert result["code"] == 0
    assert result["heavy"] == []
    assert '"calls"' in out
