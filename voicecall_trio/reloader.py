"""SIGHUP -> re-read the config file the daemon started with and apply what ``reload.py``
allows: the trio shell of the reload.

``apply_config`` is the one place a new config is swapped in: the supervisor (admission,
policy, limits, replies), the provider (voice, greeting, notify delay), the handle; everything
reads ``config`` from those at the moment it decides, so nothing else has to be told. A file
that cannot be read or is invalid changes nothing and says why; a change that needs a restart
is logged by key path and ignored. Signals arriving during a reload are coalesced into one
more reload (trio's signal receiver does that).
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
import trio

from . import logs, systemd
from .config import VoiceCallConfig, load_config
from .errors import ConfigError
from .reload import ReloadPlan, plan_reload

if TYPE_CHECKING:
    from .daemon import DaemonHandle

log = logging.getLogger("voicecall.reload")


def apply_config(handle: DaemonHandle, config: VoiceCallConfig) -> None:
    """Make ``config`` the one every new decision reads."""
    old = handle.config
    handle.config = config
    handle.supervisor.config = config
    if handle.chat_http is not None and _replies_changed(old, config):
        # the responder holds its model, prompt, key and budget: a new one for new replies
        # (a reply in flight keeps the one it started with)
        from .agent.builtin import make_builtin

        handle.supervisor.builtin = make_builtin(config, handle.chat_http)
        log.info("reload: built-in replies are %s", "on" if handle.supervisor.builtin
                 is not None else "off (responseBaseUrl is OpenAI's and no key is set)")
    reconfigure = getattr(handle.provider, "reconfigure", None)
    if reconfigure is not None:
        reconfigure(config)


def _replies_changed(old: VoiceCallConfig, new: VoiceCallConfig) -> bool:
    """Whether a key the built-in responder was made from differs."""
    return (old.response_model, old.response_system_prompt, old.response_timeout_ms,
            old.response_base_url, old.response_key()) != (
        new.response_model, new.response_system_prompt, new.response_timeout_ms,
        new.response_base_url, new.response_key())


class Reloader:
    """Reloads on demand and remembers the outcomes (tests and ``reloads`` wait on them)."""

    def __init__(self, handle: DaemonHandle, path: Path | None, environ: Mapping[str, str]
                 ) -> None:
        self.handle = handle
        self.path = path
        self.environ = dict(environ)
        self.outcomes: list[ReloadPlan | str] = []  # a plan, or why the file was refused
        self._done = trio.Event()

    async def wait_reloads(self, count: int) -> None:
        """Until ``count`` reloads have finished (applied or refused)."""
        while len(self.outcomes) < count:
            await self._done.wait()

    def _finish(self, outcome: ReloadPlan | str) -> None:
        self.outcomes.append(outcome)
        self._done.set()
        self._done = trio.Event()

    async def reload(self) -> ReloadPlan | None:
        """One reload; the plan applied, or None when the old config was kept."""
        if self.path is None:
            reason = "the daemon was started without a config file; nothing to re-read"
            log.warning("reload: %s", reason)
            self._finish(reason)
            return None
        # during start-up, READY=1 is start-up's to send, not ours
        tell_systemd = self.handle.ready
        if tell_systemd:
            systemd.reloading(self.environ)
        try:
            try:
                # abandoned on cancel: a read that never ends (the path is now a FIFO, a
                # hung network mount) must not hold up the daemon's shutdown
                new = await trio.to_thread.run_sync(load_config, self.path, self.environ,
                                                    abandon_on_cancel=True)
                plan = plan_reload(self.handle.config, new)
            except ConfigError as exc:
                log.warning("reload: keeping the old config: %s: %s", self.path, exc.message)
                self._finish(exc.message)
                return None
            logs.learn_secrets(msgspec.to_builtins(new), self.environ)
            for path in plan.needs_restart:
                log.warning("reload: %s changed; it needs a restart and is ignored until then",
                            path)
            if plan.changed:
                apply_config(self.handle, plan.config)
                log.info("reload: applied %s (for new calls and replies; calls in progress keep "
                         "their limits)", ", ".join(plan.applied))
            elif not plan.needs_restart:
                log.info("reload: %s unchanged", self.path)
            self._finish(plan)
            return plan
        finally:
            if tell_systemd:
                systemd.notify("READY=1", self.environ)

    async def watch(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                    ) -> None:
        """Reload on each SIGHUP, for as long as the task runs (installed before ready, so a
        SIGHUP never meets the default action, which would kill the daemon)."""
        with trio.open_signal_receiver(signal.SIGHUP) as signals:
            task_status.started()
            async for _ in signals:
                log.info("received SIGHUP: re-reading %s", self.path or "(no config file)")
                try:
                    await self.reload()
                except Exception:  # a reload must never take the daemon down
                    log.exception("reload failed; the old config stays in force")
                    self._finish("internal error")


__all__ = ["Reloader", "apply_config"]
