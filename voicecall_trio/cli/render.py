"""What calls, events and journal lines look like on a terminal (and ``--json`` as is).

Pure formatting: values in, text out. The one impure helper, ``emit``, prints a result as
JSON or through one of these formatters.
"""

from __future__ import annotations

import json as _json
import time
from collections.abc import Callable
from typing import Any


def emit(result: Any, as_json: bool, human: Callable[[Any], str]) -> None:
    """Print ``result`` as one JSON line, or as ``human(result)``."""
    if as_json:
        print(_json.dumps(result, ensure_ascii=False))
    else:
        print(human(result))


def fmt_time(ms: int | None) -> str:
    """Local wall-clock time of a record timestamp (ms since the epoch); ``-`` for none."""
    if not ms:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000))


def describe_call(call: dict[str, Any]) -> str:
    """A call record as a few aligned lines, then its transcript."""
    lines = [
        f"call      {call.get('callId')}",
        f"state     {call.get('state')}"
        + (f" ({call['endReason']})" if call.get("endReason") else ""),
        f"direction {call.get('direction')}  {call.get('from')} -> {call.get('to')}",
        f"provider  {call.get('provider')} {call.get('providerCallId') or ''}".rstrip(),
        f"started   {fmt_time(call.get('startedAt'))}"
        f"   answered {fmt_time(call.get('answeredAt'))}"
        f"   ended {fmt_time(call.get('endedAt'))}",
    ]
    for entry in call.get("transcript", []):
        who = "bot " if entry.get("speaker") == "bot" else "user"
        lines.append(f"  {who}: {entry.get('text')}")
    return "\n".join(lines)


def call_row(call: dict[str, Any]) -> str:
    """One call as one line of ``voicecall status``'s list."""
    return (f"{call.get('callId')}  {call.get('state'):<11} {call.get('direction'):<8} "
            f"{call.get('to') if call.get('direction') == 'outbound' else call.get('from')}")


def describe_event(event: dict[str, Any]) -> str:
    """One ``voicecall.event`` notification as one line of ``voicecall watch``."""
    kind = event.get("type", "")
    head = f"{time.strftime('%H:%M:%S')} {str(event.get('callId'))[:8]} {kind:<15}"
    if kind == "call.speaking" and event.get("text"):
        return f"{head} bot:  {event['text']}"
    if kind == "call.speech":
        return f"{head} user: {event.get('text')}"
    if kind == "call.ended":
        return f"{head} ended: {event.get('reason')}"
    return f"{head} {event.get('state', '')}"


def journal_line(line: bytes, as_json: bool) -> str:
    """One ``calls.jsonl`` line as ``voicecall tail`` prints it (raw with ``--json``)."""
    text = line.decode("utf-8", "replace")
    if as_json:
        return text
    try:
        rec = _json.loads(text)
        last = rec.get("transcript", [])[-1:] or [{}]
        said = f"  {last[0].get('speaker')}: {last[0].get('text')}" if last[0] else ""
        return (f"{fmt_time(rec.get('endedAt') or rec.get('answeredAt') or rec.get('startedAt'))}"
                f"  {rec.get('callId')}  {rec.get('state')}{said}")
    except (ValueError, AttributeError, IndexError, TypeError, KeyError, RecursionError,
            OverflowError):  # a hostile or torn line is shown, never raised
        return f"(unreadable line) {text[:120]}"
