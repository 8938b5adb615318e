"""``voicecall systemd-unit``: print a systemd system unit filled in for this config and user.

The unit is what the daemon was built for (DESIGN section 2): ``Type=notify`` (READY=1 once
every part listens), ``WatchdogSec=`` (``systemd.py`` pings at half of it from the event
loop), ``ExecReload=`` sends SIGHUP (``reloader.py``), ``Restart=on-failure``, and hardening
that leaves the daemon only the store (and the socket's directory) to write.

``render_unit`` is pure (values in, text out) so that tests, and ``docs/voicecall.service``,
come from the same code; the command only looks up the values. Paths are checked first: a
newline in a path would start a new directive, so control characters are refused, and ``%``
and ``$`` are escaped so systemd reads them literally.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..errors import Failed
from .outcome import EXIT_OK

RUNTIME_DIR = "/run/voicecall"  # RuntimeDirectory=voicecall
STATE_DIR = "/var/lib/voicecall"  # StateDirectory=voicecall
WATCHDOG_S = 30  # pinged every 15 s; a loop stuck for 30 s is restarted
STOP_MARGIN_S = 15  # beyond shutdownGraceSeconds: hang-ups, HTTP drain, journal flush


@dataclass(frozen=True)
class Unit:
    """Everything the unit depends on (absolute paths)."""

    executable: tuple[str, ...]  # the venv's voicecall, or (python, "-m", "voicecall_trio.cli")
    config: str
    user: str
    group: str
    store: str
    socket: str
    grace_s: float = 5.0
    log_format: str = "text"


def check_path(what: str, value: str) -> str:
    """``value`` if it can go into a unit file; ``Failed`` naming ``what`` otherwise."""
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise Failed(f"{what} {value!r} contains a control character; a unit file cannot "
                     "hold it")
    if not value.startswith("/"):
        raise Failed(f"{what} {value!r} must be an absolute path")
    return value


def quote(word: str) -> str:
    """One word of a unit file: specifiers (``%``) and variables (``$``) taken literally,
    quoted when it holds a space or a quote."""
    word = word.replace("%", "%%").replace("$", "$$")
    if any(ch in word for ch in " \t\"'\\"):
        return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return word


def _under(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def render_unit(unit: Unit) -> str:
    """The text of ``voicecall.service`` for ``unit``."""
    for what, value in (("the config file", unit.config), ("the store", unit.store),
                        ("the control socket", unit.socket)):
        check_path(what, value)
    for what, value in (("the user", unit.user), ("the group", unit.group)):
        if not value or any(ch.isspace() or ord(ch) < 0x20 for ch in value):
            raise Failed(f"{what} {value!r} cannot go into a unit file")
    check_path("the voicecall executable", unit.executable[0])
    for word in unit.executable[1:]:
        check_path("the voicecall executable", "/" + word)  # control characters only
    exec_words = [quote(w) for w in unit.executable]
    exec_words += ["serve", "--config", quote(unit.config)]
    if unit.log_format != "text":
        exec_words += ["--log-format", quote(unit.log_format)]
    writable = [unit.store]
    socket_dir = os.path.dirname(unit.socket)
    if not _under(unit.socket, RUNTIME_DIR) and not _under(socket_dir, unit.store):
        writable.append(socket_dir)
    stop_s = math.ceil(unit.grace_s) + STOP_MARGIN_S
    notes: list[str] = []
    if not _under(unit.socket, RUNTIME_DIR):
        notes += [f"# Control socket: {unit.socket}. To keep it in RuntimeDirectory (made at",
                  f'# start, removed at stop), set control.socketPath = "{RUNTIME_DIR}/'
                  'voicecall.sock".']
    if not _under(unit.store, STATE_DIR):
        notes += [f"# Store: {unit.store}, writable through ReadWritePaths (it must exist",
                  f'# before the unit starts). To use StateDirectory, set store = "{STATE_DIR}".']
    lines = [
        "# voicecall.service: written by `voicecall systemd-unit` (see docs/operations.md).",
        "# Install it, then start it:",
        "#   voicecall systemd-unit | sudo tee /etc/systemd/system/voicecall.service",
        "#   sudo systemctl daemon-reload && sudo systemctl enable --now voicecall",
        "# Re-read the config without dropping calls: systemctl reload voicecall (SIGHUP).",
        *notes,
        "[Unit]",
        "Description=voicecall-trio: the phone line of a personal AI assistant",
        "After=network-online.target",
        "Wants=network-online.target",
        "",
        "[Service]",
        "Type=notify",
        "NotifyAccess=main",
        f"User={unit.user}",
        f"Group={unit.group}",
        "ExecStart=" + " ".join(exec_words),
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "RestartSec=2",
        f"WatchdogSec={WATCHDOG_S}",
        "# SIGTERM ends live calls gracefully (shutdownGraceSeconds) before the daemon exits.",
        "KillSignal=SIGTERM",
        f"TimeoutStopSec={stop_s}",
        "RuntimeDirectory=voicecall",
        "RuntimeDirectoryMode=0700",
        "StateDirectory=voicecall",
        "StateDirectoryMode=0700",
        "UMask=0077",
        "# serve.maxConnections HTTP connections plus 128 descriptors for the socket, journal",
        "# and outgoing requests; the daemon lowers its cap itself (and logs it) if needed.",
        "LimitNOFILE=1024",
        "NoNewPrivileges=true",
        "ProtectSystem=strict",
        "ProtectHome=read-only",
        "PrivateTmp=true",
        "ReadWritePaths=" + " ".join(quote(p) for p in writable),
        "# Secrets may also come from the environment (OPENAI_API_KEY, TWILIO_AUTH_TOKEN, ...):",
        "# EnvironmentFile=/etc/voicecall/env",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ]
    return "\n".join(lines)


def find_executable() -> tuple[str, ...]:
    """The ``voicecall`` next to this Python (a venv's bin), else on PATH, else
    ``python -m voicecall_trio.cli``."""
    import shutil

    beside = Path(sys.executable).parent / "voicecall"  # not resolved: keep the venv's path
    if beside.is_file() and os.access(beside, os.X_OK):
        return (str(beside.absolute()),)
    found = shutil.which("voicecall")
    if found:
        return (os.path.abspath(found),)
    return (os.path.abspath(sys.executable), "-m", "voicecall_trio.cli")


def systemd_unit(*, config: str | None = None,
                 log_format: Literal["text", "json"] = "text") -> int:
    """Print a systemd unit for the daemon, filled in for this config and user.

    Parameters
    ----------
    config
        Config file the unit's daemon reads (default VOICECALL_CONFIG or
        ~/.config/voicecall/config.{toml,json,json5}; `voicecall init` writes one).
    log_format
        The daemon's --log-format (text or json) in ExecStart.
    """
    import grp
    import pwd

    from ..config import load_config
    from ..configfile import default_config_path

    path = config if config is not None else default_config_path(os.environ)
    if path is None:
        raise Failed("no config file: run `voicecall init` first, or pass --config")
    path = os.path.abspath(os.path.expanduser(path))
    cfg = load_config(path)
    # the unit's environment has no VOICECALL_SOCKET: the socket is the config's
    user = pwd.getpwuid(os.getuid()).pw_name
    group = grp.getgrgid(os.getgid()).gr_name
    unit = Unit(executable=find_executable(), config=path, user=user, group=group,
                store=str(cfg.store_dir.absolute()), socket=str(cfg.socket_path({}).absolute()),
                grace_s=cfg.shutdown_grace_seconds, log_format=log_format)
    text = render_unit(unit)
    if os.getuid() == 0:
        print("note: the unit runs the daemon as root; a dedicated user is safer",
              file=sys.stderr)
    for what, value in (("config", unit.config), ("store", unit.store),
                        ("socket", unit.socket)):
        if _under(value, "/tmp") or _under(value, "/var/tmp"):
            print(f"note: the {what} {value} is in a temporary directory, which PrivateTmp "
                  "hides from the daemon; move it", file=sys.stderr)
    if not os.path.isdir(unit.store):
        print(f"note: create the store before starting the unit: mkdir -p -m 700 {unit.store}",
              file=sys.stderr)
    sys.stdout.write(text)
    return EXIT_OK


__all__ = ["Unit", "check_path", "find_executable", "quote", "render_unit", "systemd_unit"]
