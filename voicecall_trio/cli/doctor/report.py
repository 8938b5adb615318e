"""A doctor check's outcome and the two ways it is printed (pure).

Text: one line per check, ``[ok]``, ``[!!]`` (failed) or ``[--]`` (skipped), then the name
and the detail. JSON: ``{"ok": bool, "checks": [{"name", "status", "detail"}]}`` with
``status`` one of ``ok``, ``fail``, ``skip``. ``ok`` is true when no check failed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

Status = Literal["ok", "fail", "skip"]
MARKS: dict[str, str] = {"ok": "[ok]", "fail": "[!!]", "skip": "[--]"}
# the checks, in the order they run and print
NAMES = ("config", "daemon", "socket", "publicUrl", "reachability", "streamUpgrade",
         "credentials", "clock", "keys", "models")


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: Status
    detail: str


def ok(name: str, detail: str) -> Check:
    return Check(name, "ok", detail)


def fail(name: str, detail: str) -> Check:
    return Check(name, "fail", detail)


def skip(name: str, detail: str) -> Check:
    return Check(name, "skip", detail)


def all_ok(checks: list[Check]) -> bool:
    return not any(check.status == "fail" for check in checks)


def as_text(checks: list[Check]) -> str:
    return "".join(f"{MARKS[c.status]} {c.name}: {c.detail}\n" for c in checks)


def as_json(checks: list[Check]) -> str:
    return json.dumps({"ok": all_ok(checks), "checks": [
        {"name": c.name, "status": c.status, "detail": c.detail} for c in checks]})
