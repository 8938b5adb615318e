"""The command table, and the cyclopts app built from it for help, errors and unusual input.

``COMMANDS`` names every ``voicecall`` command once; both the fast binder and cyclopts bind
argv to these same functions. The command modules import nothing heavy at import time (each
command imports what it needs when it runs), so loading the table is cheap; cyclopts itself
is imported only by ``run_cyclopts``.
"""

from __future__ import annotations

from typing import Any

from .binder import Command, fast_bind
from .calls import call, continue_, end, simulate_inbound, speak, status
from .doctor import doctor
from .expose import expose
from .init import init
from .journal import tail
from .latency import latency
from .outcome import EXIT_USAGE
from .serve import serve
from .systemd_unit import systemd_unit
from .tool import tool
from .watch import watch

COMMANDS: dict[str, Command] = {
    "serve": serve,
    "call": call,
    "continue": continue_,
    "speak": speak,
    "end": end,
    "status": status,
    "tail": tail,
    "watch": watch,
    "tool": tool,
    "simulate-inbound": simulate_inbound,
    "expose": expose,
    "doctor": doctor,
    "latency": latency,
    "systemd-unit": systemd_unit,
    "init": init,
}


def bind(argv: list[str]) -> tuple[Command, dict[str, Any]] | None:
    """``fast_bind`` over ``COMMANDS``."""
    return fast_bind(argv, COMMANDS)


def build_app() -> Any:
    from cyclopts import App

    from .. import __version__

    app = App(name="voicecall", version=__version__, help_format="plaintext", help=(
        "Drive the voicecall daemon: place and answer phone calls for an AI assistant."))
    for name, fn in COMMANDS.items():
        app.command(fn, name=name)
    return app


def run_cyclopts(argv: list[str]) -> tuple[Command, Any] | int:
    """Parse with cyclopts: the bound command, or an exit code (help, version, usage error)."""
    from cyclopts import CycloptsError

    app = build_app()
    try:
        command, bound, _ = app.parse_args(argv, exit_on_error=False, print_error=True)
    except CycloptsError:
        return EXIT_USAGE
    except SystemExit as exc:  # --help / --version
        return int(exc.code or 0)
    return command, bound
