"""Exposing the webhook through a tunnel: today Tailscale Serve/Funnel, driven by its CLI.

Two parts. The pure part says which ``tailscale`` command lines put ``serve.path`` behind
Funnel or Serve (or take it off) and how a step's outcome reads; ``voicecall expose`` and,
with issue #12, the daemon build the same command lines from it, so the two cannot drift. The
blocking runner (``apply_tailscale``, ``tailscale_status``) is the CLI's: it takes ``run``
with ``subprocess.run``'s shape, which tests replace; the daemon will run the command lines
with ``trio.run_process`` instead. Stdlib only and no trio, so the CLI pays nothing for it.

Nothing here raises for a failed command: the result carries the message to show.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Sequence
from typing import Literal

TailscaleMode = Literal["funnel", "serve", "off"]
Run = Callable[..., "subprocess.CompletedProcess[str]"]  # subprocess.run's shape, text=True

NOT_INSTALLED = ("tailscale is not installed (https://tailscale.com/download); "
                 "or expose the webhook another way and set publicUrl")
# Serve answers only inside the tailnet, where no carrier is
SERVE_IS_PRIVATE = ("note: Tailscale Serve is private to your tailnet; Twilio/Telnyx cannot "
                    "reach it. Use --mode funnel for carrier webhooks.")


def find_tailscale(which: Callable[[str], str | None] = shutil.which) -> str | None:
    """The ``tailscale`` binary on ``PATH``, or None."""
    return which("tailscale")


def local_target(port: int, path: str) -> str:
    """Where the tunnel forwards to: the daemon's HTTP front on loopback."""
    return f"http://127.0.0.1:{port}{path}"


def expose_commands(tailscale: str, mode: TailscaleMode, *, port: int, path: str
                    ) -> list[list[str]]:
    """The command lines that put ``path`` behind Funnel or Serve, or (``off``) take it off
    both."""
    if mode == "off":
        return [[tailscale, kind, "--set-path", path, "off"] for kind in ("funnel", "serve")]
    return [[tailscale, mode, "--bg", "--yes", "--set-path", path, local_target(port, path)]]


def status_command(tailscale: str, mode: TailscaleMode) -> list[str]:
    """The command line that shows what is exposed now (Funnel's view unless ``serve``)."""
    return [tailscale, "funnel" if mode != "serve" else "serve", "status"]


def step_failure(mode: TailscaleMode, command: Sequence[str], returncode: int, stderr: str
                 ) -> str | None:
    """Why a step failed, or None when it did not or does not matter (``off`` of a path that
    was never exposed fails harmlessly)."""
    if returncode == 0 or mode == "off":
        return None
    return f"{' '.join(command[1:])} failed: {stderr.strip()}"


def apply_tailscale(tailscale: str, mode: TailscaleMode, *, port: int, path: str,
                    run: Run = subprocess.run) -> str | None:
    """Run ``expose_commands`` in order; the first failure that matters, or None."""
    for command in expose_commands(tailscale, mode, port=port, path=path):
        done = run(command, capture_output=True, text=True)
        failure = step_failure(mode, command, done.returncode, done.stderr)
        if failure is not None:
            return failure
    return None


def tailscale_status(tailscale: str, mode: TailscaleMode, run: Run = subprocess.run) -> str:
    """What ``tailscale funnel|serve status`` prints, or ``<mode>: done`` when it prints
    nothing."""
    done = run(status_command(tailscale, mode), capture_output=True, text=True)
    return done.stdout.strip() or f"{mode}: done"
