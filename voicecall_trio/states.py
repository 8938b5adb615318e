"""The names of a call's states, as plain strings: the one definition of which ones are final.

``model.CallState`` is built on these names, and so are the journal's replay (``replay.py``), the
CLI (``cli/watch.py``) and the tests. This module is stdlib-only and imports nothing, so the
CLI can use it without paying for msgspec or trio at start-up. A terminal state's name doubles
as the call's end reason (``events.EndReason``).
"""

from __future__ import annotations

LIVE_STATE_NAMES: tuple[str, ...] = (
    "initiated", "ringing", "answered", "active", "speaking", "listening",
)
# the callee is on the line (the bot can speak)
CONNECTED_STATE_NAMES: frozenset[str] = frozenset({"answered", "active", "speaking",
                                                    "listening"})
# a call in one of these never moves again
TERMINAL_STATE_NAMES: frozenset[str] = frozenset({
    "completed", "hangup-user", "hangup-bot", "timeout", "error", "failed", "no-answer",
    "busy", "voicemail",
})

__all__ = ["CONNECTED_STATE_NAMES", "LIVE_STATE_NAMES", "TERMINAL_STATE_NAMES"]
