"""Logging for ``voicecall serve``: one handler on stderr, text or JSON lines, redacted.

Under systemd, stderr goes to journald; ``--log-format json`` gives one JSON object a line
(``ts``, ``level``, ``logger``, ``msg``, and ``exc`` when there is a traceback) for log
shippers. Either way the handler's formatter is the single choke point every record passes:
the finished message and traceback go through ``redact.Redactor`` (secrets, credentials,
stream tokens) at every level, and phone numbers are masked at INFO and above. Call sites
therefore never need to remember which values are secret.

``learn_secrets`` adds a reloaded config's secrets to the handler (the old ones stay).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import IO, Any, Literal

from .redact import Redactor, config_secrets, mask_phones

LogFormat = Literal["text", "json"]
LogLevel = Literal["debug", "info", "warning"]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# chatty libraries: their INFO lines are per request, ours say what matters
NOISY = ("httpx", "httpcore", "hypercorn.error", "quart.app")


class _Scrub:
    """The redaction every formatter applies to the text it produced."""

    redactor: Redactor

    def scrub(self, text: str, record: logging.LogRecord) -> str:
        text = self.redactor.redact(text)
        return mask_phones(text) if record.levelno >= logging.INFO else text


class TextFormatter(_Scrub, logging.Formatter):
    """``2026-01-01 12:00:00,000 INFO voicecall.daemon: ...``, redacted."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__(TEXT_FORMAT)
        self.redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        return self.scrub(super().format(record), record)


class JsonFormatter(_Scrub, logging.Formatter):
    """One JSON object a line; strings are redacted before encoding, so escaping cannot hide
    a secret from the redactor."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, UTC)
        line: dict[str, Any] = {
            "ts": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "msg": self.scrub(record.getMessage(), record),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exc"] = self.scrub(record.exc_text, record)
        if record.stack_info:
            line["stack"] = self.scrub(self.formatStack(record.stack_info), record)
        return json.dumps(line, ensure_ascii=False)


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler whose failures stay quiet about the record: logging's own
    ``handleError`` prints the raw message and arguments, unredacted."""

    def handleError(self, record: logging.LogRecord) -> None:
        kind = sys.exc_info()[0]
        try:
            self.stream.write(f"logging error: a {record.levelname} record of {record.name} "
                              f"could not be formatted ({kind.__name__ if kind else '?'})\n")
            self.flush()
        except Exception:
            pass


def make_handler(log_format: LogFormat = "text", redactor: Redactor | None = None,
                 stream: IO[str] | None = None) -> logging.Handler:
    """A stderr handler (or ``stream``) in ``log_format`` that redacts with ``redactor``."""
    handler = _Handler(stream if stream is not None else sys.stderr)
    scrubber = redactor if redactor is not None else Redactor()
    formatter = JsonFormatter(scrubber) if log_format == "json" else TextFormatter(scrubber)
    handler.setFormatter(formatter)
    return handler


def configure_logging(level: int | LogLevel = logging.INFO, *, log_format: LogFormat = "text",
                      redactor: Redactor | None = None, stream: IO[str] | None = None) -> None:
    """Make the root logger write redacted ``log_format`` lines to stderr (``stream``)."""
    if isinstance(level, str):
        level = logging.getLevelNamesMapping()[level.upper()]
    root = logging.getLogger()
    root.handlers[:] = [make_handler(log_format, redactor, stream)]
    root.setLevel(level)
    logging.captureWarnings(True)  # warnings too go through the handler: formatted, redacted
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(max(logging.WARNING, level))


def redactors() -> list[Redactor]:
    """The redactors of the root logger's handlers (what ``configure_logging`` installed)."""
    found: list[Redactor] = []
    for handler in logging.getLogger().handlers:
        formatter = handler.formatter
        if isinstance(formatter, _Scrub):
            found.append(formatter.redactor)
    return found


def learn_secrets(document: Any, environ: Mapping[str, str]) -> None:
    """Add the secrets of a config (``msgspec.to_builtins`` of it) and of ``environ`` to every
    installed redactor; secrets already known stay known."""
    secrets = config_secrets(document, environ)
    for redactor in redactors():
        redactor.add(secrets)


__all__ = ["JsonFormatter", "LogFormat", "LogLevel", "TextFormatter", "configure_logging",
           "learn_secrets", "make_handler", "redactors"]
