"""Measure the budgets and record them in docs/benchmarks.md.

    ./scripts/bench                  # everything, 3 runs each, median reported
    ./scripts/bench --only rpc,cli   # subsets: rpc, cli, journal, replay, webhooks, calls,
                                     # replies, profile, media (scripts/bench_media.py:
                                     # its own docs section)
    ./scripts/bench --quick          # fewer iterations (smoke run)

Prints a JSON document and a table, and rewrites docs/benchmarks.md (unless --no-write).
Figures are medians of several runs: these 2-core machines are noisy. The daemon runs as a
real `voicecall serve` process; load generators run in their own process, pinned to the other
core with taskset when available. Server CPU time per request comes from /proc/PID/stat.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VOICECALL = [sys.executable, "-m", "voicecall_trio.cli"]
TASKSET = shutil.which("taskset")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def pinned(cmd: list[str], core: int) -> list[str]:
    if TASKSET and (os.cpu_count() or 1) > 1:
        return [TASKSET, "-c", str(core), *cmd]
    return cmd


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Daemon:
    """A real `voicecall serve` process on a throwaway store."""

    def __init__(self, config: dict[str, Any], core: int = 0,
                 python_args: tuple[str, ...] = ()) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="vcb"))
        config = {"store": str(self.dir), "serve": {"port": 0}, **config}
        self.config_path = self.dir / "config.json"
        self.config_path.write_text(json.dumps(config))
        self.socket = self.dir / "voicecall.sock"
        self.env = {**os.environ, "VOICECALL_CONFIG": str(self.config_path)}
        self.env.pop("VOICECALL_SOCKET", None)
        self.env.pop("OPENAI_API_KEY", None)  # built-in replies must not call OpenAI here
        self.log = open(self.dir / "daemon.log", "wb")  # noqa: SIM115
        command = [sys.executable, *python_args, "-m", "voicecall_trio.cli", "serve"]
        self.proc = subprocess.Popen(pinned(command, core), env=self.env,
                                     stdout=self.log, stderr=self.log)
        self.health = self._wait_ready()

    def _wait_ready(self) -> dict[str, Any]:
        from voicecall_trio.rpc.client import DaemonUnreachable, SyncClient

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError((self.dir / "daemon.log").read_text())
            try:
                with SyncClient(self.socket) as client:
                    health = dict(client.call("daemon.health"))
                if health.get("ready"):
                    return health
            except DaemonUnreachable:
                pass
            time.sleep(0.05)
        raise RuntimeError("daemon did not start")

    @property
    def http_base(self) -> str:
        return str(self.health["listen"][0])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


# -- benchmarks ----------------------------------------------------------------------------


def bench_rpc(runs: int, n: int) -> dict[str, Any]:
    from voicecall_trio.rpc.client import SyncClient

    daemon = Daemon({}, core=0)
    try:
        results = []
        for _ in range(runs):
            samples = []
            with SyncClient(daemon.socket) as client:
                for _ in range(50):
                    client.call("daemon.health")
                for _ in range(n):
                    t0 = time.perf_counter()
                    client.call("voicecall.status", {"callId": "nope"})
                    samples.append((time.perf_counter() - t0) * 1000)
            results.append({"p50_ms": pct(samples, 50), "p99_ms": pct(samples, 99)})
        return {
            "requests_per_run": n,
            "p50_ms": statistics.median(r["p50_ms"] for r in results),
            "p99_ms": statistics.median(r["p99_ms"] for r in results),
        }
    finally:
        daemon.stop()


def bench_cli(runs: int) -> dict[str, Any]:
    daemon = Daemon({}, core=0)
    try:
        medians = []
        for _ in range(runs):
            samples = []
            for _ in range(10):
                t0 = time.perf_counter()
                done = subprocess.run(pinned([str(ROOT / ".venv/bin/voicecall"), "status"], 1),
                                      env=daemon.env, capture_output=True)
                samples.append((time.perf_counter() - t0) * 1000)
                if done.returncode != 0:
                    raise RuntimeError(done.stderr.decode())
            medians.append(statistics.median(samples))
        probe = subprocess.run(
            [sys.executable, "-c", "import sys; from voicecall_trio import cli; "
             "cli.main(['status', '--socket', '/nonexistent']); "
             "print(sorted(m for m in ('trio','quart','quart_trio','httpx','hypercorn',"
             "'cyclopts') if m in sys.modules))"],
            capture_output=True, text=True, env=daemon.env)
        return {"status_cold_start_median_ms": statistics.median(medians),
                "runs_of_10": [round(m, 1) for m in medians],
                "heavy_modules_imported": json.loads(probe.stdout.strip().replace("'", '"'))}
    finally:
        daemon.stop()


def bench_journal(runs: int, n: int) -> dict[str, Any]:
    import trio

    from voicecall_trio.journal import Journal
    from voicecall_trio.model import new_record

    async def burst(path: Path) -> tuple[float, float]:
        journal = Journal(path)
        records = [new_record(provider="mock", direction="outbound", from_="+15550001111",
                              to="+15550002222", call_id=str(uuid.uuid4()),
                              at=int(time.time() * 1000)) for _ in range(n)]
        async with trio.open_nursery() as nursery:
            await nursery.start(journal.run)
            t0 = time.perf_counter()
            for record in records:
                journal.append(record)
            await journal.flush()
            burst_rate = n / (time.perf_counter() - t0)
            t0 = time.perf_counter()
            durable = 200
            for record in records[:durable]:
                await journal.append_durable(record)
            durable_rate = durable / (time.perf_counter() - t0)
            await journal.close()
        return burst_rate, durable_rate

    bursts, durables = [], []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            b, d = trio.run(burst, Path(tmp) / "calls.jsonl")
            bursts.append(b)
            durables.append(d)
    return {"appends_per_s_batched": round(statistics.median(bursts)),
            "appends_per_s_each_fsynced": round(statistics.median(durables)),
            "records": n}


def make_journal(path: Path, lines: int) -> None:
    from voicecall_trio.events import CallAnswered, CallEnded, CallSpeaking, CallSpeech
    from voicecall_trio.journal_lines import encode_record
    from voicecall_trio.model import apply, new_record

    out = []
    calls = lines // 5
    for i in range(calls):
        now = int(time.time() * 1000)
        r = new_record(provider="mock", direction="outbound", from_="+15550001111",
                       to="+15550002222", provider_call_id=f"p{i}", call_id=str(uuid.uuid4()),
                       at=now)
        out.append(encode_record(r))
        r = apply(r, CallAnswered(id="a"), now)
        out.append(encode_record(r))
        r = apply(r, CallSpeaking(id="b", text="Hello, this is your assistant calling."), now)
        out.append(encode_record(r))
        r = apply(r, CallSpeech(id="c", text="Hi! Sounds good, thank you."), now)
        out.append(encode_record(r))
        if i % 100:
            r = apply(r, CallEnded(id="d", reason="completed"), now)
        out.append(encode_record(r))
    path.write_bytes(b"".join(out))


def bench_replay(runs: int, lines: int) -> dict[str, Any]:
    from voicecall_trio.replay import replay_file

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "calls.jsonl"
        make_journal(path, lines)
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            result = replay_file(path)
            times.append(time.perf_counter() - t0)
        return {"lines": result.lines, "bytes": path.stat().st_size,
                "live_calls": len(result.live), "replay_s_median": statistics.median(times)}


# -- webhook load ----------------------------------------------------------------------------

TWILIO_SID = "AC" + "0" * 32
TWILIO_TOKEN = "bench-token-0123456789abcdef"


def build_signed_requests(url: str, count: int, host: str) -> list[bytes]:
    """Distinct, correctly signed Twilio status callbacks (so no replay-cache shortcut)."""
    from urllib.parse import urlencode, urlsplit

    from voicecall_trio.providers.twilio.signature import compute_signature

    path = urlsplit(url).path + "?type=status"
    run = os.urandom(6).hex()  # distinct per run, so no request hits the replay cache
    out = []
    for i in range(count):
        params = {"AccountSid": TWILIO_SID, "CallSid": f"CA{run}{i:020d}",
                  "CallStatus": "ringing",
                  "From": "+15550001111", "To": "+15550002222", "Direction": "outbound-api",
                  "SequenceNumber": str(i)}
        body = urlencode(params).encode()
        signature = compute_signature(TWILIO_TOKEN, url + "?type=status", params)
        out.append(
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\n"
            f"Content-Type: application/x-www-form-urlencoded\r\n"
            f"X-Twilio-Signature: {signature}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
    return out


class _Client:
    """One keep-alive connection of the load generator, driven by a selector."""

    def __init__(self, target: tuple[str, int], queue: list[bytes]) -> None:
        self.target = target
        self.queue = queue
        self.sock: socket.socket | None = None
        self.buffer = b""
        self.started = 0.0
        self.retried = False

    def connect(self) -> socket.socket:
        sock = socket.create_connection(self.target)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        self.sock, self.buffer = sock, b""
        return sock

    def send_next(self) -> bool:
        """Send the next request (whole; they are small); False when the queue is done."""
        if not self.queue:
            return False
        assert self.sock is not None
        self.started = time.perf_counter()
        request = self.queue[-1]
        sent = self.sock.send(request)  # a few hundred bytes: fits the socket buffer
        if sent < len(request):
            self.sock.setblocking(True)
            self.sock.sendall(request[sent:])
            self.sock.setblocking(False)
        return True

    def response(self) -> int | None:
        """The status of a complete response in the buffer (consumed), or None."""
        head_end = self.buffer.find(b"\r\n\r\n")
        if head_end < 0:
            return None
        head = self.buffer[:head_end].decode("latin-1")
        length = 0
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name.lower() == "content-length":
                length = int(value)
        total = head_end + 4 + length
        if len(self.buffer) < total:
            return None
        self.buffer = self.buffer[total:]
        return int(head.split(" ", 2)[1])


def loadgen_main(args: argparse.Namespace) -> None:
    """Runs in its own process: fire pre-signed requests over keep-alive connections.

    Plain non-blocking sockets on an epoll selector, so that the client's own per-response
    work (a few microseconds) adds as little as possible to the latencies it measures.
    """
    import selectors

    host, port = args.target.split(":")
    requests = build_signed_requests(args.url, args.requests, f"{host}:{port}")
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    selector = selectors.DefaultSelector()
    clients = [_Client((host, int(port)), requests[i::args.connections][::-1])
               for i in range(args.connections)]
    t0 = time.perf_counter()
    for client in clients:
        selector.register(client.connect(), selectors.EVENT_READ, client)
        client.send_next()
    live = len(clients)
    while live:
        for key, _ in selector.select():
            client = key.data
            try:
                data = client.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except ConnectionError:
                data = b""
            if not data:
                # the server closed between two requests (as any server may): reconnect and
                # send the request again, timed from the new send
                if client.retried:
                    raise RuntimeError("server closed the connection twice in a row")
                selector.unregister(client.sock)
                client.sock.close()
                selector.register(client.connect(), selectors.EVENT_READ, client)
                client.retried = True
                client.send_next()
                continue
            client.buffer += data
            while (status := client.response()) is not None:
                latencies.append((time.perf_counter() - client.started) * 1000)
                statuses[status] = statuses.get(status, 0) + 1
                client.queue.pop()
                client.retried = False
                if not client.send_next():
                    selector.unregister(client.sock)
                    client.sock.close()
                    live -= 1
                    break
    elapsed = time.perf_counter() - t0
    print(json.dumps({"elapsed_s": elapsed, "rps": len(latencies) / elapsed,
                      "p50_ms": pct(latencies, 50), "p99_ms": pct(latencies, 99),
                      "statuses": statuses}))


def run_loadgen(daemon: Daemon, connections: int, requests: int) -> dict[str, Any]:
    base = daemon.http_base.removeprefix("http://")
    url = f"http://{base}/voice/webhook"
    cmd = pinned([sys.executable, __file__, "--loadgen", "--target", base, "--url", url,
                  "--connections", str(connections), "--requests", str(requests)], 1)
    cpu0 = cpu_seconds(daemon.proc.pid)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(done.stderr)
    result = dict(json.loads(done.stdout))
    result["server_cpu_us_per_request"] = (cpu_seconds(daemon.proc.pid) - cpu0) / requests * 1e6
    return result


def bench_webhooks(runs: int, requests: int, rss_requests: int) -> dict[str, Any]:
    config = {"provider": "twilio", "fromNumber": "+15550001234",
              "twilio": {"accountSid": TWILIO_SID, "authToken": TWILIO_TOKEN,
                         "apiBaseUrl": "http://127.0.0.1:9"},
              "webhookSecurity": {"maxInFlightPerIp": 1000}}
    out: dict[str, Any] = {}
    daemon = Daemon(config, core=0)
    try:
        run_loadgen(daemon, 10, 500)  # warm-up
        for connections in (1, 50):
            samples = [run_loadgen(daemon, connections, requests) for _ in range(runs)]
            bad = {k: v for s in samples for k, v in s["statuses"].items() if k != "200"}
            out[f"c{connections}"] = {
                "rps": round(statistics.median(s["rps"] for s in samples)),
                "p50_ms": round(statistics.median(s["p50_ms"] for s in samples), 2),
                "p99_ms": round(statistics.median(s["p99_ms"] for s in samples), 2),
                "server_cpu_us_per_request": round(
                    statistics.median(s["server_cpu_us_per_request"] for s in samples)),
                "non_200": bad,
            }
        before = rss_mb(daemon.proc.pid)
        sent = 0
        while sent < rss_requests:
            chunk = min(25_000, rss_requests - sent)
            run_loadgen(daemon, 50, chunk)
            sent += chunk
        after = rss_mb(daemon.proc.pid)
        out["rss"] = {"requests": sent, "before_mb": round(before, 1),
                      "after_mb": round(after, 1), "growth_mb": round(after - before, 1)}
    finally:
        daemon.stop()
    return out


# -- calls: reply overhead and memory ----------------------------------------------------------

INSTANT_MOCK = {"answerDelayMs": 0, "replyDelayMs": 0, "speakMsPerChar": 0}


async def _turn_gaps(socket_path: Path, turns: int) -> list[float]:
    """ms from each final transcript (call.speech) to the reply (call.speaking), seen by a
    subscriber, with an agent on the socket that answers at once."""
    import trio

    from voicecall_trio.rpc.aclient import TrioClient

    async def respond(params: dict[str, Any]) -> dict[str, Any]:
        return {"text": "Noted."}

    gaps: list[float] = []
    async with trio.open_nursery() as nursery:
        agent = await TrioClient.connect(socket_path, {"agent.respond": respond})
        watcher = await TrioClient.connect(socket_path)
        nursery.start_soon(agent.run)
        nursery.start_soon(watcher.run)
        await agent.call("agent.register")
        await watcher.call("voicecall.subscribe")
        placed = await watcher.call("voicecall.initiate", {
            "to": "+15555550123", "message": "Hello", "mode": "conversation"})
        heard_at = None
        with trio.fail_after(120):
            async for note in watcher.notifications:
                event = note.params
                if event.get("callId") != placed["callId"]:
                    continue
                if event["type"] == "call.speech" and event.get("isFinal", True):
                    heard_at = time.perf_counter()
                elif event["type"] == "call.speaking" and heard_at is not None:
                    gaps.append((time.perf_counter() - heard_at) * 1000)
                    heard_at = None
                elif event["type"] == "call.ended":
                    break
        await agent.aclose()
        await watcher.aclose()
        nursery.cancel_scope.cancel()
    return gaps[:turns]


def bench_calls(runs: int, turns: int, held: int) -> dict[str, Any]:
    """Reply overhead per turn, and the daemon's memory idle and per live call."""
    import trio

    script = [f"Line {i} from the callee." for i in range(turns)]
    samples: list[float] = []
    daemon = Daemon({"mock": {**INSTANT_MOCK, "callerScript": script}}, core=0)
    try:
        for _ in range(runs):
            samples += trio.run(_turn_gaps, daemon.socket, turns)
    finally:
        daemon.stop()
    # calls that stay up: the callee never answers the greeting
    quiet = {"mock": {**INSTANT_MOCK, "replyDelayMs": 3_600_000},
             "maxConcurrentCalls": held, "maxDurationSeconds": 3600}
    daemon = Daemon(quiet, core=0)
    try:
        from voicecall_trio.rpc.client import SyncClient

        with SyncClient(daemon.socket) as client:
            for _ in range(20):  # warm the RPC path before measuring idle
                client.call("daemon.health")
            idle = rss_mb(daemon.proc.pid)
            for i in range(held):
                client.call("voicecall.initiate", {"to": f"+1555555{i:04d}", "message": "Hi",
                                                   "mode": "conversation"})
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                calls = client.call("voicecall.status")["calls"]
                if sum(1 for c in calls if c["state"] == "listening") == held:
                    break
                time.sleep(0.05)
            else:
                raise RuntimeError("calls did not all reach listening")
            loaded = rss_mb(daemon.proc.pid)
    finally:
        daemon.stop()
    return {"turns": len(samples),
            "reply_overhead_p50_ms": round(pct(samples, 50), 2),
            "reply_overhead_p99_ms": round(pct(samples, 99), 2),
            "rss_idle_mb": round(idle, 1), "held_calls": held,
            "rss_per_call_kb": round((loaded - idle) * 1024 / held, 1)}


# -- replies: the built-in client's turn, stage by stage ------------------------------------

REPLY_TEXT = "Noted, thank you very much for telling me."  # 8 tokens as the fake streams it


def _fake_llm(first_token_s: float, token_s: float) -> tuple[str, Any]:
    """FakeChatCompletions in a thread with its own trio run: (base URL, stop)."""
    import threading

    import trio

    from voicecall_trio.testing.chat import FakeChatCompletions, Reply

    ready: list[Any] = []
    started = threading.Event()

    async def serve() -> None:
        reply = Reply(REPLY_TEXT, first_token_s=first_token_s, token_s=token_s)
        async with FakeChatCompletions(default=reply) as fake:
            ready.extend([fake.url, trio.lowlevel.current_trio_token(), fake])
            started.set()
            await fake._stop.wait()

    thread = threading.Thread(target=trio.run, args=(serve,), daemon=True)
    thread.start()
    if not started.wait(30):
        raise RuntimeError("the fake LLM did not start")
    url, token, fake = ready

    def stop() -> None:
        trio.from_thread.run_sync(fake.stop, trio_token=token)
        thread.join(timeout=5)

    return url, stop


def _reply_turns(daemon: Daemon, calls: int) -> list[dict[str, Any]]:
    """Place ``calls`` conversation calls one after the other, each until the callee's script
    runs out; then every turn the journal kept (``metadata.turns``)."""
    from voicecall_trio.cli.latency import read_records, turns_of
    from voicecall_trio.rpc.client import SyncClient

    ids = []
    with SyncClient(daemon.socket) as client:
        for _ in range(calls):
            placed = client.call("voicecall.initiate", {
                "to": "+15555550123", "message": "Hello.", "mode": "conversation"})
            ids.append(placed["callId"])
            deadline = time.monotonic() + 300
            while client.call("voicecall.status", {"callId": placed["callId"]}).get(
                    "call", {}).get("endReason") is None:
                if time.monotonic() > deadline:
                    raise RuntimeError("a replies call did not end")
                time.sleep(0.05)
    records = read_records(str(daemon.dir / "calls.jsonl"))
    return list(turns_of(records[i] for i in ids))


def _stages(turns: list[dict[str, Any]]) -> dict[str, Any]:
    total = [t["firstAudioOut"] for t in turns if "firstAudioOut" in t]
    model = [t["firstToken"] - t["replyRequested"] for t in turns
             if "firstToken" in t and "replyRequested" in t]
    own = [t["firstAudioOut"] - (t["firstToken"] - t["replyRequested"]) for t in turns
           if {"firstAudioOut", "firstToken", "replyRequested"} <= set(t)]
    return {"turns": len(turns),
            "total_p50_ms": round(pct(total, 50), 2), "total_p99_ms": round(pct(total, 99), 2),
            "first_token_p50_ms": round(pct(model, 50), 2),
            "own_p50_ms": round(pct(own, 50), 2), "own_p99_ms": round(pct(own, 99), 2)}


def bench_replies(runs: int, instant_turns: int, delayed_turns: int) -> dict[str, Any]:
    """Built-in replies on the mock carrier (no simulated delays), from a FakeChatCompletions
    on loopback: instant, then 300 ms to the first token and 20 ms per token. Figures are the
    daemon's own waterfall (``metadata.turns``): caller stopped (= the mock's final
    transcript) -> first audio out (= the speak request sent), and that minus the model's
    time to first token (request -> first token, loopback HTTP included)."""
    from voicecall_trio.testing.chat import tokens

    per_call = 50  # the journal keeps a call's last 50 turns
    out: dict[str, Any] = {}
    for name, first_token_s, token_s, turns in (("instant", 0.0, 0.0, instant_turns),
                                                ("delayed", 0.3, 0.02, delayed_turns)):
        samples: list[dict[str, Any]] = []
        url, stop = _fake_llm(first_token_s, token_s)
        try:
            for _ in range(runs):
                calls = max(1, -(-turns // per_call))
                script = [f"Line {i} from the callee." for i in range(min(turns, per_call))]
                daemon = Daemon({"responseBaseUrl": url, "maxDurationSeconds": 3600,
                                 "mock": {**INSTANT_MOCK, "callerScript": script}}, core=0)
                try:
                    samples += _reply_turns(daemon, calls)
                finally:
                    daemon.stop()
        finally:
            stop()
        figures = _stages(samples)
        provider_ms = (first_token_s + token_s * (len(tokens(REPLY_TEXT)) - 1)) * 1000
        figures["provider_ms"] = round(provider_ms, 1)
        figures["over_provider_p50_ms"] = round(figures["total_p50_ms"] - provider_ms, 2)
        figures["over_provider_p99_ms"] = round(figures["total_p99_ms"] - provider_ms, 2)
        out[name] = figures
    return out


# -- where a webhook's time goes ------------------------------------------------------------

TWILIO_DAEMON = {"provider": "twilio", "fromNumber": "+15550001234",
                 "twilio": {"accountSid": TWILIO_SID, "authToken": TWILIO_TOKEN,
                            "apiBaseUrl": "http://127.0.0.1:9"},
                 "webhookSecurity": {"maxInFlightPerIp": 1000}}

IDLE = "waiting in epoll (idle, not counted)"
# (label, test on "file:function" as pstats names it); the first that matches wins
LAYERS: list[tuple[str, Any]] = [
    (IDLE, lambda k: "'poll' of 'select.epoll'" in k),
    ("kernel: socket send/recv", lambda k: "_socket.socket" in k),
    ("HMAC / SHA (OpenSSL)", lambda k: "_hashlib" in k or "/hmac.py" in k
     or "/hashlib.py" in k),
    ("Twilio module: signature, parsing, handling", lambda k: "/voicecall_trio/providers/" in k),
    ("HTTP front: socket loop, head parser, responses",
     lambda k: "/voicecall_trio/front" in k or "/voicecall_trio/http1.py" in k),
    ("webhook gate (checks, FIFO turnstile)", lambda k: "/voicecall_trio/web.py" in k),
    ("daemon core: supervisor, events, journal", lambda k: "/voicecall_trio/" in k),
    ("trio: scheduler, waits, locks", lambda k: "/trio/" in k),
    ("Hypercorn / Quart / h11", lambda k: any(x in k for x in ("/hypercorn/", "/quart/",
                                                               "/h11/", "/werkzeug/"))),
    ("urllib (percent-decoding)", lambda k: "/urllib/" in k),
    ("builtins (str, bytes, dict methods) called from the above", lambda k: k.startswith("~")),
]


def _layer_seconds(profile: Path) -> dict[str, float]:
    import pstats

    out: dict[str, float] = {}
    for (filename, _, function), row in pstats.Stats(str(profile)).stats.items():  # type: ignore[attr-defined]
        key = f"{filename}:{function}"
        label = next((name for name, test in LAYERS if test(key)), "other Python and builtins")
        out[label] = out.get(label, 0.0) + row[2]  # own time
    return out


def _profiled_run(requests: int) -> dict[str, float]:
    out = Path(tempfile.mkdtemp(prefix="vcprof")) / "daemon.prof"
    daemon = Daemon(TWILIO_DAEMON, core=0, python_args=("-m", "cProfile", "-o", str(out)))
    try:
        if requests:
            run_loadgen(daemon, 50, requests)
    finally:
        daemon.stop()
    try:
        return _layer_seconds(out)
    finally:
        shutil.rmtree(out.parent, ignore_errors=True)


def profile_webhooks(requests: int) -> dict[str, Any]:
    """Own time per layer under cProfile, per webhook: a loaded run minus an idle one.

    cProfile slows Python code several times over and C calls hardly at all, so the shares
    say where the time goes, not what each layer costs without the profiler.
    """
    loaded = _profiled_run(requests)
    idle = _profiled_run(0)  # start-up, imports and shutdown, to subtract
    per_request = {k: (v - idle.get(k, 0.0)) / requests * 1e6 for k, v in loaded.items()}
    idle_us = per_request.pop(IDLE, 0.0)
    per_request = {k: v for k, v in per_request.items() if v > 0.5}
    total = sum(per_request.values())
    layers = sorted(per_request.items(), key=lambda kv: -kv[1])
    return {"requests": requests, "connections": 50,
            "profiled_us_per_request": round(total), "idle_us_per_request": round(idle_us),
            "layers": [{"layer": k, "us": round(v, 1), "share": round(v / total, 3)}
                       for k, v in layers]}


# -- report ------------------------------------------------------------------------------------


def table(results: dict[str, Any]) -> str:
    rows = [("figure", "value", "budget")]
    if "rpc" in results:
        r = results["rpc"]
        rows += [("RPC round trip p50", f"{r['p50_ms']:.3f} ms", ""),
                 ("RPC round trip p99", f"{r['p99_ms']:.3f} ms", "<= 1 ms")]
    if "cli" in results:
        r = results["cli"]
        rows += [("`voicecall status` cold start (median of 10)",
                  f"{r['status_cold_start_median_ms']:.1f} ms", "<= 100 ms")]
    if "journal" in results:
        r = results["journal"]
        rows += [("journal appends/s (batched, group fsync)", f"{r['appends_per_s_batched']:,}",
                  ""),
                 ("journal appends/s (each awaited to fsync)",
                  f"{r['appends_per_s_each_fsynced']:,}", "")]
    if "replay" in results:
        r = results["replay"]
        rows += [(f"replay of {r['lines']:,} lines ({r['bytes'] / 1e6:.1f} MB)",
                  f"{r['replay_s_median']:.3f} s", "<= 1 s")]
    if "webhooks" in results:
        r = results["webhooks"]
        for c in ("c1", "c50"):
            if c in r:
                n = c[1:]
                rows += [(f"signed webhooks/s, {n} connection(s)", f"{r[c]['rps']:,}", ""),
                         (f"signed webhook p50 / p99, {n} connection(s)",
                          f"{r[c]['p50_ms']} / {r[c]['p99_ms']} ms",
                          "p99 <= 20 ms" if n == "50" else ""),
                         (f"server CPU per webhook, {n} connection(s)",
                          f"{r[c]['server_cpu_us_per_request']} us", "")]
        if "rss" in r:
            rows += [(f"RSS growth over {r['rss']['requests']:,} webhooks",
                      f"{r['rss']['growth_mb']} MB ({r['rss']['before_mb']} -> "
                      f"{r['rss']['after_mb']} MB)", "<= 10 MB")]
    if "calls" in results:
        r = results["calls"]
        rows += [("reply overhead: final transcript -> reply spoken (instant agent) p50 / p99",
                  f"{r['reply_overhead_p50_ms']} / {r['reply_overhead_p99_ms']} ms", ""),
                 ("RSS idle", f"{r['rss_idle_mb']} MB", ""),
                 (f"RSS per live call ({r['held_calls']} held)", f"{r['rss_per_call_kb']} KB",
                  "")]
    if "replies" in results:
        r = results["replies"]
        if "instant" in r:
            i = r["instant"]
            rows += [(f"built-in reply, instant fake LLM: caller stopped -> first audio out "
                      f"p50 / p99 ({i['turns']} turns, mock)",
                      f"{i['total_p50_ms']} / {i['total_p99_ms']} ms", ""),
                     ("  the same less the fake's request -> first token (loopback HTTP)",
                      f"{i['own_p50_ms']} / {i['own_p99_ms']} ms", "p99 <= 5 ms")]
        if "delayed" in r:
            d = r["delayed"]
            rows += [(f"built-in reply, fake LLM 300 ms to first token + 20 ms/token: caller "
                      f"stopped -> first audio out p50 / p99 ({d['turns']} turns, mock)",
                      f"{d['total_p50_ms']} / {d['total_p99_ms']} ms", ""),
                     (f"  over the provider's own {d['provider_ms']:.0f} ms (whole reply: "
                      "mock speaks it at once)",
                      f"{d['over_provider_p50_ms']} / {d['over_provider_p99_ms']} ms",
                      "<= 20 ms")]
    if "profile" in results:
        r = results["profile"]
        rows.append((f"profiled webhook, by layer (cProfile, {r['connections']} connections)",
                     f"{r['profiled_us_per_request']} us under the profiler", ""))
        rows += [(f"  {x['layer']}", f"{x['share']:.0%}", "") for x in r["layers"]]
    width = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = ["| " + " | ".join(cell.ljust(width[i]) for i, cell in enumerate(row)) + " |"
             for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in width) + "|")
    return "\n".join(lines)


def pin_self(core: int) -> None:
    """Keep the measuring process off the daemon's core (the daemon is pinned to core 0)."""
    if (os.cpu_count() or 1) > 1 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {core})


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only",
                        default="rpc,cli,journal,replay,webhooks,calls,replies,profile,media")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--loadgen", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--connections", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--requests", type=int, default=1000, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.loadgen:
        loadgen_main(args)
        return 0
    only = set(args.only.split(","))
    quick = args.quick
    pin_self(1)
    runs = 1 if quick else args.runs
    results: dict[str, Any] = {}
    if "rpc" in only:
        results["rpc"] = bench_rpc(runs, 500 if quick else 5000)
    if "cli" in only:
        results["cli"] = bench_cli(runs)
    if "journal" in only:
        results["journal"] = bench_journal(runs, 5000 if quick else 50_000)
    if "replay" in only:
        results["replay"] = bench_replay(runs, 10_000 if quick else 100_000)
    if "webhooks" in only:
        results["webhooks"] = bench_webhooks(runs, 1000 if quick else 5000,
                                             5000 if quick else 100_000)
    if "calls" in only:
        results["calls"] = bench_calls(runs, 20 if quick else 100, 20 if quick else 100)
    if "replies" in only:
        results["replies"] = bench_replies(runs, 50 if quick else 200, 10 if quick else 50)
    if "profile" in only:
        results["profile"] = profile_webhooks(2000 if quick else 20_000)
    if "media" in only:
        import bench_media

        results["media"] = bench_media.bench_media(runs, quick)
    results["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "taskset": bool(TASKSET), "runs": runs}
    print(json.dumps(results, indent=2))
    print()
    media = results.pop("media", None)
    if len(results) > 1:
        print(table(results))
    if media is not None:
        print(bench_media.render(bench_media.table_rows(media)))
    if not args.no_write and not quick:
        if len(results) > 1:
            write_doc(results)
        if media is not None:
            bench_media.write_section(media, results["machine"],
                                      "./scripts/bench " + " ".join(sys.argv[1:]))
    return 0


def write_doc(results: dict[str, Any]) -> None:
    doc = ROOT / "docs" / "benchmarks.md"
    text = doc.read_text() if doc.exists() else ""
    marker = "<!-- bench:results -->"
    block = (f"{marker}\nMeasured {time.strftime('%Y-%m-%d')} with `./scripts/bench` "
             f"({results['machine']['cpus']} cores, Python {results['machine']['python']}, "
             f"median of {results['machine']['runs']} runs):\n\n{table(results)}\n\n"
             f"<details><summary>JSON</summary>\n\n```json\n{json.dumps(results, indent=2)}\n"
             f"```\n</details>\n{marker}")
    if marker in text:
        head, _, rest = text.partition(marker)
        _, _, tail = rest.partition(marker)
        text = head + block + tail
    else:
        text = text + "\n" + block + "\n"
    doc.write_text(text)


if __name__ == "__main__":
    sys.exit(main())

