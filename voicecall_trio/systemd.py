"""sd_notify without libsystemd: one datagram to ``$NOTIFY_SOCKET`` per state change, and the
watchdog task.

systemd (``Type=notify``) learns from us that start-up finished (``READY=1``), that a reload
is under way (``RELOADING=1`` ... ``READY=1``), that we are stopping (``STOPPING=1``), and,
with ``WatchdogSec=``, that the process is still alive (``WATCHDOG=1``). The watchdog ping is
sent by a trio task, so it goes out only while the event loop runs tasks: a loop blocked by a
stuck call, a busy thread holding the GIL forever or a deadlock stops the pings, and systemd
restarts the daemon (``Restart=on-failure``).

Sending never blocks the event loop and never raises: the socket is non-blocking, and a
systemd that does not read (a full queue) or has gone away costs one dropped datagram.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

import trio

log = logging.getLogger("voicecall.systemd")

# a misconfigured WatchdogSec of a few microseconds must not turn the ping into a busy loop
MIN_INTERVAL_S = 0.01


def notify(state: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send ``state`` (e.g. ``READY=1``); False when not under systemd or it failed."""
    env = os.environ if environ is None else environ
    address = env.get("NOTIFY_SOCKET")
    if not address or not (address.startswith("/") or address.startswith("@")):
        return False  # unset, or a transport we do not speak (vsock:...)
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.setblocking(False)
            sock.sendto(state.encode(), address)
        return True
    except OSError:
        return False


def watchdog_interval_s(environ: Mapping[str, str] | None = None,
                        pid: int | None = None) -> float | None:
    """Half of ``WATCHDOG_USEC``, as systemd recommends, when the watchdog is on for us
    (``WATCHDOG_PID`` unset or ours); None otherwise or when the value is not a positive
    number of microseconds."""
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC", "").strip()
    owner = env.get("WATCHDOG_PID", "").strip()
    if not usec or (owner and owner != str(os.getpid() if pid is None else pid)):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return max(MIN_INTERVAL_S, value / 2_000_000) if value > 0 else None


def reloading(environ: Mapping[str, str] | None = None) -> bool:
    """``RELOADING=1`` with the monotonic timestamp systemd wants alongside it."""
    stamp = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify(f"RELOADING=1\nMONOTONIC_USEC={stamp}", environ)


async def watchdog(interval_s: float, environ: Mapping[str, str] | None = None) -> None:
    """Ping ``WATCHDOG=1`` now and every ``interval_s`` for as long as the task runs. A ping
    that cannot be sent is logged once (then again only after one got through): systemd will
    soon think the daemon hung, and the log should say why."""
    reachable = True
    while True:
        sent = notify("WATCHDOG=1", environ)
        if not sent and reachable:
            log.warning("watchdog: cannot send WATCHDOG=1 to NOTIFY_SOCKET; systemd will "
                        "restart the daemon if this goes on")
        reachable = sent
        await trio.sleep(interval_s)


__all__ = ["MIN_INTERVAL_S", "notify", "reloading", "watchdog", "watchdog_interval_s"]
