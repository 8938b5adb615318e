"""A real call, end to end, on the built-in mock carrier.

Starts `voicecall serve` on a throwaway store, watches live events with `voicecall watch`,
places a conversation call with `voicecall call`, talks with `continue` and `speak`, hangs up
with `end`, prints the final `status`, and stops the daemon with SIGTERM. Exits 0 only when
every step did what it should.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VOICECALL = [sys.executable, "-m", "voicecall_trio.cli"]


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="vcdemo"))
    config = work / "config.json5"
    config.write_text(
        "{\n"
        "  provider: 'mock',\n"
        f"  store: '{work}',\n"
        "  serve: { port: 0 },\n"
        "  outbound: { defaultMode: 'conversation' },\n"
        "  mock: {\n"
        "    answerDelayMs: 400, replyDelayMs: 500, speakMsPerChar: 15,\n"
        "    callerScript: ['Hi! Yes, this is Sam speaking.',\n"
        "                   'A table for two at eight would be perfect.',\n"
        "                   'Great, see you then. Bye!'],\n"
        "  },\n"
        "}\n"
    )
    env = {**os.environ, "VOICECALL_CONFIG": str(config)}
    env.pop("VOICECALL_SOCKET", None)
    log = open(work / "daemon.log", "wb")  # noqa: SIM115
    daemon = subprocess.Popen([*VOICECALL, "serve"], env=env, stderr=log, stdout=log)
    watcher: subprocess.Popen[bytes] | None = None
    try:
        step("starting the daemon (mock carrier)")
        wait_ready(env, daemon)
        watcher = subprocess.Popen([*VOICECALL, "watch"], env=env, stderr=subprocess.PIPE,
                                   text=True)
        assert watcher.stderr is not None
        announced = watcher.stderr.readline()  # "watching all calls": subscribed, nothing missed
        if "watching" not in announced:
            raise SystemExit(f"voicecall watch did not start: {announced.strip()}")
        step("placing a conversation call")
        placed = json.loads(cli(env, "call", "--to", "+15555550123", "--message",
                                "Hello Sam, this is your assistant calling about dinner.",
                                "--mode", "conversation", "--json"))
        call_id = placed["callId"]
        wait_for(env, call_id, lambda c: any(e["speaker"] == "user" for e in c["transcript"]))
        step("continue: asking a question and waiting for the answer")
        answer = json.loads(cli(env, "continue", "--call-id", call_id, "--message",
                                "Would you like a table for two tonight?", "--json"))
        print(f"    -> callee answered: {answer['transcript']!r}")
        step("speak: confirming")
        cli(env, "speak", "--call-id", call_id, "--message", "Done, it's booked for eight.")
        time.sleep(1.5)  # let the callee say goodbye (demo pacing only)
        step("end: hanging up")
        cli(env, "end", "--call-id", call_id)
        status = json.loads(cli(env, "status", "--call-id", call_id, "--json"))
        call = status["call"]
        step(f"final state: {call['state']} ({call.get('endReason')}), "
             f"{len(call['transcript'])} transcript lines")
        for entry in call["transcript"]:
            print(f"    {entry['speaker']:>4}: {entry['text']}")
        ok = status["found"] and call["state"] == "hangup-bot" and answer["transcript"]
        watcher.send_signal(signal.SIGINT)
        watcher.wait(timeout=5)
        step("stopping the daemon (SIGTERM)")
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=10)
        journal = (work / "calls.jsonl").read_text().splitlines()
        print(f"    journal: {len(journal)} lines in {work / 'calls.jsonl'}")
        if not ok or daemon.returncode != 0:
            print("demo FAILED; daemon log:\n" + (work / "daemon.log").read_text(),
                  file=sys.stderr)
            return 1
        print("\ndemo OK: a whole conversation call on the mock carrier.")
        return 0
    finally:
        for proc in (watcher, daemon):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGINT if proc is watcher else signal.SIGTERM)
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
        log.close()
        shutil.rmtree(work, ignore_errors=True)


def step(text: str) -> None:
    print(f"==> {text}", flush=True)


def cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([*VOICECALL, *args], env=env, capture_output=True, text=True,
                          timeout=60)
    if done.returncode != 0:
        raise SystemExit(f"voicecall {' '.join(args)} failed ({done.returncode}): "
                         f"{done.stderr.strip()}")
    return done.stdout


def wait_ready(env: dict[str, str], daemon: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            raise SystemExit("the daemon exited during start-up")
        done = subprocess.run([*VOICECALL, "status", "--json"], env=env, capture_output=True)
        if done.returncode == 0:
            return
        time.sleep(0.1)
    raise SystemExit("the daemon did not become ready within 30 s")


def wait_for(env: dict[str, str], call_id: str, predicate: object) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        call = json.loads(cli(env, "status", "--call-id", call_id, "--json"))["call"]
        if predicate(call):  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise SystemExit("the call did not get there within 30 s")


if __name__ == "__main__":
    if "--streaming" in sys.argv[1:]:  # a streamed Twilio call on the simulators
        from demo_streaming import main as streaming

        sys.exit(streaming())
    sys.exit(main())
