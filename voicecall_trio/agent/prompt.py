"""What the model is told: the system prompt with the call's context, and the bounded history.

The system message is ``responseSystemPrompt`` (or ``DEFAULT_SYSTEM_PROMPT``) followed by the
call's context: its direction, the other party's number, an outbound call's initial message
verbatim, and the local date and time (injected: tests pin it). The history is the call's
final transcript lines as ``user`` / ``assistant`` messages, consecutive lines of one speaker
joined (an interrupted reply followed by more words of the caller is one turn each), newest
first within ``MAX_HISTORY_MESSAGES`` messages and ``MAX_HISTORY_CHARS`` characters; a single
line is cut to ``MAX_MESSAGE_CHARS``. The newest line always goes in.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from ..model import CallRecord, TranscriptEntry

DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful voice assistant on a phone call. Everything you write is spoken aloud "
    "to the other party, so answer in one or two short, natural sentences of plain text: no "
    "markdown, lists, emoji, links or special characters. If you did not understand, ask "
    "briefly. When the other party says goodbye or has nothing more to ask, say a short "
    "goodbye and call the end_call tool."
)
MAX_HISTORY_MESSAGES = 40
MAX_HISTORY_CHARS = 12_000
MAX_MESSAGE_CHARS = 2_000


@dataclass(frozen=True, slots=True)
class CallContext:
    direction: str
    remote: str  # the other party's number
    initial_message: str | None
    now: datetime  # local, with its zone


def context_of(record: CallRecord, now: datetime) -> CallContext:
    remote = record.to if record.direction == "outbound" else record.from_
    initial = record.metadata.get("initialMessage") if record.direction == "outbound" else None
    return CallContext(record.direction, remote or "unknown",
                       str(initial) if initial else None, now)


def system_message(prompt: str | None, context: CallContext) -> str:
    """The configured prompt (or the default) and the call's context, as one system text."""
    base = prompt.strip() if prompt and prompt.strip() else DEFAULT_SYSTEM_PROMPT
    if context.direction == "outbound":
        lines = [f"You placed this call to {context.remote}."]
        if context.initial_message:
            lines.append(f"You opened the call with this message: {context.initial_message}")
    else:
        lines = [f"This is an inbound call from {context.remote}."]
    zone = context.now.tzname() or ""
    lines.append(f"The local date and time is {context.now:%A, %d %B %Y, %H:%M} {zone}".rstrip()
                 + ".")
    return base + "\n\nCall context:\n" + "\n".join(f"- {line}" for line in lines)


def history_messages(transcript: Iterable[TranscriptEntry], *,
                     max_messages: int = MAX_HISTORY_MESSAGES,
                     max_chars: int = MAX_HISTORY_CHARS) -> list[dict[str, str]]:
    """The transcript as chat messages, the newest within the budget, oldest first."""
    merged: list[dict[str, str]] = []
    for entry in transcript:
        if not entry.is_final or not entry.text.strip():
            continue
        role = "assistant" if entry.speaker == "bot" else "user"
        if merged and merged[-1]["role"] == role:
            merged[-1]["content"] += " " + entry.text.strip()
        else:
            merged.append({"role": role, "content": entry.text.strip()})
    kept: list[dict[str, str]] = []
    used = 0
    for message in reversed(merged):
        content = message["content"]
        if len(content) > MAX_MESSAGE_CHARS:
            content = content[:MAX_MESSAGE_CHARS]
        if kept and (len(kept) >= max_messages or used + len(content) > max_chars):
            break
        kept.append({"role": message["role"], "content": content})
        used += len(content)
    kept.reverse()
    return kept


def build_messages(prompt: str | None, record: CallRecord, now: datetime
                   ) -> list[dict[str, str]]:
    """The ``messages`` of the request for the next reply on ``record``."""
    system = {"role": "system", "content": system_message(prompt, context_of(record, now))}
    return [system, *history_messages(record.transcript)]


__all__ = [
    "DEFAULT_SYSTEM_PROMPT", "MAX_HISTORY_CHARS", "MAX_HISTORY_MESSAGES", "MAX_MESSAGE_CHARS",
    "CallContext", "build_messages", "context_of", "history_messages", "system_message",
]
