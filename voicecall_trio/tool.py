"""The ``voice_call`` agent tool: its JSON schema and a dispatcher over the RPC client.

An LLM agent calls the tool with ``{"action": ..., ...}``; each action maps to one
``voicecall.*`` method. The dispatcher never raises: a failure is ``{"error": message}``, the
shape agents already expect from the seed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

TOOL_NAME = "voice_call"

ACTIONS: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    # action: (rpc method, required params, optional params)
    "initiate_call": ("voicecall.initiate", ("message",), ("to", "mode")),
    "continue_call": ("voicecall.continue", ("callId", "message"), ()),
    "speak_to_user": ("voicecall.speak", ("callId", "message"), ()),
    "end_call": ("voicecall.end", ("callId",), ()),
    "get_status": ("voicecall.status", ("callId",), ()),
}

TOOL_SCHEMA: dict[str, Any] = {
    "name": TOOL_NAME,
    "description": (
        "Place and manage phone calls. initiate_call dials `to` (E.164, defaults to the "
        "configured toNumber) and says `message`; mode notify hangs up after the message, "
        "conversation keeps the line open. continue_call says `message` and returns what the "
        "callee answers. speak_to_user says `message` without waiting. end_call hangs up. "
        "get_status returns the call record."
    ),
    "parameters": {
        "type": "object",
        "properties": {
            "action": {"type": "string", "enum": list(ACTIONS)},
            "message": {"type": "string", "description": "What to say to the callee."},
            "to": {"type": "string", "pattern": r"^\+[1-9]\d{1,14}$",
                   "description": "Phone number in E.164 format, like +15550001234."},
            "mode": {"type": "string", "enum": ["notify", "conversation"]},
            "callId": {"type": "string", "description": "The callId from initiate_call."},
        },
        "required": ["action"],
        "additionalProperties": False,
        "allOf": [
            {"if": {"properties": {"action": {"const": action}}},
             "then": {"required": list(required)}}
            for action, (_, required, _) in ACTIONS.items()
        ],
    },
}

RpcCall = Callable[[str, dict[str, Any]], Any]


def run_tool(args: Any, call: RpcCall) -> dict[str, Any]:
    """Run one tool action through ``call(method, params)``; never raises."""
    if not isinstance(args, dict):
        return {"error": "tool input must be a JSON object"}
    action = args.get("action")
    if action not in ACTIONS:
        return {"error": f"unknown action {action!r}; expected one of {', '.join(ACTIONS)}"}
    method, required, optional = ACTIONS[action]
    allowed = {"action", *required, *optional}
    extra = sorted(set(args) - allowed)
    if extra:
        return {"error": f"{action}: unexpected parameter(s): {', '.join(extra)}"}
    missing = [name for name in required if not isinstance(args.get(name), str)]
    if missing:
        return {"error": f"{action}: missing required parameter(s): {', '.join(missing)}"}
    params = {k: v for k, v in args.items() if k != "action" and v is not None}
    try:
        result = call(method, params)
    except Exception as exc:  # the tool reports, the agent decides
        message = getattr(exc, "message", None) or str(exc)
        return {"error": message}
    if action == "initiate_call":
        return {"callId": result["callId"], "initiated": bool(result.get("initiated", True))}
    if action == "continue_call":
        return {"success": bool(result.get("success")), "transcript": result.get("transcript")}
    if action == "get_status":
        return {"found": bool(result.get("found")), "call": result.get("call")}
    return {"success": bool(result.get("success"))}
