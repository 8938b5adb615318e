"""The fast path's HTTP/1.1 head parser: bytes in, a head (or "need more", or "not simple") out."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voicecall_trio.errors import NotSimple
from voicecall_trio.http1 import MAX_HEAD_BYTES, parse_head, render_response

SIMPLE = (b"POST /voice/webhook?type=status HTTP/1.1\r\nHost: voice.example.com\r\n"
          b"Content-Type: application/x-www-form-urlencoded\r\n"
          b"X-Twilio-Signature: abc=\r\nContent-Length: 7\r\n\r\nCallSid")


def test_a_carrier_request_head_is_read_whole() -> None:
    head = parse_head(SIMPLE)
    assert head is not None
    assert (head.method, head.path, head.query) == ("POST", "/voice/webhook", "type=status")
    assert head.headers["x-twilio-signature"] == "abc="
    assert head.headers["host"] == "voice.example.com"
    assert head.content_length == 7 and not head.close
    assert SIMPLE[head.size:] == b"CallSid"


def test_every_prefix_of_the_head_asks_for_more() -> None:
    end = SIMPLE.index(b"\r\n\r\n") + 4
    for cut in range(end):
        assert parse_head(SIMPLE[:cut]) is None


def test_values_are_trimmed_and_close_is_noticed() -> None:
    head = parse_head(b"POST / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Close\r\n"
                      b"X-A:\t v \t\r\n\r\n")
    assert head is not None and head.close and head.headers["x-a"] == "v"
    assert head.content_length == 0


@pytest.mark.parametrize("raw", [
    b"POST / HTTP/1.0\r\n\r\n",  # HTTP/1.0 without Host: h11 takes it
    b"POST http://a/ HTTP/1.1\r\n\r\n",  # absolute-form target
    b"POST /a%2Fb HTTP/1.1\r\n\r\n",  # percent-decoding is Hypercorn's job
    b"POST  / HTTP/1.1\r\n\r\n",
    b"\r\nPOST / HTTP/1.1\r\n\r\n",  # a leading empty line
    b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: h\r\nExpect: something-else\r\n\r\n",
    b"GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    b"GET / HTTP/1.1\r\nConnection: upgrade\r\n\r\n",
    b"POST / HTTP/1.1\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\n",  # repeated
    b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
    b"POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n",
    b"POST / HTTP/1.1\r\nContent-Length: 1234567890123456\r\n\r\n",
    b"POST / HTTP/1.1\r\nX-A: b\r\n folded\r\n\r\n",  # obsolete line folding
    b"POST / HTTP/1.1\r\nX A: b\r\n\r\n",
    b"POST / HTTP/1.1\r\nX-A: b\nX-B: c\r\n\r\n",  # bare LF
    b"POST / HTTP/1.1\r\nX-A: b\x00c\r\n\r\n",
    b"POST / HTTP/1.1\r\nX-A: b\rc\r\n\r\n",
    b"POST / HTTP/1.1\r\n: empty-name\r\n\r\n",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n",  # no Host: h11 answers 400
])
def test_anything_unusual_is_declined_for_the_full_server(raw: bytes) -> None:
    with pytest.raises(NotSimple):
        parse_head(raw)


def test_an_endless_head_is_declined_not_buffered_forever() -> None:
    endless = b"POST / HTTP/1.1\r\n" + b"X-A: " + b"a" * MAX_HEAD_BYTES
    with pytest.raises(NotSimple):
        parse_head(endless)
    assert parse_head(endless[:MAX_HEAD_BYTES]) is None


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise_anything_else(raw: bytes) -> None:
    try:
        parse_head(raw)
    except NotSimple:
        pass


NAMES = st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,20}", fullmatch=True)
VALUES = st.from_regex(r"[ -~]{0,40}", fullmatch=True).map(str.strip)


@given(st.dictionaries(NAMES.map(str.lower), VALUES, max_size=8), st.binary(max_size=50))
def test_any_plain_head_round_trips(headers: dict[str, str], body: bytes) -> None:
    headers = {k: v for k, v in headers.items()
               if k not in ("content-length", "transfer-encoding", "expect", "upgrade",
                            "connection", "http2-settings")}
    headers.setdefault("host", "voice.example.com")
    lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    raw = (f"POST /hook HTTP/1.1\r\n{lines}Content-Length: {len(body)}\r\n\r\n").encode() + body
    head = parse_head(raw)
    assert head is not None
    assert head.headers == {**headers, "content-length": str(len(body))}
    assert raw[head.size:] == body


def test_responses_carry_length_date_and_close() -> None:
    raw = render_response(200, b"<Response/>", "text/xml", {"X-Extra": "1"}, close=True)
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 200 OK" and body == b"<Response/>"
    assert b"content-length: 11" in lines and b"content-type: text/xml" in lines
    assert b"x-extra: 1" in lines and b"connection: close" in lines
    assert any(line.startswith(b"date: ") for line in lines)
    with pytest.raises(ValueError):
        render_response(200, b"", headers={"X-Evil": "a\r\nSet-Cookie: b"})


def test_http10_closes_unless_kept_alive_and_expect_continue_is_noticed() -> None:
    plain = parse_head(b"POST / HTTP/1.0\r\nHost: h\r\nContent-Length: 0\r\n\r\n")
    kept = parse_head(b"POST / HTTP/1.0\r\nHost: h\r\nConnection: Keep-Alive\r\n\r\n")
    expect = parse_head(b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\n\r\n")
    assert plain is not None and plain.http10 and plain.close
    assert kept is not None and kept.http10 and not kept.close
    assert expect is not None and expect.expect_continue and not expect.http10
    old = parse_head(b"POST / HTTP/1.0\r\nHost: h\r\nExpect: 100-continue\r\n\r\n")
    assert old is not None and not old.expect_continue  # ignored over HTTP/1.0 (RFC 9110)


@pytest.mark.parametrize("partial", [
    b"\x16\x03\x01",  # a TLS ClientHello
    b"GET /x HTTP/1.1\n",  # bare LF
    b"POST /x HTTP/1.1\r\nHost: h\nX",
    b"POST /x HTTP/1.1\r\nHost: h\rX",
    b"POST x",  # not origin-form
    b"POST /x HTTP/2",
    b"PRI * HTTP/2.0\r\n",
])
def test_a_head_that_cannot_become_simple_is_declined_before_it_ends(partial: bytes) -> None:
    with pytest.raises(NotSimple):
        parse_head(partial)


def test_every_prefix_of_an_http10_head_asks_for_more() -> None:
    raw = b"POST /voice/webhook HTTP/1.0\r\nHost: h\r\nContent-Length: 1\r\n\r\n"
    for cut in range(len(raw) - 1):
        assert parse_head(raw[:cut]) is None
