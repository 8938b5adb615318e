"""The sans-IO JSON-RPC codec: framing, limits, and error replies."""

from __future__ import annotations

import json
from typing import Any

import pytest

from voicecall_trio.errors import LineTooLong
from voicecall_trio.rpc.protocol import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    PARSE_ERROR,
    LineSplitter,
    Notification,
    ProtocolError,
    Request,
    Response,
    RpcError,
    encode_error,
    encode_request,
    encode_result,
    invalid_text_path,
    is_valid_text,
    parse_line,
    repair_all_text,
    repair_text,
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


# -- text that is not valid Unicode (lone UTF-16 surrogates) ----------------------------------

def _request(params: str) -> bytes:
    return b'{"jsonrpc":"2.0","id":9,"method":"voicecall.speak","params":' + params.encode() + b"}"


def test_a_request_with_a_lone_surrogate_is_refused_naming_the_field() -> None:
    cases = {
        r'{"callId":"c","message":"cut \ud83d"}': "`message`",
        r'{"callId":"c","message":"\udc00 first"}': "`message`",
        r'{"history":[{"text":"ok"},{"text":"\ud800"}]}': "`history[1].text`",
        r'{"k\udfff":1}': "is not valid Unicode",
    }
    for params, named in cases.items():
        message = parse_line(_request(params))
        assert isinstance(message, ProtocolError), params
        assert message.code == INVALID_PARAMS and message.id == 9
        assert named in message.message
        json.loads(message.reply())  # and the error reply itself can be sent


def test_valid_escapes_and_pairs_are_accepted() -> None:
    message = parse_line(_request(r'{"message":"\ud83d\ude00 \u00e9 \\ud83d"}'))
    assert message == Request(9, "voicecall.speak", {"message": "😀 é \\ud83d"})


def test_a_bad_method_or_id_is_an_invalid_request() -> None:
    method = parse_line(b'{"jsonrpc":"2.0","id":1,"method":"m\\ud83d"}')
    assert isinstance(method, ProtocolError) and method.code == INVALID_REQUEST
    msg_id = parse_line(b'{"jsonrpc":"2.0","id":"\\ud83d","method":"m"}')
    assert isinstance(msg_id, ProtocolError) and msg_id.id is None


def test_lines_must_be_utf8_so_an_encoded_surrogate_is_a_parse_error() -> None:
    line = '{"jsonrpc":"2.0","id":1,"method":"m","params":{"a":"\udc00"}}'
    message = parse_line(line.encode("utf-8", "surrogatepass"))
    assert isinstance(message, ProtocolError) and message.code == PARSE_ERROR


def test_a_response_has_its_text_repaired() -> None:
    line = rb'{"jsonrpc":"2.0","id":1,"result":{"text":"noon \ud83d","k\udc00":["\ud800"]}}'
    assert parse_line(line) == Response(1, {"text": "noon \ufffd", "k\ufffd": ["\ufffd"]})
    error = parse_line(rb'{"jsonrpc":"2.0","id":2,"error":{"code":1,"message":"x\ud83d"}}')
    assert error == Response(2, None, {"code": 1, "message": "x\ufffd"})


def test_deep_values_are_walked_without_recursion() -> None:
    deep: Any = "bad \ud83d"
    for _ in range(100_000):
        deep = [deep]
    assert invalid_text_path({"a": deep}) == "a" + "[0]" * 100_000
    assert repair_all_text({"a": deep}) is not None


def test_encoders_strict_for_results_lenient_for_errors() -> None:
    with pytest.raises(UnicodeEncodeError):
        encode_result(1, {"text": "\ud83d"})
    with pytest.raises(RpcError) as caught:
        encode_request(1, "voicecall.speak", {"callId": "c", "message": "\ud83d"})
    assert caught.value.code == INVALID_PARAMS and "`message`" in caught.value.message
    reply = json.loads(encode_error(1, -32000, "bad \ud83d"))
    assert reply["error"]["message"] == "bad \ufffd"
    assert not is_valid_text("\ud83d") and is_valid_text("😀")
    assert repair_text("a\udc00b") == "a\ufffdb"
