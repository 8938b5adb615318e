"""One life of the ngrok agent: start it, read its log until the URL, watch it until it ends.

``NgrokTunnel.open(report)`` starts ``ngrok http ...`` (``ngrok.command``), calls ``report``
with the public URL once the ``started tunnel`` line comes, and raises ``TunnelError`` when
the agent is gone, saying why (its error line and ``ERR_NGROK_xxx`` code, its exit status,
or no URL within ``start_timeout_s``). Before the URL an error line is fatal at once: ngrok
keeps retrying a bad token for ever, and ``serve`` should say so instead of waiting. The
process is always stopped on the way out: SIGTERM, a grace period, then SIGKILL.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import subprocess
from collections.abc import Callable, Mapping

import trio

from ..errors import TunnelError
from . import ngrok
from .lines import LineBuffer
from .process import STOP_GRACE_S, stop_process

log = logging.getLogger("voicecall.tunnel")

START_TIMEOUT_S = 30.0  # no URL by then: the agent is stuck (no network, wrong region)
STDERR_TAIL_BYTES = 4096
LOG_EVERY_S = 60.0  # error lines after the URL: at most one log line this often

Which = Callable[..., str | None]  # shutil.which's shape


class NgrokTunnel:
    """The ngrok agent for one daemon: forwards the public URL to ``bind:port``."""

    def __init__(self, *, bind: str, port: int, serve_path: str, token: str | None,
                 domain: str | None, environ: Mapping[str, str], which: Which = shutil.which,
                 start_timeout_s: float = START_TIMEOUT_S) -> None:
        self.bind, self.port, self.serve_path = bind, port, serve_path
        self.domain = domain
        self._token = token
        self._env = dict(environ)
        self._which = which
        self.start_timeout_s = start_timeout_s
        self._last_logged = -math.inf

    @property
    def secrets(self) -> tuple[str, ...]:
        token = self._token or self._env.get(ngrok.TOKEN_ENV)
        return (token,) if token else ()

    def command(self) -> list[str]:
        binary = self._which("ngrok", path=self._env.get("PATH", os.defpath))
        if binary is None:
            raise TunnelError(ngrok.NOT_INSTALLED)
        return ngrok.command(binary, bind=self.bind, port=self.port, domain=self.domain)

    async def open(self, report: Callable[[str], None]) -> None:
        """Run the agent once; ``report(url)`` when it is up. Never returns normally."""
        line = self.command()
        try:
            process = await trio.lowlevel.open_process(
                line, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, env=ngrok.child_env(self._env, self._token),
                start_new_session=True)  # a Ctrl-C at the terminal is the daemon's to handle
        except OSError as exc:
            raise TunnelError(f"cannot run {line[0]}: {exc.strerror or exc}") from None
        tail = bytearray()
        failure: TunnelError | None = None
        last_error: ngrok.LogError | None = None
        exited: int | None = None
        try:
            async with trio.open_nursery() as nursery:
                tail_read = trio.Event()
                nursery.start_soon(_keep_tail, process.stderr, tail, tail_read)
                try:
                    last_error = await self._watch(process, report)
                    with trio.move_on_after(STOP_GRACE_S):  # its log ended: it is exiting
                        await process.wait()
                        await tail_read.wait()
                    exited = process.returncode
                except TunnelError as exc:  # raised here, not from the nursery (no group)
                    failure = exc
                nursery.cancel_scope.cancel()
        finally:
            await stop_process(process)
        if failure is not None:
            raise failure
        if exited is None:
            raise TunnelError("ngrok closed its log but did not exit; it was stopped")
        raise TunnelError(ngrok.exit_cause(exited, last_error, tail.decode("utf-8", "replace"),
                                           self.secrets))

    async def _watch(self, process: trio.Process, report: Callable[[str], None]
                     ) -> ngrok.LogError | None:
        """Read the log until it ends; the last error line seen after the URL, if any."""
        assert process.stdout is not None
        lines = LineBuffer()
        started = False
        last_error: ngrok.LogError | None = None
        with trio.move_on_after(self.start_timeout_s) as waiting:
            while True:
                chunk = await process.stdout.receive_some(65536)
                for raw in lines.feed(chunk) if chunk else lines.flush():
                    event = ngrok.parse_line(raw, self.secrets)
                    if isinstance(event, ngrok.LogError) and not event.fatal:
                        self._log_error(event)  # e.g. its update check failed
                    elif isinstance(event, ngrok.LogError):
                        if not started:
                            raise TunnelError(f"ngrok reported: {event.describe()}")
                        last_error = event
                        self._log_error(event)
                    elif isinstance(event, ngrok.Started):
                        # again later in the same run: the agent reconnected, perhaps on
                        # another URL; the supervisor passes on only a change
                        started = True
                        waiting.deadline = math.inf
                        report(ngrok.public_url(event, self.serve_path))
                if not chunk:
                    break
        if waiting.cancelled_caught:
            raise TunnelError(f"ngrok gave no public URL within {self.start_timeout_s:g} s "
                              "(no \"started tunnel\" line in its log)")
        return last_error

    def _log_error(self, event: ngrok.LogError) -> None:
        now = trio.current_time()
        if now - self._last_logged >= LOG_EVERY_S:
            self._last_logged = now
            log.warning("ngrok: %s", event.describe())


async def _keep_tail(stream: trio.abc.ReceiveStream | None, tail: bytearray,
                     done: trio.Event) -> None:
    """Read ``stream`` to its end, keeping only its last ``STDERR_TAIL_BYTES``."""
    try:
        while stream is not None and (chunk := await stream.receive_some(65536)):
            tail += chunk
            del tail[:-STDERR_TAIL_BYTES]
    finally:
        done.set()
