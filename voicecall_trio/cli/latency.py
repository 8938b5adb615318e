"""``voicecall latency``: per-stage turn latency percentiles, read from the journal directly.

Each turn the daemon answered is journaled in its call's ``metadata.turns`` (the last 50 per
call; ``agent/waterfall.py``): milestone offsets in ms from the moment the caller stopped
speaking. This prints p50/p90/p99 of each milestone, and of the total (caller stopped ->
first audio out), across every call the kept journal files hold or for one call. It reads the
files like ``tail`` does, so it works while the daemon is down. Pure stdlib: the figures are
``waterfall_summary``'s, reusable by the benchmark.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

from .connect import journal_path
from .journal_stats import latest_records
from .outcome import EXIT_OK
from .render import emit

# the milestones after "caller stopped" (whose offset is 0 by definition), in order
STAGES = ("finalTranscript", "replyRequested", "firstToken", "firstSentence", "ttsFirstByte",
          "firstAudioOut", "heard")
TOTAL_STAGE = "firstAudioOut"
PERCENTILES = {"p50": 0.5, "p90": 0.9, "p99": 0.99}


def turns_of(records: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Every journaled turn of ``records`` (malformed entries skipped)."""
    out: list[Mapping[str, Any]] = []
    for record in records:
        metadata = record.get("metadata")
        turns = metadata.get("turns") if isinstance(metadata, dict) else None
        if isinstance(turns, list):
            out.extend(t for t in turns if isinstance(t, dict))
    return out


def nearest_rank(sorted_values: list[float], q: float) -> float:
    """The nearest-rank percentile: the smallest value with at least ``q`` of the values at
    or below it (p50 of [1, 2] is 1, p99 of 100 values the 99th)."""
    rank = max(1, math.ceil(q * len(sorted_values) - 1e-9))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def _percentiles(values: list[float]) -> dict[str, float]:
    values.sort()
    return {name: nearest_rank(values, q) for name, q in PERCENTILES.items()}


def waterfall_summary(turns: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """``{turns, stages: {stage: {p50, p90, p99}}, total}``; a stage no turn reached is left
    out, and ``total`` is None when no turn reached first audio out."""
    turns = list(turns)
    stages: dict[str, Any] = {}
    for stage in STAGES:
        values = _values(turns, stage)
        if values:
            stages[stage] = _percentiles(values)
    totals = _values(turns, TOTAL_STAGE)
    return {"turns": len(turns), "stages": stages,
            "total": _percentiles(totals) if totals else None}


def _values(turns: Iterable[Mapping[str, Any]], stage: str) -> list[float]:
    out: list[float] = []
    for turn in turns:
        value = turn.get(stage)
        if not isinstance(value, int | float) or isinstance(value, bool):
            continue
        try:
            figure = float(value)  # an integer of 400 digits does not fit
        except OverflowError:
            continue
        # json reads Infinity, NaN and 1e400 too: such a figure would make --json invalid
        if math.isfinite(figure) and figure >= 0:
            out.append(figure)
    return out


def describe_waterfall(summary: Mapping[str, Any]) -> str:
    """The summary as a table (ms after the caller stopped speaking)."""
    if not summary["turns"]:
        return "no turns recorded yet"
    rows = [(stage, summary["stages"][stage]) for stage in STAGES
            if stage in summary["stages"]]
    if summary["total"] is not None:
        rows.append(("total", summary["total"]))
    lines = [f"{summary['turns']} turns; ms after the caller stopped speaking",
             f"{'stage':<16}{'p50':>9}{'p90':>9}{'p99':>9}"]
    lines += [f"{name:<16}{row['p50']:>9.1f}{row['p90']:>9.1f}{row['p99']:>9.1f}"
              for name, row in rows]
    return "\n".join(lines)


def journal_files(path: str) -> list[str]:
    """The kept files, oldest first: ``calls.jsonl.N`` .. ``.1``, then ``calls.jsonl``."""
    directory, name = os.path.split(path)
    pattern = re.compile(re.escape(name) + r"\.(\d+)$")
    try:
        rotated = [(int(m.group(1)), entry) for entry in os.listdir(directory or ".")
                   if (m := pattern.match(entry))]
    except FileNotFoundError:
        return []
    except OSError:  # not a directory, not readable: opening the journal will say so
        rotated = []
    return [os.path.join(directory, entry) for _, entry in sorted(rotated, reverse=True)] \
        + [path]


def read_records(path: str) -> dict[str, dict[str, Any]]:
    """The latest record of each call across the kept files (the newest file wins);
    ``Failed`` naming the file when one cannot be read."""
    from ..errors import Failed

    latest: dict[str, dict[str, Any]] = {}
    for file in journal_files(path):
        try:
            with open(file, "rb") as handle:
                latest.update(latest_records(handle))
        except FileNotFoundError:
            continue
        except OSError as exc:  # a directory in its place, no permission, an I/O error
            raise Failed(f"cannot read the journal {file}: {exc.strerror or exc}") from None
    return latest


def latency(*, call_id: str | None = None, json: bool = False,
            config: str | None = None) -> int:
    """Turn latency per stage (p50/p90/p99 ms after the caller stopped), from the journal.

    Parameters
    ----------
    call_id
        Only this call's turns.
    json
        Print the figures as JSON.
    config
        Config file, used to find the store.
    """
    from ..errors import Failed

    records = read_records(journal_path(config))
    if call_id is not None:
        if call_id not in records:
            raise Failed(f"no call {call_id} in the journal")
        chosen: Iterable[Mapping[str, Any]] = [records[call_id]]
    else:
        chosen = records.values()
    emit(waterfall_summary(turns_of(chosen)), json, describe_waterfall)
    return EXIT_OK


__all__ = ["STAGES", "describe_waterfall", "journal_files", "latency", "nearest_rank",
           "read_records",
           "turns_of", "waterfall_summary"]
