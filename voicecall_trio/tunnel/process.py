"""Stopping a tunnel's child process: SIGTERM, a grace period, then SIGKILL (trio).

Used for the ngrok agent when its tunnel ends and as ``trio.run_process``'s
``deliver_cancel`` for ``tailscale`` commands, so a child that ignores SIGTERM is killed
quietly instead of being left behind.
"""

from __future__ import annotations

import trio

STOP_GRACE_S = 5.0


async def stop_process(process: trio.Process, grace_s: float = STOP_GRACE_S) -> None:
    """Terminate, wait up to ``grace_s``, then kill; always reaps the child. Shielded."""
    with trio.CancelScope(shield=True):
        if process.returncode is None:
            process.terminate()
            with trio.move_on_after(grace_s):
                await process.wait()
        if process.returncode is None:
            process.kill()
        await process.wait()
