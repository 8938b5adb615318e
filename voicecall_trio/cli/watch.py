"""``voicecall watch``: print the daemon's live call events as they happen.

Subscribes first, then looks the call up, so no event between the two is missed; with a call
id it stops once that call reaches a terminal state.
"""

from __future__ import annotations

import sys

from ..errors import Failed
from ..states import TERMINAL_STATE_NAMES as TERMINAL_STATES
from .connect import socket_path
from .outcome import EXIT_OK
from .render import describe_call, describe_event, emit


def watch(*, call_id: str | None = None, json: bool = False, socket: str | None = None,
          config: str | None = None) -> int:
    """Print live call events as they happen (Ctrl-C stops).

    Parameters
    ----------
    call_id
        Only this call's events; stop when it ends.
    json
        Print each event as a JSON line.
    socket
        Control socket path.
    config
        Config file, used to find the socket.
    """
    from ..rpc.client import SyncClient

    with SyncClient(socket_path(socket, config)) as client:
        client.call("voicecall.subscribe", {})
        if call_id:
            found = client.call("voicecall.status", {"callId": call_id})
            if not found.get("found"):
                raise Failed(f"Call not found: {call_id}")
            if found["call"]["state"] in TERMINAL_STATES:
                emit(found["call"], json, describe_call)
                return EXIT_OK
        # subscribed: from here on no event is missed (scripts can wait for this line)
        print(f"watching {call_id or 'all calls'} (Ctrl-C stops)", file=sys.stderr, flush=True)
        try:
            for note in client.notifications():
                event = note.params
                if call_id and event.get("callId") != call_id:
                    continue
                emit(event, json, describe_event)
                sys.stdout.flush()
                if call_id and event.get("state") in TERMINAL_STATES:
                    return EXIT_OK
        except KeyboardInterrupt:
            return EXIT_OK
    return EXIT_OK
