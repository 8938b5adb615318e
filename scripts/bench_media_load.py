"""One run of a media-stream scenario, in its own process on the load generator's core.

    python scripts/bench_media_load.py --scenario inbound --calls 200 --seconds 20
    python scripts/bench_media_load.py --scenario speaking --calls 100

Prints one JSON document. The process holds everything but the daemon: the fakes the daemon
is pointed at (FakeTwilio for the REST API and the call webhooks, FakeTTS answering at once,
the lean STT sink), the lean Twilio streams and their sender. It starts the real
``voicecall serve`` (pinned to core 0, through ``bench.Daemon``), places outbound
conversation calls over the control socket, lets FakeTwilio answer them and fetch the TwiML
(``stream_autoconnect=False``: it records the ``<Stream>`` URL and token and holds the call),
then opens the streams itself. Scenarios:

* ``inbound``: N calls stream caller audio (50 frames/s each) for ``--seconds`` after a
  warm-up; daemon CPU from /proc over that window / frames the sink got in it; every frame's
  send -> append latency; frames lost or altered; RSS per streamed call (the daemon's RSS
  in the window less its RSS before any call, / N).
* ``replies`` (issue #11): N calls answered by the built-in replies from a
  ``FakeChatCompletions`` that answers at once; each call waits for its greeting's mark,
  then ``--turns`` times the sink sends a final transcript (VAD events, commit, delta,
  ``completed``) and the time to the reply's first outbound frame is taken.
* ``speaking``: N calls whose greeting lasts ``--greeting-s``; every outbound frame's arrival
  is timed (pacing jitter while all N speak at once), then the sink sends ``speech_started``
  on each call's STT session (staggered) and the time to the stream's ``clear`` is taken;
  stream ``start`` -> first greeting frame for each call.

The generator reports on itself: its CPU over the window (share of its core) and how late its
sends were against their 20 ms schedule, so a figure is not the generator's own limit.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import shutil
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import trio

SCRIPTS = Path(__file__).resolve().parent
sys.path.insert(0, str(SCRIPTS))
sys.path.insert(1, str(SCRIPTS.parent))

from bench import Daemon, cpu_seconds, rss_mb  # noqa: E402
from bench_media_frames import (  # noqa: E402
    StampedAudio,
    late_frames,
    pacing_errors,
    rebased_errors,
    summary_ms,
)
from bench_media_sink import SttSink  # noqa: E402
from bench_media_streams import LeanStream, Sender  # noqa: E402
from bench_media_ws import Masker  # noqa: E402

ACCOUNT = "AC" + "7" * 32
TOKEN = "bench-media-auth-token-0123456789"
FROM = "+15550001234"
PUBLIC = "https://voice.example.com/voice/webhook"
OPENAI_KEY = "sk-bench-dummy-not-a-key"
GREETING = "Hello, this is the benchmark calling."
REPLY = "Noted, thank you very much for telling me."
CALLER_LINE = "I would like to book a table for two."
LEAD_S = 0.06  # the player's default lead (media/pacing.LEAD_S)
SETUP_S = 120.0  # placing the calls and opening the streams


def daemon_config(fake_url: str, tts_url: str, stt_url: str, calls: int) -> dict[str, Any]:
    limit = max(256, calls + 16)
    return {
        "provider": "twilio",
        "fromNumber": FROM,
        "twilio": {"accountSid": ACCOUNT, "authToken": TOKEN, "apiBaseUrl": fake_url},
        "publicUrl": PUBLIC,
        "maxConcurrentCalls": limit,
        "maxDurationSeconds": 3600,
        "outbound": {"defaultMode": "conversation"},
        "webhookSecurity": {"maxInFlightPerIp": 1000},
        "streaming": {"enabled": True, "openaiApiKey": OPENAI_KEY, "realtimeUrl": stt_url,
                      "maxConnections": limit, "maxPendingConnections": limit,
                      "maxPendingConnectionsPerIp": limit},
        "tts": {"provider": "openai", "baseUrl": tts_url, "apiKey": OPENAI_KEY},
        "shutdownGraceSeconds": 5,
    }


def machine_busy_s() -> float:
    """CPU seconds all cores have spent busy since boot (/proc/stat): what other processes
    took during a window is this less the daemon's and our own."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    busy = sum(fields) - fields[3] - fields[4]  # all but idle and iowait
    return busy / os.sysconf("SC_CLK_TCK")


GC_HOOK = '''\
import atexit, gc, os, time
_began = []
_pauses = []
def _timed(phase, info):
    if phase == "start":
        _began[:] = [time.perf_counter()]
    elif _began:
        _pauses.append((time.perf_counter() - _began[0], info.get("generation", -1)))
gc.callbacks.append(_timed)
if os.environ.get("VOICECALL_BENCH_GC_THRESHOLDS"):  # an experiment: other collector settings
    gc.set_threshold(*(int(x) for x in os.environ["VOICECALL_BENCH_GC_THRESHOLDS"].split(",")))
@atexit.register
def _write():
    path = os.environ.get("VOICECALL_BENCH_GC_LOG")
    if path:
        with open(path + "." + str(os.getpid()), "w") as out:
            out.write(repr(_pauses))
'''


def gc_hook(directory: Path, thresholds: str = "") -> dict[str, str]:
    """Environment that makes the daemon time its garbage collections (a ``sitecustomize``
    with a ``gc.callbacks`` hook, written at exit): the benchmark's instrument, like cProfile,
    nothing in the daemon's code."""
    (directory / "sitecustomize.py").write_text(GC_HOOK)
    path = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": str(directory) + (os.pathsep + path if path else ""),
            "VOICECALL_BENCH_GC_LOG": str(directory / "gc"),
            "VOICECALL_BENCH_GC_THRESHOLDS": thresholds}


def gc_pauses(directory: Path) -> dict[str, Any]:
    """The daemon's collections of generation 2 (count, p50, max) and the longest of any."""
    import ast

    pauses: list[tuple[float, int]] = []
    for log in directory.glob("gc.*"):
        pauses += ast.literal_eval(log.read_text() or "[]")
    full = [p for p, generation in pauses if generation == 2]
    return {"collections": len(pauses), "gen2": summary_ms(full),
            "longest_ms": round(max((p for p, _ in pauses), default=0.0) * 1000, 2)}


class Run:
    """The state of one scenario run (see the module docstring)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.audio = StampedAudio()
        self.masker = Masker()
        self.sender = Sender()
        self.streams: list[LeanStream] = []
        self.window = (math.inf, math.inf)
        self.latencies: list[float] = []
        self.stalls: list[float] = []  # the heartbeat's oversleeps
        self.forwarded_in_window = 0
        self.received = 0
        self._want = math.inf  # frames sent in all, once the sender stopped
        self._drained = trio.Event()
        self.sink = SttSink(self.audio, self._on_frame)

    def _on_frame(self, stream: int, seq: int, now: float) -> None:
        self.received += 1
        if self.received >= self._want:
            self._drained.set()
        sent = self.streams[stream].sent_at[seq]
        start, end = self.window
        if start <= sent < end:
            self.latencies.append(now - sent)
        if start <= now < end:
            self.forwarded_in_window += 1

    async def main(self) -> dict[str, Any]:
        from voicecall_trio.testing.fake_twilio import FakeTwilio
        from voicecall_trio.testing.tts import FakeTTS, tone_pcm

        args = self.args
        llm = None
        if args.scenario == "replies":
            from voicecall_trio.testing.chat import FakeChatCompletions, Reply

            # --delayed: issue #11's realistic providers (300 ms to the first token, 20 ms a
            # token; the TTS 150 ms to its first byte)
            llm = FakeChatCompletions(default=Reply(
                REPLY, first_token_s=0.3 if args.delayed else 0.0,
                token_s=0.02 if args.delayed else 0.0))
        fake = FakeTwilio(account_sid=ACCOUNT, auth_token=TOKEN, phone_number=FROM,
                          voice_url=PUBLIC, stream_autoconnect=False, stream_record_bytes=0)
        tts = FakeTTS(pcm=tone_pcm(args.greeting_s))
        if args.delayed:
            tts.first_byte_delay = 0.15
        async with AsyncExitStack() as stack:
            for service in (fake, tts, llm):
                if service is not None:
                    await stack.enter_async_context(service)
            nursery = await stack.enter_async_context(trio.open_nursery())
            await nursery.start(self.sink.run)
            stt_url = "ws://127.0.0.1:9/v1/realtime" if args.stt_refused else self.sink.url
            config = daemon_config(fake.url, tts.base_url, stt_url, args.calls)
            if llm is not None:
                config["responseBaseUrl"] = llm.url
                config["responseApiKey"] = OPENAI_KEY
            python_args = ("-m", "cProfile", "-o", args.profile) if args.profile else ()
            hook_dir = Path(tempfile.mkdtemp(prefix="vcgc"))
            hook = gc_hook(hook_dir, args.gc_thresholds)
            saved = {name: os.environ.get(name) for name in hook}
            os.environ.update(hook)  # Daemon copies the environment when it starts
            try:
                daemon = await trio.to_thread.run_sync(
                    lambda: Daemon(config, core=0, python_args=python_args))
            finally:
                for name, value in saved.items():
                    if value is None:
                        os.environ.pop(name, None)
                    else:
                        os.environ[name] = value
            try:
                fake.tunnel(PUBLIC, daemon.http_base, forwarded_headers=False)
                result = await self._scenario(nursery, fake, daemon)
            finally:
                self.sender.stop()
                await trio.to_thread.run_sync(daemon.stop)
                nursery.cancel_scope.cancel()
            result["daemon_gc"] = gc_pauses(hook_dir)
            shutil.rmtree(hook_dir, ignore_errors=True)
        return result

    async def _place(self, daemon: Daemon, fake: Any) -> list[Any]:
        """Place the calls; the FakeCalls once each has fetched its ``<Stream>`` TwiML."""
        from voicecall_trio.rpc.aclient import TrioClient

        n = self.args.calls
        async with trio.open_nursery() as nursery:
            client = await TrioClient.connect(daemon.socket)
            nursery.start_soon(client.run)
            limit = trio.Semaphore(8)

            async def one(i: int) -> None:
                async with limit:
                    await client.call("voicecall.initiate", {
                        "to": f"+1555555{i:04d}", "message": GREETING,
                        "mode": "conversation"})

            async with trio.open_nursery() as placing:
                for i in range(n):
                    placing.start_soon(one, i)
            await fake.wait_for(lambda: sum(1 for c in fake.calls.values() if c.streams) >= n)
            await client.aclose()
            nursery.cancel_scope.cancel()
        return [c for c in fake.calls.values() if c.streams][:n]

    async def _open(self, nursery: trio.Nursery, fake: Any, calls: list[Any]) -> None:
        """Open one stream per call, ``--open-gap-ms`` apart, each sending from its start."""
        from voicecall_trio.testing.twilio.base import _new_sid

        gap = self.args.open_gap_ms / 1000
        for i, call in enumerate(calls):
            info = call.streams[-1]
            request = fake.stream_request(info["url"])
            if request is None:
                raise RuntimeError(f"cannot reach the stream URL {info['url']}")
            stream = LeanStream(i, request, account_sid=ACCOUNT, call_sid=call.sid,
                                stream_sid=_new_sid("MZ"),
                                parameters={k: v for k, v in info.items() if k != "url"},
                                audio=self.audio, masker=self.masker)
            self.streams.append(stream)
            if not await stream.open():
                raise RuntimeError(f"stream upgrade refused: HTTP {stream.status}")
            nursery.start_soon(stream.run)
            self.sender.add(stream, trio.current_time() + 0.001)
            await trio.sleep(gap)

    async def _drain(self) -> None:
        """Stop sending and wait (bounded) until the sink has every frame sent."""
        self.sender.stop()
        self._want = self.sender.frames_sent - self.sink.bad_frames
        if self.received >= self._want:
            return
        with trio.move_on_after(5):
            await self._drained.wait()

    async def _settle(self, pid: int) -> float:
        """Wait until the daemon is idle (under 10 % of its core for 0.3 s): the greetings
        have been synthesised and resampled (they start at the dial), so what follows
        measures streaming, not the TTS intake of every call at once. Bounded by 30 s."""
        began = trio.current_time()
        last = cpu_seconds(pid)
        while trio.current_time() - began < 30:
            await trio.sleep(0.3)
            now = cpu_seconds(pid)
            if now - last < 0.03:
                break
            last = now
        return trio.current_time() - began

    async def _heartbeat(self) -> None:
        """How late this process's own loop wakes (a 1 ms sleep, over and over): a stall
        here shows in every time this process takes, so it is reported beside them."""
        while True:
            before = trio.current_time()
            await trio.sleep(0.001)
            self.stalls.append(trio.current_time() - before - 0.001)

    async def _scenario(self, nursery: trio.Nursery, fake: Any, daemon: Daemon
                        ) -> dict[str, Any]:
        args = self.args
        pid = daemon.proc.pid
        idle_rss = rss_mb(pid)
        t_setup = time.perf_counter()
        with trio.fail_after(SETUP_S):
            calls = await self._place(daemon, fake)
            settle_s = await self._settle(pid)
            nursery.start_soon(self.sender.run)
            await self._open(nursery, fake, calls)
        setup_s = time.perf_counter() - t_setup
        # no collector pauses in the measured part (a run is short; memory may grow)
        gc.collect()
        gc.freeze()
        gc.disable()
        nursery.start_soon(self._heartbeat)
        if args.scenario == "inbound":
            out = await self._inbound(pid)
        elif args.scenario == "replies":
            out = await self._replies()
        else:
            out = await self._speaking(pid)
        out.update(self._common(idle_rss, setup_s))
        out["settle_s"] = round(settle_s, 2)
        return out

    async def _window(self, seconds: float, pid: int) -> dict[str, Any]:
        """Measure CPU (daemon, generator) over the next ``seconds``."""
        now = trio.current_time()
        self.window = (now, now + seconds)
        cpu0, own0, wall0 = cpu_seconds(pid), time.process_time(), time.perf_counter()
        busy0 = machine_busy_s()
        await trio.sleep_until(self.window[1])
        cpu1, own1, wall1 = cpu_seconds(pid), time.process_time(), time.perf_counter()
        busy1 = machine_busy_s()
        wall = wall1 - wall0
        others = (busy1 - busy0) - (cpu1 - cpu0) - (own1 - own0)
        return {"loadavg_1min": round(os.getloadavg()[0], 2), "window_s": round(wall, 2),
                "others_cpu_cores": round(max(0.0, others) / wall, 2),
                "daemon_cpu_s": round(cpu1 - cpu0, 3),
                "daemon_cpu_share": round((cpu1 - cpu0) / wall, 3),
                "generator_cpu_share": round((own1 - own0) / wall, 3)}

    async def _inbound(self, pid: int) -> dict[str, Any]:
        args = self.args
        await trio.sleep(args.warmup)
        out = await self._window(args.seconds, pid)
        out["rss_loaded_mb"] = round(rss_mb(pid), 1)
        await self._drain()
        frames = self.forwarded_in_window
        start, end = self.window
        sent = sum(1 for s in self.streams for t in s.sent_at if start <= t < end)
        out.update({
            "frames_in_window": frames,
            "frames_sent_in_window": sent,
            "cpu_us_per_frame": round(out["daemon_cpu_s"] / frames * 1e6, 2) if frames
            else math.nan,
            "cpu_us_per_frame_sent": round(out["daemon_cpu_s"] / sent * 1e6, 2) if sent
            else math.nan,
            "latency": summary_ms(self.latencies),
        })
        return out

    async def _speaking(self, pid: int) -> dict[str, Any]:
        args = self.args
        all_open = trio.current_time()
        # every call speaks its greeting; then each is interrupted, 7 ms apart
        cpu = await self._window(args.barge_in_s, pid)
        starts: list[float] = []
        interrupts: dict[int, float] = {}
        for s in self.streams:
            at = await self.sink.speech_started(s.index, f"item_bi_{s.index}")
            if at is not None:
                interrupts[s.index] = at
            await trio.sleep(0.007)
        await trio.sleep(1.0)
        jitter: list[float] = []
        own_jitter: list[float] = []
        runs_restarted = 0
        late = 0
        clear_ms: list[float] = []
        for s in self.streams:
            if s.start_sent_at is not None and s.arrivals:
                starts.append(s.arrivals[0] - s.start_sent_at)
            until = interrupts.get(s.index, math.inf)
            spoken = [t for t in s.arrivals if t < until]
            # only while every call was speaking: from the last stream's start on
            jitter += pacing_errors(spoken, lead_s=LEAD_S, since=all_open)
            errors, rebases = rebased_errors(spoken, lead_s=LEAD_S, since=all_open)
            own_jitter += errors
            runs_restarted += rebases
            late += late_frames(spoken)
            if s.index in interrupts:
                after = [c for c in s.clears if c >= interrupts[s.index]]
                if after:
                    clear_ms.append(after[0] - interrupts[s.index])
        await self._drain()
        return {**cpu, "greeting_s": args.greeting_s,
                "start_to_first_frame": summary_ms(starts),
                "pacing_jitter": summary_ms(jitter),
                "late_frames": late,
                "pacing_jitter_rebased": summary_ms(own_jitter),
                "pacer_restarts": runs_restarted,
                "speech_started_to_clear": summary_ms(clear_ms),
                "interrupted": len(interrupts), "clears_seen": len(clear_ms)}

    async def _replies(self) -> dict[str, Any]:
        """Final transcript -> the reply's first frame, ``--turns`` times a call."""
        gaps: list[float] = []
        missing = 0
        began = trio.current_time()
        self.window = (began, math.inf)

        async def converse(stream: LeanStream) -> None:
            nonlocal missing
            with trio.move_on_after(30):
                while not stream.echoed:  # the greeting has been played and heard
                    await stream.changed.wait()
            for turn in range(self.args.turns):
                echoes = len(stream.echoed)
                waiter = stream.expect_media()
                said = await self.sink.final_transcript(
                    stream.index, f"item_{stream.index}_{turn}", CALLER_LINE)
                with trio.move_on_after(10):
                    await waiter.event.wait()
                if said is None or not waiter.event.is_set():
                    missing += 1
                    continue
                gaps.append(waiter.at - said)
                with trio.move_on_after(30):  # the reply is heard before the next turn
                    while len(stream.echoed) <= echoes:
                        await stream.changed.wait()

        async with trio.open_nursery() as nursery:
            for stream in self.streams:
                nursery.start_soon(converse, stream)
                await trio.sleep(0.05)
        self.window = (began, trio.current_time())
        await self._drain()
        return {"turns": len(gaps), "turns_without_reply": missing,
                "final_to_first_audio": summary_ms(gaps)}

    def _common(self, idle_rss: float, setup_s: float) -> dict[str, Any]:
        start, end = self.window  # the sender's schedule, in the measured window
        lateness = [x for s in self.streams for x, t in zip(s.lateness, s.sent_at, strict=True)
                    if start <= t < end]
        sent = self.sender.frames_sent
        received = self.sink.frames
        return {
            "scenario": self.args.scenario, "calls": self.args.calls,
            "setup_s": round(setup_s, 2),
            "rss_idle_mb": round(idle_rss, 1),
            "frames_sent": sent, "frames_received": received,
            "frames_lost": sent - received - self.sink.bad_frames,
            "frames_bad": self.sink.bad_frames,
            "stt_sessions": len(self.sink.sessions),
            "stt_other_messages": sum(x.other_messages for x in self.sink.sessions),
            "protocol_errors": sorted({e for e in [*(s.protocol_error for s in self.streams),
                                                   *(x.protocol_error
                                                     for x in self.sink.sessions)] if e}),
            "bad_stream_messages": sum(s.bad_messages for s in self.streams),
            "streams_closed_early": sum(1 for s in self.streams if s.close_code is not None),
            "generator_send_lateness": summary_ms(lateness),
            "generator_blocked_sends": sum(s.blocked_sends for s in self.streams),
            "generator_loop_stall": summary_ms(self.stalls),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", choices=("inbound", "speaking", "replies"),
                        default="inbound")
    parser.add_argument("--turns", type=int, default=3, help="replies: turns a call")
    parser.add_argument("--delayed", action="store_true",
                        help="replies: LLM 300 ms to first token + 20 ms/token, TTS 150 ms")
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=20.0, help="inbound: the window")
    parser.add_argument("--warmup", type=float, default=3.0, help="inbound: before the window")
    parser.add_argument("--greeting-s", type=float, default=0.2)
    parser.add_argument("--barge-in-s", type=float, default=4.0,
                        help="speaking: from the last stream open to the first barge-in")
    parser.add_argument("--open-gap-ms", type=float, default=10.0)
    parser.add_argument("--stt-refused", action="store_true",
                        help="point the daemon's STT at a closed port (the route's cost alone)")
    parser.add_argument("--gc-thresholds", default="",
                        help="an experiment: gc.set_threshold(...) in the daemon, e.g. 700,10,1000")
    parser.add_argument("--profile", default="", help="run the daemon under cProfile to this")
    args = parser.parse_args(argv)
    if args.scenario == "speaking" and args.greeting_s < args.barge_in_s + 3:
        args.greeting_s = args.barge_in_s + args.calls * 0.007 + 3
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})
    result = trio.run(Run(args).main)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
