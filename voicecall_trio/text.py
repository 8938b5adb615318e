"""Text on its way into a call record: repaired if it came from outside, refused if from a client.

A record that holds a lone surrogate cannot be encoded as UTF-8, so it could never be
journaled again. Carrier events and an agent's replies are repaired here (``clean_text``,
``clean_event``) before the supervisor applies them; a client's message is refused
(``check_text``) instead, so the client learns its text was broken. Pure: no I/O.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

from .errors import InvalidInput
from .events import CallEvent
from .model import CallRecord


def valid_text(text: str) -> bool:
    """Encodable as UTF-8 (no lone surrogate: what a gateway sends when it cuts a UTF-16
    string inside an emoji)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def clean_text(text: str) -> str:
    """``text`` with surrogate pairs joined and lone surrogates replaced by U+FFFD."""
    if valid_text(text):
        return text
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def check_text(text: str) -> None:
    """Refuse a client's text that is not valid Unicode (``InvalidInput``)."""
    if not valid_text(text):
        raise InvalidInput("message is not valid Unicode text (it has a lone surrogate)")


E = TypeVar("E", bound=CallEvent)


def clean_event(event: E) -> E:
    """The event with every string repaired (carrier input is never stored raw)."""
    changes: dict[str, str] = {}
    for name in event.__struct_fields__:
        value = getattr(event, name)
        if isinstance(value, str) and not valid_text(value):
            changes[name] = clean_text(value)
    return msgspec.structs.replace(event, **changes) if changes else event


def repaired(record: CallRecord) -> CallRecord:
    """``record`` with every string in it repaired (``clean_text``)."""

    def fix(value: Any) -> Any:
        if isinstance(value, str):
            return clean_text(value)
        if isinstance(value, list | tuple):
            return [fix(item) for item in value]
        if isinstance(value, dict):
            return {fix(key): fix(item) for key, item in value.items()}
        return value

    return msgspec.convert(fix(msgspec.to_builtins(record)), CallRecord)


__all__ = ["check_text", "clean_event", "clean_text", "repaired", "valid_text"]
