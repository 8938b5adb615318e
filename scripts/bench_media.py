"""The media-stream benchmarks (issue #10, item 10): scenarios, medians, the docs section.

    ./scripts/bench --only media --runs 3

Each run is its own load process (``bench_media_load.py``, pinned to core 1), which starts
a real ``voicecall serve`` on core 0 against the fakes it holds, so every run begins from a
fresh daemon. Three configurations: caller audio from 50 and from 200 paced calls (CPU per
frame forwarded to the STT, send -> append latency, frames lost, RSS per streamed call), and
100 calls speaking at once (outbound pacing jitter, ``speech_started`` -> ``clear``, stream
``start`` -> first greeting frame). Figures are medians over the runs; frames lost or altered
are summed. ``write_section`` rewrites the "Media streams" section of docs/benchmarks.md
(between its own markers, so ``--only media`` leaves the other figures alone).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SCRIPTS = Path(__file__).resolve().parent
ROOT = SCRIPTS.parent
LOAD = SCRIPTS / "bench_media_load.py"
MARKER = "<!-- bench:media -->"
SUMMED = {"frames_lost", "frames_bad", "late_frames", "pacer_restarts", "streams_closed_early",
          "generator_blocked_sends", "turns_without_reply"}
RUN_TIMEOUT_S = 600

#: (name, load arguments); quick runs shrink them
CONFIGS: list[tuple[str, list[str]]] = [
    ("inbound_50", ["--scenario", "inbound", "--calls", "50", "--seconds", "20"]),
    ("inbound_200", ["--scenario", "inbound", "--calls", "200", "--seconds", "20"]),
    ("speaking_100", ["--scenario", "speaking", "--calls", "100"]),
]
#: issue #11's stream figure, once the built-in replies and their fake are there
REPLIES = [("replies_20", ["--scenario", "replies", "--calls", "20", "--turns", "5"]),
           ("replies_delayed_10", ["--scenario", "replies", "--calls", "10", "--turns", "5",
                                   "--delayed"])]
QUICK: dict[str, list[str]] = {
    "replies_20": ["--scenario", "replies", "--calls", "4", "--turns", "2"],
    "replies_delayed_10": ["--scenario", "replies", "--calls", "2", "--turns", "2",
                           "--delayed"],
    "inbound_50": ["--scenario", "inbound", "--calls", "10", "--seconds", "4", "--warmup", "2"],
    "inbound_200": ["--scenario", "inbound", "--calls", "20", "--seconds", "4", "--warmup", "2"],
    "speaking_100": ["--scenario", "speaking", "--calls", "10", "--barge-in-s", "2"],
}


QUIET_CORES = 0.5  # other processes' CPU (in cores) under which the machine counts as quiet
QUIET_WAIT_S = 60.0  # the longest a run waits for a quiet machine before it goes anyway


def wait_quiet(limit_s: float = QUIET_WAIT_S) -> float:
    """Wait (bounded) until the other processes on this shared box use under ``QUIET_CORES``
    over a 2 s sample: the figures are about the daemon, not the neighbours. Returns the
    last sample, in cores."""
    from bench_media_load import machine_busy_s

    deadline = time.monotonic() + limit_s
    while True:
        busy0, wall0 = machine_busy_s(), time.monotonic()
        time.sleep(2.0)
        busy = (machine_busy_s() - busy0) / (time.monotonic() - wall0)
        if busy < QUIET_CORES or time.monotonic() > deadline:
            return round(busy, 2)


def run_load(arguments: list[str]) -> dict[str, Any]:
    """One load process, once the machine is quiet (or has not been for 60 s); its
    JSON result, with the CPU others used just before it started."""
    from bench import pinned

    before = wait_quiet()

    done = subprocess.run(pinned([sys.executable, str(LOAD), *arguments], 1),
                          capture_output=True, text=True, timeout=RUN_TIMEOUT_S, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"media load {' '.join(arguments)} failed:\n{done.stderr[-4000:]}")
    result = dict(json.loads(done.stdout.strip().splitlines()[-1]))
    result["others_cpu_cores_before"] = before
    return result


def combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians of numbers (recursively through dicts); ``SUMMED`` counts are summed."""
    out: dict[str, Any] = {}
    for key, first in runs[0].items():
        values = [r[key] for r in runs if key in r]
        if key in SUMMED:
            out[key] = sum(values)
        elif isinstance(first, dict):
            out[key] = combine(values)
        elif isinstance(first, list):  # e.g. protocol errors: every distinct one
            out[key] = sorted({str(x) for v in values for x in v})
        elif isinstance(first, bool) or not isinstance(first, int | float):
            out[key] = first
        else:
            if all(isinstance(v, int) for v in values):  # counts stay whole numbers
                out[key] = statistics.median_low(values)
                continue
            median = statistics.median(values)
            out[key] = round(median, 3) if isinstance(median, float) else median
    return out


def has_replies() -> bool:
    import importlib.util

    return importlib.util.find_spec("voicecall_trio.testing.chat") is not None


def bench_media(runs: int, quick: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, arguments in [*CONFIGS, *(REPLIES if has_replies() else [])]:
        samples = [run_load(QUICK[name] if quick else arguments) for _ in range(runs)]
        out[name] = combine(samples)
        out[name]["runs"] = len(samples)
        out[name]["per_run"] = [_headline(name, s) for s in samples]
    return out


def _headline(name: str, run: dict[str, Any]) -> dict[str, Any]:
    """The figures of one run worth seeing beside the medians."""
    if name.startswith("inbound"):
        return {"cpu_us_per_frame": run["cpu_us_per_frame"],
                "latency_p99_ms": run["latency"]["p99_ms"], "frames_lost": run["frames_lost"]}
    if name.startswith("replies"):
        return {"final_to_first_audio_p99_ms": run["final_to_first_audio"]["p99_ms"],
                "turns_without_reply": run["turns_without_reply"]}
    return {"jitter_p99_ms": run["pacing_jitter"]["p99_ms"],
            "clear_p99_ms": run["speech_started_to_clear"]["p99_ms"],
            "first_frame_p99_ms": run["start_to_first_frame"]["p99_ms"]}


def _rss_per_call_kb(r: dict[str, Any]) -> float:
    return round((r["rss_loaded_mb"] - r["rss_idle_mb"]) * 1024 / r["calls"], 1)


def _others(r: dict[str, Any]) -> str:
    """The neighbours' CPU (this box is shared): during the window and just before it."""
    during, before = r.get("others_cpu_cores"), r.get("others_cpu_cores_before")
    return f"{during} cores (before the run: {before})"


def _gc(r: dict[str, Any]) -> str:
    gc = r.get("daemon_gc")
    if not gc:
        return "-"
    full = gc["gen2"]
    return f"{full['n']}, {full['p50_ms']} / {full['max_ms']} ms"


def table_rows(media: dict[str, Any]) -> list[tuple[str, str, str]]:
    rows: list[tuple[str, str, str]] = []
    for name in ("inbound_50", "inbound_200"):
        r = media.get(name)
        if r is None:
            continue
        n, lat = r["calls"], r["latency"]
        rows += [
            (f"daemon CPU per inbound frame forwarded, {n} paced calls",
             f"{r['cpu_us_per_frame']} us", "<= 30 us"),
            (f"frames lost / altered on the way to the STT, {n} calls ({r['runs']} runs)",
             f"{r['frames_lost']} / {r['frames_bad']} of {r['frames_sent']:,} a run", "0"),
            (f"frame in -> append out p50 / p99, {n} calls",
             f"{lat['p50_ms']} / {lat['p99_ms']} ms", "p99 <= 5 ms" if n >= 200 else ""),
            (f"RSS per streamed call ({n} held)", f"{_rss_per_call_kb(r)} KB", ""),
            (f"  load generator at {n} calls: CPU share of its core; send lateness p99",
             f"{r['generator_cpu_share']:.0%}; {r['generator_send_lateness']['p99_ms']} ms",
             "< 70%"),
            (f"  other processes on the box during the window, {n} calls", _others(r), ""),
            (f"  daemon GC at {n} calls: generation-2 collections a run, p50 / max", _gc(r), ""),
        ]
    r = media.get("speaking_100")
    if r is not None:
        n = r["calls"]
        rows += [
            (f"outbound pacing jitter p99 / max, {n} calls speaking at once",
             f"{r['pacing_jitter']['p99_ms']} / {r['pacing_jitter']['max_ms']} ms",
             "p99 <= 5 ms"),
            (f"  pacer restarts (a frame over 20 ms late for playout: a gap heard), {n} calls, "
             f"{r['runs']} runs", str(r["pacer_restarts"]), "0"),
            ("  jitter p99 / max against the pacer's own runs (a restart counted once)",
             f"{r['pacing_jitter_rebased']['p99_ms']} / {r['pacing_jitter_rebased']['max_ms']} ms",
             ""),
            (f"speech_started -> clear p50 / p99, {n} calls",
             f"{r['speech_started_to_clear']['p50_ms']} / "
             f"{r['speech_started_to_clear']['p99_ms']} ms", "p99 <= 20 ms"),
            (f"stream start -> first greeting frame p50 / p99 (instant TTS), {n} calls",
             f"{r['start_to_first_frame']['p50_ms']} / {r['start_to_first_frame']['p99_ms']} ms",
             "<= 100 ms"),
            (f"  load generator while {n} calls speak: CPU share of its core",
             f"{r['generator_cpu_share']:.0%}" if "generator_cpu_share" in r else "-", "< 70%"),
            (f"  other processes on the box while {n} calls speak", _others(r), ""),
            (f"  daemon GC with {n} calls: generation-2 collections a run, p50 / max", _gc(r),
             ""),
        ]
    r = media.get("replies_20")
    if r is not None:
        f = r["final_to_first_audio"]
        rows += [(f"stream call, built-in reply from an instant fake LLM: final transcript -> "
                  f"first audio out p50 / p99 ({r['turns']} turns, {r['calls']} calls)",
                  f"{f['p50_ms']} / {f['p99_ms']} ms", ""),
                 ("  turns with no reply within 10 s", str(r["turns_without_reply"]), "0")]
    r = media.get("replies_delayed_10")
    if r is not None:
        f = r["final_to_first_audio"]
        from bench_media_load import REPLY  # one sentence: it is complete at its last token

        providers = 300 + 20 * (len(REPLY.split()) - 1) + 150
        rows += [(f"stream call, fake LLM 300 ms to first token + 20 ms/token, TTS 150 ms to "
                  f"first byte: final transcript -> first audio out p50 / p99 ({r['turns']} "
                  f"turns)", f"{f['p50_ms']} / {f['p99_ms']} ms",
                  f"providers ~{providers} ms + <= 20 ms")]
    return rows


def render(rows: list[tuple[str, str, str]]) -> str:
    rows = [("figure", "value", "budget"), *rows]
    width = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = ["| " + " | ".join(cell.ljust(width[i]) for i, cell in enumerate(row)) + " |"
             for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in width) + "|")
    return "\n".join(lines)


def write_section(media: dict[str, Any], machine: dict[str, Any], command: str,
                  doc: Path = ROOT / "docs" / "benchmarks.md") -> None:
    """Rewrite the figures between the media markers of docs/benchmarks.md (appended with
    the section heading the first time)."""
    text = doc.read_text() if doc.exists() else ""
    block = (f"{MARKER}\nMeasured {time.strftime('%Y-%m-%d')} with `{command}` "
             f"({machine['cpus']} cores, Python {machine['python']}, median of "
             f"{machine['runs']} runs; the daemon on core 0, the load process on core 1):\n\n"
             f"{render(table_rows(media))}\n\n"
             f"<details><summary>JSON</summary>\n\n```json\n{json.dumps(media, indent=2)}\n"
             f"```\n</details>\n{MARKER}")
    if MARKER in text:
        head, _, rest = text.partition(MARKER)
        _, _, tail = rest.partition(MARKER)
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n## Media streams\n\n" + block + "\n"
    doc.write_text(text)


# -- where a frame's time goes ---------------------------------------------------------------

IDLE = "waiting in epoll (idle, not counted)"
#: (label, test on "file:function" as pstats names it); the first that matches wins
LAYERS: list[tuple[str, Any]] = [
    (IDLE, lambda k: "'poll' of 'select.epoll'" in k),
    ("kernel: socket send/recv", lambda k: "_socket.socket" in k),
    ("WebSocket framing (wsproto, trio-websocket)",
     lambda k: "/wsproto/" in k or "/trio_websocket/" in k),
    ("media route and Twilio stream codec", lambda k: "/voicecall_trio/media/route" in k
     or "/voicecall_trio/media/twilio" in k or "/voicecall_trio/media/stream" in k),
    ("player, pacing, audio", lambda k: "/voicecall_trio/media/" in k
     or "/voicecall_trio/tts/" in k),
    ("STT client (codec, pump)", lambda k: "/voicecall_trio/stt/" in k),
    ("voice session", lambda k: "/voicecall_trio/voice" in k),
    ("HTTP front", lambda k: "/voicecall_trio/front" in k or "/voicecall_trio/http1" in k),
    ("daemon core", lambda k: "/voicecall_trio/" in k),
    ("trio: scheduler, waits, locks", lambda k: "/trio/" in k),
    ("JSON, msgspec, base64", lambda k: "msgspec" in k or "binascii" in k
     or "/base64.py" in k or "/json/" in k),
    ("builtins called from the above", lambda k: k.startswith("~")),
]


def layer_seconds(profile: Path) -> dict[str, float]:
    import pstats

    out: dict[str, float] = {}
    for (filename, _, function), row in pstats.Stats(str(profile)).stats.items():  # type: ignore[attr-defined]
        key = f"{filename}:{function}"
        label = next((name for name, test in LAYERS if test(key)), "other")
        out[label] = out.get(label, 0.0) + row[2]  # own time
    return out


def top_functions(profile: Path, count: int = 25) -> list[tuple[str, float, int]]:
    import pstats

    rows = []
    for (filename, line, function), row in pstats.Stats(str(profile)).stats.items():  # type: ignore[attr-defined]
        if "'poll' of 'select.epoll'" in function:
            continue
        rows.append((f"{Path(filename).name}:{line}:{function}", row[2], row[1]))
    return sorted(rows, key=lambda r: -r[1])[:count]


def profile_media(calls: int, seconds: float) -> dict[str, Any]:
    """One inbound run with the daemon under cProfile: own time per layer per frame, and the
    costliest functions. cProfile slows Python code several times over and C calls hardly at
    all: read the shares, not the microseconds."""
    import tempfile

    out = Path(tempfile.mkdtemp(prefix="vcmprof")) / "daemon.prof"
    run = run_load(["--scenario", "inbound", "--calls", str(calls), "--seconds", str(seconds),
                    "--profile", str(out)])
    frames = run["frames_received"]
    layers = layer_seconds(out)
    layers.pop(IDLE, None)
    total = sum(layers.values())
    return {"calls": calls, "frames": frames,
            "profiled_us_per_frame": round(total / frames * 1e6, 1),
            "layers": [{"layer": k, "us": round(v / frames * 1e6, 2),
                        "share": round(v / total, 3)}
                       for k, v in sorted(layers.items(), key=lambda kv: -kv[1])],
            "top": [{"function": f, "own_us_per_frame": round(s / frames * 1e6, 2),
                     "calls": c} for f, s, c in top_functions(out)],
            "profile": str(out)}


if __name__ == "__main__":
    import argparse

    sys.path.insert(0, str(SCRIPTS))
    parser = argparse.ArgumentParser(description="profile the daemon's media path")
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    print(json.dumps(profile_media(args.calls, args.seconds), indent=2))
