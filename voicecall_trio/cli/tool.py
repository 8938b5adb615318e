"""``voicecall tool``: one ``voice_call`` agent-tool action from the shell, or its schema.

The tool's contract is JSON on stdout, errors included: agents read nothing else. The schema
and the dispatcher live in ``voicecall_trio.tool``; this is the command around them.
"""

from __future__ import annotations

import json as _json
import sys
from typing import Any

from ..errors import Failed
from .calls import check_e164
from .connect import rpc
from .outcome import EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE


def tool(input: str | None = None, *, schema: bool = False, socket: str | None = None,
         config: str | None = None) -> int:
    """Run one voice_call tool action given as JSON, or print the tool's schema.

    Parameters
    ----------
    input
        The action as JSON, e.g. '{"action": "get_status", "callId": "..."}'; "-" reads stdin.
    schema
        Print the tool's JSON schema and exit.
    socket
        Control socket path.
    config
        Config file, used to find the socket.
    """
    from ..tool import TOOL_SCHEMA, run_tool

    if schema:
        print(_json.dumps(TOOL_SCHEMA, indent=2))
        return EXIT_OK
    if input is None:
        print(_json.dumps({"error": "tool needs the action as JSON (or --schema)"}))
        return EXIT_USAGE
    text = sys.stdin.read() if input == "-" else input
    try:
        args = _json.loads(text)
    except ValueError as exc:
        print(_json.dumps({"error": f"tool input is not valid JSON: {exc}"}))
        return EXIT_USAGE
    if isinstance(args, dict) and isinstance(args.get("to"), str):
        try:
            check_e164(args["to"], "to")
        except Failed as exc:
            print(_json.dumps({"error": str(exc)}))
            return EXIT_FAILED
    from ..errors import DaemonUnreachable

    unreachable = False

    def call_daemon(method: str, params: dict[str, Any]) -> Any:
        nonlocal unreachable
        try:
            return rpc(socket, config, method, params)
        except DaemonUnreachable:
            unreachable = True
            raise

    result = run_tool(args, call_daemon)
    print(_json.dumps(result, ensure_ascii=False))
    if unreachable:
        print(f"error: {result.get('error')}", file=sys.stderr)
        return EXIT_UNREACHABLE
    return EXIT_FAILED if "error" in result else EXIT_OK
