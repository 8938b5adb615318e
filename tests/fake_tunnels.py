"""Fake ``ngrok`` and ``tailscale`` executables for tunnel tests (no network, no real agent).

``FakeTunnels(tmp)`` writes both into ``tmp/bin`` (Python scripts run by this interpreter)
and keeps their control files in ``tmp``; ``env()`` is an environment with that directory
first on ``PATH``. The fakes record every run (argv, the auth token they were given, their
pid) and do what the test scripted:

- ``ngrok``: run N prints ``script[N]["lines"]`` (the last entry repeats) and its ``raw``
  text (no newline added), writes its ``stderr``, then exits with ``exit`` or waits for a
  signal; SIGTERM is recorded (``stopped``) and ends it with status 0. ``kill(run)`` ends a
  run at once (a crash).
- ``tailscale``: ``status --json`` prints ``{"Self": {"DNSName": dns}}``; any other command
  line succeeds unless ``fail[<subcommand>]`` names the stderr to fail with.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

NGROK = r'''
import json, os, signal, sys
d = os.environ["FAKE_TUNNEL_DIR"]
with open(os.path.join(d, "ngrok-runs.jsonl"), "a") as f:
    f.write(json.dumps({"argv": sys.argv[1:], "token": os.environ.get("NGROK_AUTHTOKEN"),
                        "pid": os.getpid()}) + "\n")
with open(os.path.join(d, "ngrok-runs.jsonl")) as f:
    run = len(f.read().splitlines()) - 1
with open(os.path.join(d, "ngrok.json")) as f:
    script = json.load(f)
step = script[min(run, len(script) - 1)]
def stopped(signum, frame):
    with open(os.path.join(d, "ngrok-stopped"), "a") as f:
        f.write(f"{os.getpid()}\n")
    sys.exit(0)
signal.signal(signal.SIGTERM, stopped)
for line in step.get("lines", []):
    print(line, flush=True)
sys.stdout.write(step.get("raw", ""))  # a last line without its newline
sys.stdout.flush()
sys.stderr.write(step.get("stderr", ""))
sys.stderr.flush()
if step.get("exit") is not None:
    sys.exit(step["exit"])
while True:
    signal.pause()
'''

TAILSCALE = r'''
import json, os, sys
d = os.environ["FAKE_TUNNEL_DIR"]
with open(os.path.join(d, "tailscale-calls.jsonl"), "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\n")
with open(os.path.join(d, "tailscale.json")) as f:
    conf = json.load(f)
args = sys.argv[1:]
if args[:2] == ["status", "--json"]:
    print(json.dumps({"BackendState": "Running", "Self": {"DNSName": conf["dns"],
                                                            "HostName": "box"}}))
    sys.exit(0)
failure = conf.get("fail", {}).get(args[0] if args else "")
if failure and "off" not in args:
    sys.stderr.write(failure + "\n")
    sys.exit(1)
print("Available on the internet:" if args and args[0] == "funnel" else "ok")
'''


def ngrok_started(url: str) -> str:
    """The JSON log line the real agent prints once the tunnel is up."""
    return json.dumps({"t": "2026-12-01T12:00:00+0000", "lvl": "info", "msg": "started tunnel",
                       "obj": "tunnels", "name": "command_line",
                       "addr": "http://127.0.0.1:3334", "url": url})


def ngrok_line(**fields: Any) -> str:
    return json.dumps({"t": "2026-12-01T12:00:00+0000", **fields})


class FakeTunnels:
    def __init__(self, root: Path, *, ngrok: bool = True, tailscale: bool = True) -> None:
        self.root = root
        self.bin = root / "bin"
        self.bin.mkdir(parents=True, exist_ok=True)
        for name, body, wanted in (("ngrok", NGROK, ngrok), ("tailscale", TAILSCALE, tailscale)):
            if wanted:
                path = self.bin / name
                path.write_text(f"#!{sys.executable}\n{body}")
                path.chmod(0o755)
        self.script_ngrok([{"lines": [ngrok_started("https://first.ngrok-free.app")]}])
        self.script_tailscale(dns="box.tail1234.ts.net.")

    def env(self, base: dict[str, str] | None = None, *, path: str | None = None
            ) -> dict[str, str]:
        env = dict(os.environ if base is None else base)
        env["PATH"] = f"{self.bin}:{path if path is not None else env.get('PATH', '')}"
        env["FAKE_TUNNEL_DIR"] = str(self.root)
        env["HOME"] = str(self.root / "home")
        return env

    def script_ngrok(self, runs: list[dict[str, Any]]) -> None:
        (self.root / "ngrok.json").write_text(json.dumps(runs))

    def script_tailscale(self, *, dns: str, fail: dict[str, str] | None = None) -> None:
        (self.root / "tailscale.json").write_text(json.dumps({"dns": dns, "fail": fail or {}}))

    def ngrok_runs(self) -> list[dict[str, Any]]:
        path = self.root / "ngrok-runs.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]

    def ngrok_stopped(self) -> list[int]:
        path = self.root / "ngrok-stopped"
        return [int(x) for x in path.read_text().split()] if path.exists() else []

    def kill(self, run: int) -> None:
        """End ngrok run ``run`` at once, as a crash would (SIGKILL)."""
        os.kill(self.ngrok_runs()[run]["pid"], signal.SIGKILL)

    def tailscale_calls(self) -> list[list[str]]:
        path = self.root / "tailscale-calls.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]
