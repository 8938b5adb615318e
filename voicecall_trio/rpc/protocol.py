"""JSON-RPC 2.0 over newline-delimited JSON, as a sans-IO codec (bytes in, messages out).

``LineSplitter`` turns a byte stream into lines and enforces the 1 MiB line limit without
ever buffering more than that; ``parse_line`` turns one line into a ``Request``,
``Notification``, ``Response`` or a ``ProtocolError`` that already knows the error reply to
send. Both the server and the clients (sync and trio) use it, so they cannot disagree.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

MAX_LINE_BYTES = 1024 * 1024

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603

RequestId = int | str | None

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


class Request(NamedTuple):
    id: int | str
    method: str
    params: dict[str, Any]


class Notification(NamedTuple):
    method: str
    params: dict[str, Any]


class Response(NamedTuple):
    id: RequestId
    result: Any = None
    error: dict[str, Any] | None = None


class ProtocolError(NamedTuple):
    """A line that could not be understood; ``reply`` is what to send back (None: nothing)."""

    id: RequestId
    code: int
    message: str

    def reply(self) -> bytes:
        return encode_error(self.id, self.code, self.message)


Message = Request | Notification | Response | ProtocolError


class LineTooLong(Exception):
    pass


class LineSplitter:
    """Accumulates bytes and yields complete lines; a line over the limit is discarded whole."""

    def __init__(self, max_line: int = MAX_LINE_BYTES) -> None:
        self._max = max_line
        self._buffer = bytearray()
        self._discarding = False

    def feed(self, data: bytes | bytearray) -> list[bytes | LineTooLong]:
        out: list[bytes | LineTooLong] = []
        self._buffer += data
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > self._max:
                    if not self._discarding:
                        out.append(LineTooLong())
                    self._discarding = True
                    self._buffer.clear()
                return out
            line = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            if self._discarding:
                self._discarding = False
                continue
            if len(line) > self._max:
                out.append(LineTooLong())
                continue
            if line.strip():
                out.append(line)

    @property
    def pending(self) -> int:
        return len(self._buffer)


def _valid_id(value: Any) -> bool:
    return value is None or (isinstance(value, int | str) and not isinstance(value, bool))


def parse_line(line: bytes) -> Message:
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        return ProtocolError(None, PARSE_ERROR, "Parse error: not valid JSON")
    if not isinstance(obj, dict):
        return ProtocolError(None, INVALID_REQUEST, "Invalid Request: expected a JSON object")
    msg_id = obj.get("id")
    has_id = "id" in obj
    if not _valid_id(msg_id):
        return ProtocolError(None, INVALID_REQUEST, "Invalid Request: bad id")
    if obj.get("jsonrpc") != "2.0":
        return ProtocolError(msg_id, INVALID_REQUEST, 'Invalid Request: "jsonrpc" must be "2.0"')
    if "method" in obj:
        method = obj["method"]
        if not isinstance(method, str) or not method:
            return ProtocolError(msg_id, INVALID_REQUEST, "Invalid Request: bad method")
        params = obj.get("params", {})
        if params is None:
            params = {}
        if not isinstance(params, dict):
            return ProtocolError(
                msg_id, INVALID_PARAMS, "Invalid params: params must be an object"
            )
        if not has_id:
            return Notification(method, params)
        if msg_id is None:
            return ProtocolError(None, INVALID_REQUEST, "Invalid Request: id must not be null")
        return Request(msg_id, method, params)
    if has_id and ("result" in obj or "error" in obj):
        error = obj.get("error")
        if error is not None and not isinstance(error, dict):
            return ProtocolError(msg_id, INVALID_REQUEST, "Invalid Response: bad error")
        return Response(msg_id, obj.get("result"), error)
    return ProtocolError(msg_id, INVALID_REQUEST, "Invalid Request: no method")


def encode_request(msg_id: int | str, method: str, params: dict[str, Any] | None = None) -> bytes:
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": msg_id, "method": method}
    if params is not None:
        body["params"] = params
    return _dumps(body).encode() + b"\n"


def encode_notification(method: str, params: dict[str, Any]) -> bytes:
    return _dumps({"jsonrpc": "2.0", "method": method, "params": params}).encode() + b"\n"


def encode_result(msg_id: RequestId, result: Any) -> bytes:
    return _dumps({"jsonrpc": "2.0", "id": msg_id, "result": result}).encode() + b"\n"


def encode_error(msg_id: RequestId, code: int, message: str, data: Any = None) -> bytes:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return _dumps({"jsonrpc": "2.0", "id": msg_id, "error": error}).encode() + b"\n"


class RpcError(Exception):
    """An error reply, raised by clients and by method handlers."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    @classmethod
    def from_reply(cls, error: dict[str, Any]) -> RpcError:
        return cls(int(error.get("code", INTERNAL_ERROR)), str(error.get("message", "")),
                   error.get("data"))
