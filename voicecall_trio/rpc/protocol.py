"""JSON-RPC 2.0 over newline-delimited JSON, as a sans-IO codec (bytes in, messages out).

``LineSplitter`` turns a byte stream into lines and enforces the 1 MiB line limit without
ever buffering more than that; ``parse_line`` turns one line into a ``Request``,
``Notification``, ``Response`` or a ``ProtocolError`` that already knows the error reply to
send. ``peer.Peer`` keeps a connection's books (ids, pending requests) on top of this codec;
the server and both clients (sync and trio) use it, so they cannot disagree.

Text is checked here, at the boundary. JSON can spell a lone UTF-16 surrogate (``"\\ud83d"``,
what a gateway sends when it cuts a string inside an emoji); Python decodes it into a ``str``
that can never be encoded again, so a request carrying one would poison every reply and
journal line that repeats it. A request with such a string (in ``params``, ``method`` or
``id``) is refused with -32602 naming the field; a response (an agent's reply) has its
strings repaired (each lone surrogate becomes U+FFFD), since refusing a reply helps no one.
Lines must be UTF-8: raw bytes are decoded strictly, so an encoded surrogate is a parse error.

Encoders are strict for results, requests and notifications (a ``str`` that cannot be
encoded raises ``UnicodeEncodeError``, a ``ValueError``: callers turn it into an error reply)
and lenient for error replies, whose message must always get out.
"""

from __future__ import annotations

import json
import re
from typing import Any, NamedTuple

from ..errors import LineTooLong
from ..errors import RpcError as RpcError  # re-exported: the clients' public API

MAX_LINE_BYTES = 1024 * 1024

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603

RequestId = int | str | None

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode

# Python decodes a valid surrogate pair into one code point, so any surrogate left in a str
# is a lone one: text that has no UTF-8 encoding.
_SURROGATE = re.compile("[\ud800-\udfff]")


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


def is_valid_text(text: str) -> bool:
    """True when ``text`` can be encoded as UTF-8 (it holds no lone surrogate)."""
    return _SURROGATE.search(text) is None


def repair_text(text: str) -> str:
    """``text`` with each lone surrogate replaced by U+FFFD (the replacement character)."""
    return _SURROGATE.sub("\ufffd", text)


def invalid_text_path(value: Any) -> str | None:
    """Where the first string (or key) that is not valid Unicode is in ``value``, as a path
    such as ``message`` or ``history[2].text``; None when all text is valid. Iterative: a
    value nested as deep as the JSON parser allows cannot overflow the stack here."""
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            if not is_valid_text(item):
                return path or "(value)"
        elif isinstance(item, dict):
            for key, child in item.items():
                name = f"{path}.{key}" if path else str(key)
                if isinstance(key, str) and not is_valid_text(key):
                    return repair_text(name)
                stack.append((child, repair_text(name)))
        elif isinstance(item, list):
            stack.extend((child, f"{path}[{i}]") for i, child in enumerate(item))
    return None


def repair_all_text(value: Any) -> Any:
    """``value`` with every string and key repaired (see ``repair_text``), in place for
    containers; iterative, like ``invalid_text_path``."""
    if isinstance(value, str):
        return repair_text(value)
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key in list(item):
                child = item[key]
                if isinstance(child, str):
                    item[key] = repair_text(child)
                elif isinstance(child, dict | list):
                    stack.append(child)
                if isinstance(key, str) and not is_valid_text(key):
                    item[repair_text(key)] = item.pop(key)
        elif isinstance(item, list):
            for i, child in enumerate(item):
                if isinstance(child, str):
                    item[i] = repair_text(child)
                elif isinstance(child, dict | list):
                    stack.append(child)
    return value


def parse_line(line: bytes) -> Message:
    try:
        text = line.decode("utf-8")  # strict: json.loads(bytes) would let surrogates through
        obj = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        return ProtocolError(None, PARSE_ERROR, "Parse error: not valid JSON")
    if not isinstance(obj, dict):
        return ProtocolError(None, INVALID_REQUEST, "Invalid Request: expected a JSON object")
    msg_id = obj.get("id")
    has_id = "id" in obj
    if not _valid_id(msg_id) or (isinstance(msg_id, str) and not is_valid_text(msg_id)):
        return ProtocolError(None, INVALID_REQUEST, "Invalid Request: bad id")
    if obj.get("jsonrpc") != "2.0":
        return ProtocolError(msg_id, INVALID_REQUEST, 'Invalid Request: "jsonrpc" must be "2.0"')
    if "method" in obj:
        method = obj["method"]
        if not isinstance(method, str) or not method or not is_valid_text(method):
            return ProtocolError(msg_id, INVALID_REQUEST, "Invalid Request: bad method")
        params = obj.get("params", {})
        if params is None:
            params = {}
        if not isinstance(params, dict):
            return ProtocolError(
                msg_id, INVALID_PARAMS, "Invalid params: params must be an object"
            )
        if "\\u" in text:  # only an escape can spell a lone surrogate in valid UTF-8
            bad = invalid_text_path(params)
            if bad is not None:
                return ProtocolError(msg_id, INVALID_PARAMS,
                                     f"Invalid params: `{bad}` is not valid Unicode "
                                     "(a lone UTF-16 surrogate)")
        if not has_id:
            return Notification(method, params)
        if msg_id is None:
            return ProtocolError(None, INVALID_REQUEST, "Invalid Request: id must not be null")
        return Request(msg_id, method, params)
    if has_id and ("result" in obj or "error" in obj):
        error = obj.get("error")
        if error is not None and not isinstance(error, dict):
            return ProtocolError(msg_id, INVALID_REQUEST, "Invalid Response: bad error")
        if "\\u" in text:
            return Response(msg_id, repair_all_text(obj.get("result")), repair_all_text(error))
        return Response(msg_id, obj.get("result"), error)
    return ProtocolError(msg_id, INVALID_REQUEST, "Invalid Request: no method")


def encode_request(msg_id: int | str, method: str, params: dict[str, Any] | None = None) -> bytes:
    """Raises ``RpcError`` (-32602, naming the field) for params the daemon would refuse."""
    if params:
        bad = invalid_text_path(params)
        if bad is not None:
            raise RpcError(INVALID_PARAMS, f"Invalid params: `{bad}` is not valid Unicode "
                                           "(a lone UTF-16 surrogate)")
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": msg_id, "method": method}
    if params is not None:
        body["params"] = params
    return _dumps(body).encode() + b"\n"


def encode_notification(method: str, params: dict[str, Any]) -> bytes:
    return _dumps({"jsonrpc": "2.0", "method": method, "params": params}).encode() + b"\n"


def encode_result(msg_id: RequestId, result: Any) -> bytes:
    return _dumps({"jsonrpc": "2.0", "id": msg_id, "result": result}).encode() + b"\n"


def encode_error(msg_id: RequestId, code: int, message: str, data: Any = None) -> bytes:
    """Never fails on text: a lone surrogate in the message (or data) is repaired."""
    error: dict[str, Any] = {"code": code, "message": repair_text(message)}
    if data is not None:
        error["data"] = data
    body = _dumps({"jsonrpc": "2.0", "id": msg_id, "error": error})
    return body.encode("utf-8", "replace") + b"\n"
