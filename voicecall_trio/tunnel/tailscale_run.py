"""Tailscale Serve/Funnel for the daemon and for ``voicecall expose``: run the command lines
of ``tailscale.py`` with ``trio.run_process``.

``tailscale_up`` reads the node's DNS name and exposes each path; ``tailscale_off`` takes
them off again. ``TailscaleTunnel.open`` is the daemon's: up, ``report`` the URL, wait, and
off on the way out (shielded, bounded). ``tailscaled`` keeps the mapping alive, so there is
no process of ours to restart. Every step has a deadline: a wedged ``tailscale`` must not
hold up ``serve``.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import trio

from ..errors import TunnelError
from . import tailscale
from .process import stop_process

log = logging.getLogger("voicecall.tunnel")

STEP_TIMEOUT_S = 15.0
OFF_TIMEOUT_S = 5.0  # per step at shutdown


@dataclass(frozen=True, slots=True)
class Done:
    returncode: int
    stdout: str
    stderr: str


Runner = Callable[[Sequence[str]], Awaitable[Done]]


def runner(environ: Mapping[str, str], timeout_s: float = STEP_TIMEOUT_S) -> Runner:
    """Run one command line to its end (bounded); a missing binary or a hang is a
    ``TunnelError``, a failed command is a ``Done`` with its status."""

    async def run(command: Sequence[str]) -> Done:
        shown = "tailscale " + " ".join(command[1:])
        try:
            with trio.fail_after(timeout_s):
                done = await trio.run_process(list(command), capture_stdout=True,
                                              capture_stderr=True, check=False,
                                              stdin=subprocess.DEVNULL, env=dict(environ),
                                              deliver_cancel=stop_process)
        except trio.TooSlowError:
            raise TunnelError(f"`{shown}` did not finish within {timeout_s:g} s") from None
        except OSError as exc:
            raise TunnelError(f"cannot run {command[0]}: {exc.strerror or exc}") from None
        return Done(done.returncode, done.stdout.decode("utf-8", "replace"),
                    done.stderr.decode("utf-8", "replace"))

    return run


def find_tailscale(environ: Mapping[str, str], which: Callable[..., str | None] = shutil.which
                   ) -> str:
    binary = which("tailscale", path=environ.get("PATH", os.defpath))
    if binary is None:
        raise TunnelError(tailscale.NOT_INSTALLED)
    return binary


async def dns_name(binary: str, run: Runner) -> str:
    done = await run(tailscale.status_json_command(binary))
    if done.returncode != 0:
        raise TunnelError(f"`tailscale status --json` failed (exit {done.returncode}): "
                          f"{tailscale.clip(done.stderr)} (is tailscaled running and logged in?)")
    name = tailscale.dns_name(done.stdout)
    if name is None:
        raise TunnelError("`tailscale status --json` names no DNS name for this node "
                          "(Self.DNSName; is MagicDNS on and the node logged in?)")
    return name


async def tailscale_up(binary: str, mode: Literal["funnel", "serve"], *, port: int,
                       paths: Sequence[str], run: Runner) -> str:
    """Expose each path; the public URL of the first (the webhook)."""
    dns = await dns_name(binary, run)
    for path in paths:
        command = tailscale.up_command(binary, mode, port=port, path=path)
        done = await run(command)
        failure = tailscale.step_failure(mode, command, done.returncode, done.stderr)
        if failure is not None:
            raise TunnelError(failure)
    return tailscale.public_url(dns, paths[0])


async def tailscale_off(binary: str, modes: Sequence[Literal["funnel", "serve"]],
                        paths: Sequence[str], run: Runner) -> None:
    """Take each path off each mode; failures (a path that was not on) do not matter."""
    for mode in modes:
        for path in paths:
            try:
                await run(tailscale.off_command(binary, mode, path))
            except TunnelError as exc:
                log.warning("tailscale: %s", exc.message)


class TailscaleTunnel:
    """Serve or Funnel of ``paths`` on this node, for the daemon's life."""

    def __init__(self, *, mode: Literal["funnel", "serve"], port: int, paths: Sequence[str],
                 environ: Mapping[str, str], which: Callable[..., str | None] = shutil.which
                 ) -> None:
        self.mode, self.port, self.paths = mode, port, tuple(paths)
        self._env = dict(environ)
        self._which = which

    async def open(self, report: Callable[[str], None]) -> None:
        binary = find_tailscale(self._env, self._which)
        try:  # a path exposed before a later step failed is taken off again too
            url = await tailscale_up(binary, self.mode, port=self.port, paths=self.paths,
                                     run=runner(self._env))
            if self.mode == "serve":
                log.warning("%s", tailscale.SERVE_IS_PRIVATE)
            report(url)
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                await tailscale_off(binary, (self.mode,), self.paths,
                                    runner(self._env, OFF_TIMEOUT_S))
                log.info("tailscale %s turned off for %s", self.mode, ", ".join(self.paths))
