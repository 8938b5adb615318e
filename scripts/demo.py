"""A real call, end to end, on the built-in mock carrier, that answers by itself.

Starts `voicecall serve` on a throwaway store, watches live events with `voicecall watch`,
places a conversation call with `voicecall call`, and lets the built-in replies hold the
conversation: the real OpenAI API when `OPENAI_API_KEY` is set, the shipped
`FakeChatCompletions` otherwise (it says which). The model ends the call with its `end_call`
tool (or the mock callee hangs up when its script runs out); then it prints the final
`status`, the per-stage `voicecall latency`, and stops the daemon with SIGTERM. Exits 0 only
when every step did what it should.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

VOICECALL = [sys.executable, "-m", "voicecall_trio.cli"]
PROMPT = ("You are the phone assistant of Trattoria Example, calling Sam about dinner "
          "tonight. Keep every reply to one short sentence.")
# what the fake model says, turn by turn, to the mock callee's script below
FAKE_REPLIES = [("Hi Sam! Would you like a table for dinner tonight?", None),
                ("Lovely, a table for two at eight is booked.", None),
                ("Goodbye Sam, enjoy your evening!", "the caller said goodbye")]


def start_fake_llm() -> tuple[str, Callable[[], None]]:
    """FakeChatCompletions in a thread of its own (its own trio run): (base URL, stop)."""
    import trio

    from voicecall_trio.testing.chat import FakeChatCompletions, Reply

    ready: list[tuple[str, trio.lowlevel.TrioToken, FakeChatCompletions]] = []
    started = threading.Event()

    async def serve() -> None:
        replies = [Reply(text, end_call=end, first_token_s=0.3, token_s=0.02)
                   for text, end in FAKE_REPLIES]
        async with FakeChatCompletions(replies, default=Reply("Sorry, say that again?")) as fake:
            ready.append((fake.url, trio.lowlevel.current_trio_token(), fake))
            started.set()
            await fake._stop.wait()

    thread = threading.Thread(target=trio.run, args=(serve,), daemon=True)
    thread.start()
    if not started.wait(30):
        raise SystemExit("the fake LLM did not start")
    url, token, fake = ready[0]

    def stop() -> None:
        trio.from_thread.run_sync(fake.stop, trio_token=token)
        thread.join(timeout=5)

    return url, stop


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="vcdemo"))
    config = work / "config.json5"
    stop_fake: Callable[[], None] | None = None
    if os.environ.get("OPENAI_API_KEY"):
        replies = "the real OpenAI API (OPENAI_API_KEY is set)"
        base_url = ""
    else:
        url, stop_fake = start_fake_llm()
        replies = "the shipped FakeChatCompletions (set OPENAI_API_KEY to use OpenAI)"
        base_url = f"  responseBaseUrl: '{url}',\n"
    config.write_text(
        "{\n"
        "  provider: 'mock',\n"
        f"  store: '{work}',\n"
        "  serve: { port: 0 },\n"
        "  outbound: { defaultMode: 'conversation' },\n"
        f"{base_url}"
        f"  responseSystemPrompt: {json.dumps(PROMPT)},\n"
        "  responseTimeoutMs: 15000,\n"
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
        step(f"replies come from {replies}")
        step("placing a conversation call: it answers by itself from here on")
        placed = json.loads(cli(env, "call", "--to", "+15555550123", "--message",
                                "Hello Sam, this is your assistant calling about dinner.",
                                "--mode", "conversation", "--json"))
        call_id = placed["callId"]
        wait_for(env, call_id, lambda c: c["state"] in TERMINAL, timeout_s=90)
        status = json.loads(cli(env, "status", "--call-id", call_id, "--json"))
        call = status["call"]
        step(f"final state: {call['state']} ({call.get('endReason')}), "
             f"{len(call['transcript'])} transcript lines")
        for entry in call["transcript"]:
            print(f"    {entry['speaker']:>4}: {entry['text']}")
        replied = sum(e["speaker"] == "bot" for e in call["transcript"]) >= 2
        # the fake model ends the call itself; a real one may leave it to the callee
        ended_well = call.get("endReason") in ("hangup-bot", "hangup-user") and (
            stop_fake is None or call.get("endReason") == "hangup-bot")
        ok = status["found"] and replied and ended_well
        step("voicecall latency: each turn, stage by stage")
        print("    " + cli(env, "latency", "--call-id", call_id).strip().replace("\n", "\n    "))
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
        print("\ndemo OK: a conversation call on the mock carrier that answered by itself.")
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
        if stop_fake is not None:
            stop_fake()
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


TERMINAL = ("completed", "hangup-user", "hangup-bot", "timeout", "error", "failed",
            "no-answer", "busy", "voicemail")


def wait_for(env: dict[str, str], call_id: str, predicate: object,
             timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        call = json.loads(cli(env, "status", "--call-id", call_id, "--json"))["call"]
        if predicate(call):  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise SystemExit(f"the call did not get there within {timeout_s:.0f} s")


if __name__ == "__main__":
    if "--streaming" in sys.argv[1:]:  # a streamed Twilio call on the simulators
        from demo_streaming import main as streaming

        sys.exit(streaming())
    sys.exit(main())
