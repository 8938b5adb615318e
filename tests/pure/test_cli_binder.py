"""cli/binder.py: the fast argv binder, against a table of made-up commands (pure).

The binder must either bind exactly what cyclopts would, or decline (None) so that cyclopts
explains; the last test checks it against cyclopts over every real command.
"""

from __future__ import annotations

from typing import Any, Literal

import pytest

from voicecall_trio.cli import app
from voicecall_trio.cli.binder import fast_bind, flag


def send(*, call_id: str, count: int = 1, loud: bool = False, note: str | None = None) -> int:
    return 0


def pick(*, colour: Literal["red", "blue"] = "red") -> int:
    return 0


def echo(text: str | None = None, *, twice: bool = False) -> int:
    return 0


def dial(*, from_: str) -> int:
    return 0


TABLE = {"send": send, "pick": pick, "echo": echo, "dial": dial}


@pytest.mark.parametrize(("name", "expected"), [
    ("call_id", "--call-id"), ("from_", "--from"), ("json", "--json"), ("_x_", "--x"),
])
def test_flag_names(name: str, expected: str) -> None:
    assert flag(name) == expected


@pytest.mark.parametrize(("argv", "kwargs"), [
    (["send", "--call-id", "a"], {"call_id": "a"}),
    (["send", "--call-id=a=b"], {"call_id": "a=b"}),
    (["send", "--call-id", "a", "--count", "3", "--loud"],
     {"call_id": "a", "count": 3, "loud": True}),
    (["send", "--note", "-", "--call-id", "-x"], {"note": "-", "call_id": "-x"}),
    (["send", "--count=-2", "--call-id", ""], {"count": -2, "call_id": ""}),
    (["dial", "--from", "+15555550100"], {"from_": "+15555550100"}),
])
def test_binds_well_formed_invocations(argv: list[str], kwargs: dict[str, Any]) -> None:
    assert fast_bind(argv, TABLE) == (TABLE[argv[0]], kwargs)


@pytest.mark.parametrize("argv", [
    [], ["nope"], ["--help"], ["send", "--help"], ["send"],         # no command, no required flag
    ["send", "--call-id"], ["send", "--call-id", "--loud"],          # a missing value
    ["send", "--call-id", "a", "--call-id", "b"],                    # repeated
    ["send", "--call-id", "a", "--bogus", "1"], ["send", "a"],       # unknown, positional
    ["send", "--call-id", "a", "--count", "many"],                   # not an int
    ["send", "--call-id", "a", "--loud=yes"],                        # a bool with a value
    ["send", "--call_id", "a"], ["send", "-c", "a"],                 # not our spelling
    ["pick", "--colour", "red"],                                     # choices: cyclopts checks
    ["echo", "--twice"], ["echo", "hi"],                             # positional parameters
    ["dial", "--from-", "x"],
])
def test_declines_anything_unusual(argv: list[str]) -> None:
    assert fast_bind(argv, TABLE) is None


@pytest.mark.parametrize("argv", [
    ["status"], ["status", "--call-id", "x", "--json"], ["continue", "--call-id", "c",
    "--message", "hi there"], ["speak", "--call-id=c", "--message=x", "--socket", "/s"],
    ["end", "--call-id", "c", "--config", "/c.toml"], ["tail", "--lines", "5", "--follow"],
    ["call", "--message", "m", "--to", "+15555550123"], ["simulate-inbound", "--from", "+1555"],
    ["doctor", "--json"], ["latency"], ["serve", "--socket", "/s"], ["watch", "--call-id", "c"],
])
def test_binds_real_commands_as_cyclopts_does(argv: list[str]) -> None:
    fast = app.bind(argv)
    assert fast is not None, argv
    slow = app.run_cyclopts(argv)
    assert not isinstance(slow, int)
    command, bound = slow
    assert fast == (command, bound.kwargs)
    assert bound.args == ()
