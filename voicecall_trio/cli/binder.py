"""The fast argv binder: ``command --flag value ...`` bound straight to a command function.

Importing cyclopts alone costs more than the CLI's whole start-up budget, so a well-formed
invocation of a simple command is bound here from the function's own signature, and cyclopts
is imported only when this declines. Pure: argv and the command table in, ``(function,
kwargs)`` or None out.

What it binds: keyword-only ``str``, ``int`` and ``bool`` parameters (annotations are read as
strings, as ``from __future__ import annotations`` leaves them), as ``--flag value``,
``--flag=value`` or a bare ``--flag`` for a bool; ``call_id`` is ``--call-id``, ``from_`` is
``--from``. Anything it does not fully understand (help, positionals, unknown or repeated
flags, a missing value, a missing required flag, ``Literal`` choices) returns None: cyclopts
takes over and explains. Declining is always safe; binding differently from cyclopts never is.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

Command = Callable[..., int]


def flag(name: str) -> str:
    """The flag of a parameter: ``call_id`` -> ``--call-id``, ``from_`` -> ``--from``."""
    return "--" + name.strip("_").replace("_", "-")


def fast_bind(argv: list[str], commands: Mapping[str, Command]
              ) -> tuple[Command, dict[str, Any]] | None:
    """Bind ``argv`` to one of ``commands``, or None to leave it to cyclopts."""
    if not argv or argv[0] not in commands:
        return None
    fn = commands[argv[0]]
    code = fn.__code__
    if code.co_argcount:  # positional parameters: leave to cyclopts
        return None
    names = code.co_varnames[: code.co_kwonlyargcount]
    defaults = fn.__kwdefaults__ or {}
    hints = fn.__annotations__
    flags = {flag(n): n for n in names}
    kwargs: dict[str, Any] = {}
    args = argv[1:]
    i = 0
    while i < len(args):
        token = args[i]
        value: str | None = None
        if "=" in token and token.startswith("--"):
            token, value = token.split("=", 1)
        name = flags.get(token)
        if name is None or name in kwargs:
            return None
        hint = str(hints.get(name, ""))
        if hint == "bool":
            if value is not None:
                return None
            kwargs[name] = True
            i += 1
            continue
        if value is None:
            if i + 1 >= len(args) or args[i + 1].startswith("--"):
                return None
            value = args[i + 1]
            i += 1
        i += 1
        if hint.startswith("int"):
            try:
                kwargs[name] = int(value)
            except ValueError:
                return None
        elif hint.startswith("str") or hint == "str | None":
            kwargs[name] = value
        else:
            return None  # Literal choices etc.: cyclopts validates them
    if any(n not in kwargs and n not in defaults for n in names):
        return None
    return fn, kwargs
