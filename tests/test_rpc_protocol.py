"""The sans-IO JSON-RPC codec: framing, limits, and error replies."""

from __future__ import annotations

import json

from voicecall_trio.rpc.protocol import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    PARSE_ERROR,
    LineSplitter,
    LineTooLong,
    Notification,
    ProtocolError,
    Request,
    Response,
    encode_error,
    encode_request,
    encode_result,
    parse_line,
)


def test_splitter_handles_partial_and_multiple_lines() -> None:
    s = LineSplitter()
    assert s.feed(b'{"a":') == []
    assert s.feed(b'1}\n{"b":2}\n\n{"c"') == [b'{"a":1}', b'{"b":2}']
    assert s.pending == 4


def test_splitter_drops_an_oversized_line_whole_and_recovers() -> None:
    s = LineSplitter(max_line=10)
    out = s.feed(b"x" * 25)
    assert len(out) == 1 and isinstance(out[0], LineTooLong)
    assert s.feed(b"yyyy\n") == []  # the rest of the long line is discarded
    assert s.feed(b'{"ok":1}\n') == [b'{"ok":1}']
    assert s.pending == 0


def test_parse_requests_notifications_and_responses() -> None:
    assert parse_line(encode_request(1, "m", {"a": 1})) == Request(1, "m", {"a": 1})
    assert parse_line(b'{"jsonrpc":"2.0","method":"n"}') == Notification("n", {})
    assert parse_line(encode_result(3, {"x": 1})) == Response(3, {"x": 1}, None)


def test_parse_errors_carry_the_right_codes() -> None:
    cases = {
        b"garbage": PARSE_ERROR,
        b"\xff\xfe": PARSE_ERROR,
        b"[1,2]": INVALID_REQUEST,
        b'{"jsonrpc":"1.0","id":1,"method":"m"}': INVALID_REQUEST,
        b'{"jsonrpc":"2.0","id":true,"method":"m"}': INVALID_REQUEST,
        b'{"jsonrpc":"2.0","id":1,"method":""}': INVALID_REQUEST,
        b'{"jsonrpc":"2.0","id":1,"method":"m","params":[1]}': INVALID_PARAMS,
    }
    for line, code in cases.items():
        message = parse_line(line)
        assert isinstance(message, ProtocolError), line
        assert message.code == code, line
        reply = json.loads(message.reply())
        assert reply["error"]["code"] == code and reply["jsonrpc"] == "2.0"


def test_error_encoding_keeps_the_request_id() -> None:
    reply = json.loads(encode_error(7, -32001, "Call not found"))
    assert reply == {"jsonrpc": "2.0", "id": 7,
                     "error": {"code": -32001, "message": "Call not found"}}
