"""Soak: minutes of mixed load on a real daemon while abusive clients try to wear it down.

    ./scripts/soak                      # 2 minutes; JSON and a table on stdout
    ./scripts/soak --minutes 10 --rate 300
    ./scripts/soak --write              # also record the figures in docs/benchmarks.md

What runs, all on loopback, for ``--minutes``:

- a real ``voicecall serve`` (Twilio provider) whose REST API is a ``FakeTwilio`` in this
  process, which also plays the carrier for the calls placed (signed status callbacks and
  TwiML fetches through a simulated tunnel);
- correctly signed Twilio status callbacks at ``--rate`` per second over a few keep-alive
  connections, each timed;
- calls placed and ended over JSON-RPC, back to back (refusals at ``maxConcurrentCalls`` are
  counted, not errors);
- abusive clients, each a bounded number of connections re-opened whenever the daemon drops
  them: slowloris heads, junk webhooks whose body never finishes, idle connections, random
  bytes, and an RPC client that writes requests and never reads its replies;
- a sampler: the daemon's RSS and open descriptors, and a ``daemon.health`` round trip on a
  fresh connection, every two seconds.

It reports latencies (p50/p99/max), RSS and fd counts over time, how long the daemon let
abusive connections live, and every error (a webhook answered other than 200, an RPC error
other than the concurrency limit, a health check over 1 s). Exit status 1 if there was any.
Every loop is bounded by the run's deadline and stops by itself.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # the same Daemon, signing and /proc helpers as the benchmarks

from voicecall_trio.rpc.aclient import TrioClient
from voicecall_trio.rpc.protocol import RpcError
from voicecall_trio.testing.fake_twilio import FakeTwilio

PUBLIC = "https://soak.example.com/voice/webhook"
FROM = "+15550001234"
HEALTH_BUDGET_S = 1.0
SAMPLE_EVERY_S = 2.0
ABUSERS = {"slowloris": 20, "junk_body": 64, "idle": 100, "garbage": 4}


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.deadline = 0.0
        self.errors: list[str] = []
        self.webhook_ms: list[float] = []
        self.statuses: Counter[int] = Counter()
        self.calls = Counter[str]()
        self.rpc_ms: list[float] = []
        self.health_ms: list[float] = []
        self.samples: list[dict[str, Any]] = []
        self.abuse: dict[str, Counter[str]] = {name: Counter() for name in ABUSERS}
        self.abuse_life: dict[str, float] = dict.fromkeys(ABUSERS, 0.0)
        self.rpc_flood = Counter[str]()
        self.daemon: bench.Daemon | None = None
        self.http: tuple[str, int] = ("127.0.0.1", 0)

    def error(self, text: str) -> None:
        if len(self.errors) < 200:
            self.errors.append(f"{time.strftime('%H:%M:%S')} {text}")

    @property
    def running(self) -> bool:
        return trio.current_time() < self.deadline

    # -- the run ------------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        fake = FakeTwilio(account_sid=bench.TWILIO_SID, auth_token=bench.TWILIO_TOKEN,
                          phone_number=FROM, voice_url=PUBLIC, time_scale=0.02)
        async with fake:
            config = {"provider": "twilio", "fromNumber": FROM, "publicUrl": PUBLIC,
                      "twilio": {"accountSid": bench.TWILIO_SID,
                                 "authToken": bench.TWILIO_TOKEN, "apiBaseUrl": fake.url},
                      "maxConcurrentCalls": 4, "outbound": {"notifyHangupDelaySec": 0.2}}
            self.daemon = await trio.to_thread.run_sync(lambda: bench.Daemon(config, core=0))
            try:
                base = self.daemon.http_base.removeprefix("http://")
                host, port = base.rsplit(":", 1)
                self.http = (host, int(port))
                fake.tunnel(PUBLIC, f"http://{base}/voice/webhook")
                self.deadline = trio.current_time() + self.args.minutes * 60
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self.sampler)
                    for lane in range(4):
                        nursery.start_soon(self.webhooks, lane, self.args.rate / 4)
                    for _ in range(2):
                        nursery.start_soon(self.place_calls)
                    for name, count in ABUSERS.items():
                        for _ in range(count):
                            nursery.start_soon(self.abuser, name)
                    nursery.start_soon(self.rpc_never_reads)
                await self.sample()
            finally:
                await trio.to_thread.run_sync(self.daemon.stop)
        return self.report()

    # -- load ---------------------------------------------------------------------------------

    async def webhooks(self, lane: int, rate: float) -> None:
        """Signed status callbacks at ``rate``/s on one keep-alive connection (re-opened)."""
        pool = bench.build_signed_requests(PUBLIC, 2000, "soak.example.com")
        interval, next_at, i = 1 / rate, trio.current_time(), 0
        stream: trio.SocketStream | None = None
        buffer = b""
        while self.running:
            await trio.sleep_until(next_at)
            next_at += interval
            if stream is None:
                stream = await trio.open_tcp_stream(*self.http)
                buffer = b""
            request = pool[(i * 4 + lane) % len(pool)]
            i += 1
            started = trio.current_time()
            try:
                with trio.fail_after(5):
                    await stream.send_all(request)
                    status, buffer = await _read_response(stream, buffer)
            except (trio.TooSlowError, OSError, trio.BrokenResourceError, EOFError) as exc:
                self.error(f"webhook lane {lane}: {type(exc).__name__} {exc}")
                await stream.aclose()
                stream = None
                continue
            self.webhook_ms.append((trio.current_time() - started) * 1000)
            self.statuses[status] += 1
            if status != 200:
                self.error(f"webhook answered {status}")
        if stream is not None:
            await stream.aclose()

    async def place_calls(self) -> None:
        """Place a call, let it run a moment, end it; again until the deadline."""
        assert self.daemon is not None
        client = await TrioClient.connect(self.daemon.socket)
        async with trio.open_nursery() as nursery:
            await nursery.start(client.run)
            n = 0
            while self.running:
                n += 1
                mode = "conversation" if n % 2 else "notify"
                to = f"+1555{random.randrange(10**6, 10**7)}"
                try:
                    started = trio.current_time()
                    with trio.fail_after(10):
                        result = await client.call("voicecall.initiate",
                                                   {"to": to, "message": "Soak call.",
                                                    "mode": mode})
                    self.rpc_ms.append((trio.current_time() - started) * 1000)
                    self.calls["placed"] += 1
                    await trio.sleep(random.uniform(0.2, 1.5))
                    with trio.fail_after(15):
                        await client.call("voicecall.end", {"callId": result["callId"]})
                    self.calls["ended"] += 1
                except RpcError as exc:
                    if exc.code == -32003:  # maxConcurrentCalls: expected under load
                        self.calls["refused at the limit"] += 1
                        await trio.sleep(0.2)
                    else:
                        self.calls["errors"] += 1
                        self.error(f"rpc {exc.code}: {exc.message}")
                except trio.TooSlowError:
                    self.calls["errors"] += 1
                    self.error("rpc call took over its bound")
            nursery.cancel_scope.cancel()
        await client.aclose()

    # -- abuse --------------------------------------------------------------------------------

    async def abuser(self, kind: str) -> None:
        """One abusive connection at a time, re-opened whenever the daemon closes it."""
        await trio.sleep(random.uniform(0, 2))  # don't arrive all in the same instant
        stats = self.abuse[kind]
        while self.running:
            try:
                stream = await trio.open_tcp_stream(*self.http)
            except OSError:
                stats["connect failed"] += 1
                await trio.sleep(0.5)
                continue
            stats["opened"] += 1
            opened = trio.current_time()
            with trio.move_on_at(self.deadline):
                try:
                    await self._abuse(kind, stream)
                    stats["closed by the daemon"] += 1
                except (trio.BrokenResourceError, OSError):
                    stats["reset by the daemon"] += 1
            self.abuse_life[kind] = max(self.abuse_life[kind], trio.current_time() - opened)
            await stream.aclose()
            await trio.sleep(0.2)

    async def _abuse(self, kind: str, stream: trio.SocketStream) -> None:
        """Misbehave until the daemon closes the connection (returns) or resets it."""
        if kind == "slowloris":
            await stream.send_all(b"POST /voice/webhook HTTP/1.1\r\nHost: soak\r\n")
            while True:
                await stream.send_all(b"X")
                with trio.move_on_after(2):
                    if await stream.receive_some() == b"":
                        return
        if kind == "junk_body":
            await stream.send_all(b"POST /voice/webhook HTTP/1.1\r\nHost: soak\r\n"
                                  b"X-Twilio-Signature: junk\r\nContent-Length: 1000\r\n\r\n"
                                  b"From=%2B1")
        elif kind == "garbage":
            await stream.send_all(os.urandom(random.randrange(1, 600)))
        while await stream.receive_some():
            pass  # idle, or whatever the daemon answered: wait for it to close

    async def rpc_never_reads(self) -> None:
        """Write status requests and never read a reply: the daemon must stop reading us."""
        assert self.daemon is not None
        sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
        await sock.connect(os.fspath(self.daemon.socket))
        stream = trio.SocketStream(sock)
        line = b'{"jsonrpc":"2.0","id":1,"method":"voicecall.status","params":{}}\n' * 100
        with trio.move_on_at(self.deadline):
            try:
                while True:
                    with trio.move_on_after(5) as stalled:
                        await stream.send_all(line)
                        self.rpc_flood["requests written"] += 100
                    if stalled.cancelled_caught:
                        self.rpc_flood["writes blocked (backpressure)"] += 1
                        await trio.sleep(5)
            except (trio.BrokenResourceError, OSError):
                self.rpc_flood["dropped by the daemon"] += 1
        await stream.aclose()

    # -- sampling -----------------------------------------------------------------------------

    async def sampler(self) -> None:
        while self.running:
            await self.sample()
            await trio.sleep(SAMPLE_EVERY_S)

    async def sample(self) -> None:
        assert self.daemon is not None
        pid = self.daemon.proc.pid
        started = trio.current_time()
        try:
            with trio.fail_after(5):
                client = await TrioClient.connect(self.daemon.socket)
                async with trio.open_nursery() as nursery:
                    await nursery.start(client.run)
                    await client.call("daemon.health")
                    nursery.cancel_scope.cancel()
                await client.aclose()
            took = trio.current_time() - started
            self.health_ms.append(took * 1000)
            if took > HEALTH_BUDGET_S:
                self.error(f"daemon.health took {took:.2f} s")
        except (trio.TooSlowError, OSError, RpcError) as exc:
            self.error(f"daemon.health failed: {type(exc).__name__} {exc}")
        try:
            fds = len(os.listdir(f"/proc/{pid}/fd"))
            rss = bench.rss_mb(pid)
        except OSError:
            return
        self.samples.append({"t_s": round(self.args.minutes * 60 - (self.deadline - started)),
                             "rss_mb": round(rss, 1), "fds": fds})

    # -- results ------------------------------------------------------------------------------

    def report(self) -> dict[str, Any]:
        def lat(values: list[float]) -> dict[str, float]:
            if not values:
                return {}
            return {"count": len(values), "p50_ms": round(bench.pct(values, 50), 2),
                    "p99_ms": round(bench.pct(values, 99), 2), "max_ms": round(max(values), 2)}

        rss = [s["rss_mb"] for s in self.samples]
        fds = [s["fds"] for s in self.samples]
        return {
            "minutes": self.args.minutes,
            "webhook_rate_per_s": self.args.rate,
            "signed_webhooks": {**lat(self.webhook_ms),
                                "statuses": {str(k): v for k, v in self.statuses.items()}},
            "health_rpc": lat(self.health_ms),
            "calls": {**dict(self.calls), "initiate": lat(self.rpc_ms)},
            "rss_mb": {"first": rss[0] if rss else None, "max": max(rss, default=None),
                       "last": rss[-1] if rss else None,
                       "median": statistics.median(rss) if rss else None},
            "fds": {"first": fds[0] if fds else None, "max": max(fds, default=None),
                    "last": fds[-1] if fds else None},
            "abuse": {kind: {**dict(stats), "longest_life_s": round(self.abuse_life[kind], 1)}
                      for kind, stats in self.abuse.items()},
            "rpc_never_reads": dict(self.rpc_flood),
            "samples": self.samples,
            "errors": self.errors,
        }


async def _read_response(stream: trio.SocketStream, buffer: bytes) -> tuple[int, bytes]:
    """One HTTP response with a Content-Length body: (status, bytes left over)."""
    while (end := buffer.find(b"\r\n\r\n")) < 0:
        data = await stream.receive_some()
        if not data:
            raise EOFError("connection closed before a response")
        buffer += data
    head = buffer[:end].decode("latin-1").split("\r\n")
    length = 0
    for line in head[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    while len(buffer) < end + 4 + length:
        data = await stream.receive_some()
        if not data:
            raise EOFError("connection closed inside a response")
        buffer += data
    return int(head[0].split(" ", 2)[1]), buffer[end + 4 + length:]


def table(result: dict[str, Any]) -> str:
    w, h, c = result["signed_webhooks"], result["health_rpc"], result["calls"]
    rows = [
        ("duration, webhook rate", f"{result['minutes']} min, {result['webhook_rate_per_s']}/s"),
        ("signed webhooks answered", f"{w.get('count', 0):,} (statuses {w['statuses']})"),
        ("signed webhook p50 / p99 / max",
         f"{w.get('p50_ms')} / {w.get('p99_ms')} / {w.get('max_ms')} ms"),
        ("daemon.health (new connection) p50 / p99 / max",
         f"{h.get('p50_ms')} / {h.get('p99_ms')} / {h.get('max_ms')} ms"),
        ("calls placed / ended / refused at limit / errors",
         f"{c.get('placed', 0)} / {c.get('ended', 0)} / {c.get('refused at the limit', 0)}"
         f" / {c.get('errors', 0)}"),
        ("initiate p50 / p99", f"{c['initiate'].get('p50_ms')} / {c['initiate'].get('p99_ms')} ms"),
        ("RSS first / max / last", "{first} / {max} / {last} MB".format(**result["rss_mb"])),
        ("open fds first / max / last", "{first} / {max} / {last}".format(**result["fds"])),
    ]
    for kind, stats in result["abuse"].items():
        rows.append((f"abuse: {kind} ({ABUSERS[kind]} at a time)",
                     f"{stats.get('opened', 0)} opened, longest lived "
                     f"{stats['longest_life_s']} s"))
    flood = result["rpc_never_reads"]
    rows.append(("abuse: RPC client that never reads",
                 f"{flood.get('requests written', 0):,} requests written, "
                 f"{flood.get('writes blocked (backpressure)', 0)} blocked writes, "
                 f"dropped: {flood.get('dropped by the daemon', 0)}"))
    rows.append(("errors", str(len(result["errors"]))))
    width = max(len(r[0]) for r in rows)
    lines = [f"| {'figure':<{width}} | value |", f"|{'-' * (width + 2)}|-------|"]
    lines += [f"| {name:<{width}} | {value} |" for name, value in rows]
    return "\n".join(lines)


def write_doc(result: dict[str, Any], command: str) -> None:
    doc = bench.ROOT / "docs" / "benchmarks.md"
    text = doc.read_text()
    begin, end = "<!-- soak:begin -->", "<!-- soak:end -->"
    section = (f"{begin}\n## Soak\n\nMeasured with `{command}` on {time.strftime('%Y-%m-%d')}"
               f" ({os.cpu_count()} cores). Abusive clients run the whole time; see the "
               f"docstring of scripts/soak.py for what each does.\n\n{table(result)}\n\n"
               f"Samples (seconds into the run: RSS MB, open fds): "
               + ", ".join(f"{s['t_s']}: {s['rss_mb']}/{s['fds']}"
                           for s in result["samples"][:: max(1, len(result["samples"]) // 12)])
               + f"\n{end}")
    if begin in text:
        head, rest = text.split(begin, 1)
        text = head + section + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    doc.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--rate", type=float, default=200.0, help="signed webhooks per second")
    parser.add_argument("--write", action="store_true", help="record in docs/benchmarks.md")
    args = parser.parse_args()
    bench.pin_self(1)
    result = trio.run(Soak(args).run)
    print(json.dumps(result, indent=2))
    print()
    print(table(result))
    if args.write:
        write_doc(result, "./scripts/soak " + " ".join(sys.argv[1:]))
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
