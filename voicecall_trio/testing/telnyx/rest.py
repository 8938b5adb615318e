"""The fake Telnyx's REST API, as an ASGI app: Bearer auth, ``POST /v2/calls``, the call actions
(answer, reject, speak, transcription start/stop, hangup) with ``command_id`` idempotency,
``GET /v2/calls/{id}``, Telnyx-shaped JSON errors, injected failures, and a record of every
request. Each accepted action drives the call simulation.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

from .callee import CallSimulation
from .values import FakeCall, Receive, RecordedRequest, Scope, Send

ACTIONS = frozenset(
    {"answer", "reject", "speak", "transcription_start", "transcription_stop", "hangup"}
)
CALL_ENDED = ("90018", "Call has already ended")


def _error(status: int, code: str, title: str, detail: str = "") -> tuple[int, Any]:
    err: dict[str, Any] = {"code": code, "title": title}
    if detail:
        err["detail"] = detail
    return status, {"errors": [err]}


class RestApi(CallSimulation):
    """Serves the REST subset the daemon uses (``_asgi``, run by ``BackgroundService``)."""

    async def _asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", ())}
        status, payload = self._handle(scope["method"], scope["path"], headers,
                                       b"".join(chunks))
        data = json.dumps(payload).encode("utf-8")
        await send({
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"),
                        (b"content-length", str(len(data)).encode("ascii"))],
        })
        await send({"type": "http.response.body", "body": data})

    def _handle(
        self, method: str, path: str, headers: Mapping[str, str], raw: bytes
    ) -> tuple[int, Any]:
        route = _route(method, path)
        ccid, action = route if route is not None else (None, None)
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
        authorized = headers.get("authorization") == f"Bearer {self.api_key}"
        status, payload = self._respond(route, method, body, authorized, raw)
        command_id = body.get("command_id") if isinstance(body, dict) else None
        self.requests.append(RecordedRequest(method, path, ccid, action, body, command_id,
                                             authorized, status))
        self._notify()
        return status, payload

    def _respond(
        self, route: tuple[str | None, str] | None, method: str, body: Any,
        authorized: bool, raw: bytes,
    ) -> tuple[int, Any]:
        if route is None:
            return _error(404, "10005", "Resource not found")
        if not authorized:
            return _error(401, "10009", "Authentication failed",
                          "The API key is missing or wrong.")
        ccid, action = route
        for rule in self._fail:
            if rule.take_request(action, ccid):
                return _error(rule.status, "10011", "Service unavailable",
                              "injected by FakeTelnyx.fail_next")
        if method == "POST" and (raw and not isinstance(body, dict)):
            return _error(400, "10015", "Bad request", "The body is not a JSON object.")
        params: dict[str, Any] = body if isinstance(body, dict) else {}
        if action == "create":
            return self._create(params)
        if action == "balance":
            return 200, {"data": {"record_type": "balance", "balance": "10.00",
                                  "currency": "USD", "available_credit": "10.00"}}
        assert ccid is not None
        call = self.calls.get(ccid)
        if call is None:
            return _error(404, "10005", "Resource not found", "Unknown call_control_id.")
        if action == "get":
            return 200, {"data": self._call_data(call)}
        return self._action(call, action, params)

    def _call_data(self, call: FakeCall) -> dict[str, Any]:
        return {
            "record_type": "call",
            "call_control_id": call.call_control_id,
            "call_leg_id": call.call_leg_id,
            "call_session_id": call.call_session_id,
            "client_state": call.client_state,
            "is_alive": call.alive,
            "start_time": call.start_time,
        }

    def _create(self, params: Mapping[str, Any]) -> tuple[int, Any]:
        missing = [k for k in ("connection_id", "to", "from") if not params.get(k)]
        if missing:
            return _error(422, "10032", "Missing parameter", f"{missing[0]} is required")
        if params["connection_id"] != self.connection_id:
            return _error(422, "10015", "Invalid connection_id")
        to = str(params["to"])
        call = self._new_call(None, direction="outbound", from_=str(params["from"]), to=to,
                              callee=self.callee_for(to),
                              webhook_url=params.get("webhook_url") or None)
        call.client_state = params.get("client_state") or None
        if params.get("command_id"):
            call.command_ids.add(str(params["command_id"]))
        self._emit(call, "call.initiated", direction="outgoing", state="bridging",
                   **self._parties(call))
        if call.callee.answer_delay == 0:
            self._pick_up(call)
        elif call.callee.answer_delay is not None:
            assert self._nursery is not None
            self._nursery.start_soon(self._ring, call)
        self._notify()
        return 200, {"data": {**self._call_data(call), "call_duration": 0}}

    def _action(self, call: FakeCall, action: str, params: Mapping[str, Any]
                ) -> tuple[int, Any]:
        command_id = params.get("command_id")
        if command_id and command_id in call.command_ids:
            return 200, {"data": {"result": "ok"}}  # Telnyx ignores a repeated command_id
        if not call.alive:
            return _error(422, *CALL_ENDED)
        if command_id:
            call.command_ids.add(str(command_id))
        if params.get("client_state"):
            call.client_state = str(params["client_state"])
        if action == "answer":
            if call.direction != "inbound" or call.answered:
                return _error(422, "90034", "Call is not in a state to be answered")
            self._answer(call)
        elif action == "reject":
            if call.direction != "inbound" or call.answered:
                return _error(422, "90034", "Call is not in a state to be rejected")
            self._end(call, "call_rejected", "callee")
        elif action == "hangup":
            self._end(call, "normal_clearing",
                      "caller" if call.direction == "outbound" else "callee")
        elif action == "speak":
            if not call.answered:
                return _error(422, "90034", "Call is not answered yet")
            if not params.get("payload"):
                return _error(422, "10032", "Missing parameter", "payload is required")
            self._speak_started(call, str(params["payload"]))
        elif action == "transcription_start":
            call.transcribing = True
            if call.owed_reply and not call.speaking:
                self._reply(call)
        elif action == "transcription_stop":
            call.transcribing = False
        self._notify()
        return 200, {"data": {"result": "ok"}}


def _route(method: str, path: str) -> tuple[str | None, str] | None:
    """``(call_control_id, action)`` for a path the fake serves, else ``None``."""
    parts = [unquote(p) for p in path.strip("/").split("/")]
    if parts and parts[0] == "v2":
        parts = parts[1:]
    if parts == ["balance"] and method == "GET":
        return None, "balance"  # doctor's cheap authenticated read
    if not parts or parts[0] != "calls":
        return None
    if len(parts) == 1 and method == "POST":
        return None, "create"
    if len(parts) == 2 and method == "GET":
        return parts[1], "get"
    if len(parts) == 4 and parts[2] == "actions" and parts[3] in ACTIONS and method == "POST":
        return parts[1], parts[3]
    return None
