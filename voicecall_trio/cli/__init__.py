"""The ``voicecall`` command line: thin, and quick to start.

Each command is a plain keyword-only function (``calls``, ``serve``, ``journal``, ``watch``,
``tool``, ``doctor``), listed once in ``app.COMMANDS``; cyclopts builds ``--help``, usage
errors and completion from those functions. Because importing cyclopts alone costs more than
the whole 100 ms start-up budget, well-formed invocations of simple commands are bound
directly from the functions' own signatures (``binder``) and cyclopts is imported only for
help, errors and anything unusual. Either way the same function runs, and ``outcome.guard``
turns what it raises into the exit code. Nothing in this package imports trio, quart, httpx
or msgspec except the commands that need them (``serve``, ``expose``, ``doctor``), and they
only when they run.

Exit codes: 0 ok, 1 operation failed (message on stderr), 2 usage error, 3 daemon not
reachable (the message names the socket and how to start the daemon).
"""

from __future__ import annotations

import sys

from .outcome import EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE, guard

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_UNREACHABLE", "EXIT_USAGE", "entry", "main"]


def main(argv: list[str] | None = None) -> int:
    """Run ``voicecall`` with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    # the table (and every command module) loads here, not on import, so that a pure part
    # such as journal_stats or binder can be imported alone
    from .app import COMMANDS, bind, run_cyclopts

    args = sys.argv[1:] if argv is None else list(argv)
    fast = bind(args)
    if fast is not None:
        fn, kwargs = fast
        return guard(lambda: fn(**kwargs))
    parsed = run_cyclopts(args)
    if isinstance(parsed, int):
        return parsed
    command, bound = parsed
    if command not in COMMANDS.values():
        return guard(lambda: command(*bound.args, **bound.kwargs) or 0)
    return guard(lambda: command(*bound.args, **bound.kwargs))


def entry() -> None:
    sys.exit(main())
