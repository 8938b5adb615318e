"""The call-control commands: ``call``, ``continue``, ``speak``, ``end``, ``status`` and
``simulate-inbound``, each one JSON-RPC request to the daemon.

Each command is a plain keyword-only function; its signature and its numpydoc docstring are
its flags and its ``--help`` (see ``cli/__init__``). Annotations stay importable at run time
(``Literal``) because cyclopts evaluates them.
"""

from __future__ import annotations

import re
import sys
from typing import Any, Literal

from ..errors import Failed
from .connect import rpc
from .outcome import EXIT_FAILED, EXIT_OK
from .render import call_row, describe_call, emit

E164_PATTERN = r"^\+[1-9]\d{1,14}$"


def check_e164(number: str, what: str = "--to") -> None:
    """Refuse a number that is not E.164 before the daemon is asked (``Failed``)."""
    if not re.match(E164_PATTERN, number):
        raise Failed(
            f"{what} {number!r} is not an E.164 phone number (a + and up to 15 digits, "
            "like +15555550123)"
        )


def call(*, to: str | None = None, message: str, mode: Literal["notify", "conversation"] | None
         = None, json: bool = False, socket: str | None = None, config: str | None = None) -> int:
    """Place an outbound call.

    Parameters
    ----------
    to
        Number to call, E.164 (default: toNumber from the config).
    message
        What to say when the callee answers.
    mode
        notify (say it and hang up) or conversation (keep the line open).
    json
        Print the result as JSON.
    socket
        Control socket path.
    config
        Config file, used to find the socket.
    """
    if to is not None:
        check_e164(to)
    params: dict[str, Any] = {"message": message}
    if to is not None:
        params["to"] = to
    if mode is not None:
        params["mode"] = mode
    result = rpc(socket, config, "voicecall.initiate", params)
    emit(result, json, lambda r: f"call placed: {r['callId']}")
    return EXIT_OK


def continue_(*, call_id: str, message: str, json: bool = False, socket: str | None = None,
              config: str | None = None) -> int:
    """Say something and wait for the callee's answer (up to transcriptTimeoutMs).

    Parameters
    ----------
    call_id
        The call's id.
    message
        What to say.
    json
        Print the result as JSON.
    socket
        Control socket path.
    config
        Config file, used to find the socket.
    """
    result = rpc(socket, config, "voicecall.continue", {"callId": call_id, "message": message})
    emit(result, json, lambda r: f"callee: {r.get('transcript')}")
    return EXIT_OK


def speak(*, call_id: str, message: str, json: bool = False, socket: str | None = None,
          config: str | None = None) -> int:
    """Say something on a live call without waiting for an answer.

    Parameters
    ----------
    call_id
        The call's id.
    message
        What to say.
    json
        Print the result as JSON.
    socket
        Control socket path.
    config
        Config file, used to find the socket.
    """
    result = rpc(socket, config, "voicecall.speak", {"callId": call_id, "message": message})
    emit(result, json, lambda r: "ok")
    return EXIT_OK


def end(*, call_id: str, json: bool = False, socket: str | None = None,
        config: str | None = None) -> int:
    """Hang up a call (ending an ended call is fine).

    Parameters
    ----------
    call_id
        The call's id.
    json
        Print the result as JSON.
    socket
        Control socket path.
    config
        Config file, used to find the socket.
    """
    result = rpc(socket, config, "voicecall.end", {"callId": call_id})
    emit(result, json, lambda r: "call ended")
    return EXIT_OK


def status(*, call_id: str | None = None, json: bool = False, socket: str | None = None,
           config: str | None = None) -> int:
    """Show one call, or the active calls and those ended since the daemon started.

    Parameters
    ----------
    call_id
        The call's id; without it, list calls.
    json
        Print the result as JSON.
    socket
        Control socket path.
    config
        Config file, used to find the socket.
    """
    params = {"callId": call_id} if call_id else {}
    result = rpc(socket, config, "voicecall.status", params)
    if call_id and not result.get("found"):
        if json:
            emit(result, json, str)
        print(f"error: Call not found: {call_id}", file=sys.stderr)
        return EXIT_FAILED
    if call_id:
        emit(result, json, lambda r: describe_call(r["call"]))
        return EXIT_OK
    if not json:  # the URL carriers call now (a tunnel's may change while the daemon runs)
        health = rpc(socket, config, "daemon.health")
        print(f"public URL: {health.get('publicUrl') or 'none'}")
    emit(result, json, lambda r: "\n".join(call_row(c) for c in r["calls"]) or "no calls")
    return EXIT_OK


def simulate_inbound(*, from_: str, to: str | None = None, json: bool = False,
                     socket: str | None = None, config: str | None = None) -> int:
    """Simulate an inbound call on the mock carrier (subject to inboundPolicy).

    Parameters
    ----------
    from_
        The caller's number, E.164.
    to
        The number called (default: fromNumber).
    json
        Print the result as JSON.
    socket
        Control socket path.
    config
        Config file, used to find the socket.
    """
    params: dict[str, Any] = {"from": from_}
    if to:
        params["to"] = to
    result = rpc(socket, config, "voicecall.simulateInbound", params)
    if result.get("accepted") or json:
        emit(result, json, lambda r: f"accepted: {r['callId']}")
    if not result.get("accepted"):
        print("error: the call was refused (inboundPolicy / allowFrom / maxConcurrentCalls)",
              file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK
