"""Turn-latency statistics from journal records: pure functions, values in and values out.

A turn is the callee's words followed by the bot's; its latency is the gap between the two
transcript timestamps (ms). ``voicecall latency`` uses these on ``calls.jsonl``; they import
nothing beyond the stdlib, so the daemon can report the same figures from its own records.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Mapping
from typing import Any

QUANTILES = {"p50Ms": 0.5, "p90Ms": 0.9, "p99Ms": 0.99}


def latest_records(lines: Iterable[bytes | str]) -> dict[str, dict[str, Any]]:
    """The last snapshot of each call (by ``callId``); lines that are not a record are skipped."""
    latest: dict[str, dict[str, Any]] = {}
    for line in lines:
        try:
            record = json.loads(line)
            latest[record["callId"]] = record
        except (ValueError, KeyError, TypeError, RecursionError):  # a line nested too deep
            continue
    return latest


def read_latest(path: str) -> dict[str, dict[str, Any]]:
    """``latest_records`` of a journal file; no file is no calls."""
    try:
        with open(path, "rb") as file:
            return latest_records(file)
    except FileNotFoundError:
        return {}


def turn_gaps(records: Iterable[Mapping[str, Any]]) -> list[float]:
    """Every user-then-bot gap (ms) in the records' transcripts, sorted."""
    gaps: list[float] = []
    for record in records:
        transcript = record.get("transcript") or []
        for before, after in itertools.pairwise(transcript):
            if before.get("speaker") == "user" and after.get("speaker") == "bot":
                gaps.append(float(after["timestamp"]) - float(before["timestamp"]))
    gaps.sort()
    return gaps


def nearest_rank(sorted_gaps: list[float], q: float) -> float | None:
    """The value at rank ``int(q * n)`` (clamped to the last); None for no values."""
    if not sorted_gaps:
        return None
    return sorted_gaps[min(len(sorted_gaps) - 1, int(q * len(sorted_gaps)))]


def latency_summary(latest: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """``{turns, calls, p50Ms, p90Ms, p99Ms, maxMs}`` over the calls' latest records."""
    gaps = turn_gaps(latest.values())
    summary: dict[str, Any] = {"turns": len(gaps), "calls": len(latest)}
    for key, q in QUANTILES.items():
        summary[key] = nearest_rank(gaps, q)
    summary["maxMs"] = gaps[-1] if gaps else None
    return summary


def describe_summary(summary: Mapping[str, Any]) -> str:
    """The summary as ``voicecall latency`` prints it without ``--json``."""
    if not summary["turns"]:
        return "no turns recorded yet"
    return (f"{summary['turns']} turns in {summary['calls']} calls: p50 {summary['p50Ms']} ms, "
            f"p90 {summary['p90Ms']} ms, p99 {summary['p99Ms']} ms, max {summary['maxMs']} ms")
