"""A deliberately small, strict HTTP/1.1 request-head parser and response writer (sans-IO).

The webhook front (``front.py``) uses it to answer the one request shape carriers send over
and over: ``POST <exact path> HTTP/1.1`` (or HTTP/1.0) with a ``Content-Length`` body, with
or without ``Expect: 100-continue``. It recognises that shape and nothing more. Everything
else raises ``NotSimple``: chunked bodies, other ``Expect`` values, upgrades, repeated or odd
headers, percent-encoded targets, oversized heads, malformed bytes. A head is declined as soon
as its first bytes show it cannot be of that shape (not a request line, a bare LF or CR), not
only once a blank line arrives: junk that never sends one must not wait for a deadline. The
caller then hands the connection, bytes untouched, to Hypercorn, whose h11 parser gives those
cases their full and careful treatment. So this parser never has to be lenient: when in doubt
it declines.

Bytes in, a ``RequestHead`` (or ``None``: need more bytes) out; no I/O, like h11.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus

from .errors import NotSimple

MAX_HEAD_BYTES = 16 * 1024

_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
# The whole head in one pass: request line (origin-form target of visible ASCII; '%' is left
# to Hypercorn, which percent-decodes paths), then "name: value" lines whose values hold no
# control characters but tab (so no obsolete line folding either), then the blank line.
_HEAD = re.compile(
    rb"(" + _TOKEN + rb") (/[!-$&-~]*) HTTP/1\.([01])\r\n"
    rb"((?:" + _TOKEN + rb":[^\x00-\x08\x0a-\x1f\x7f]*\r\n)*)\r\n"
)
_DIGITS = re.compile(r"[0-9]{1,15}")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_DECLINED_HEADERS = ("transfer-encoding", "upgrade", "http2-settings")
# What an incomplete head may look like and still become one ``_HEAD`` accepts: a prefix of
# the request line, or a whole request line and then header bytes with CR only before LF.
_PARTIAL_LINE = re.compile(
    rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]*(?: (?:/[!-$&-~]*(?: (?:H(?:T(?:T(?:P(?:/(?:1(?:\.(?:[01]"
    rb"\r?)?)?)?)?)?)?)?)?)?)?)?"
)
_LINE = re.compile(rb"(" + _TOKEN + rb") (/[!-$&-~]*) HTTP/1\.[01]\r\n")
_BARE_CR_OR_LF = re.compile(rb"\r(?=[^\n])|(?<!\r)\n")


@dataclass(frozen=True, slots=True)
class RequestHead:
    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-case names, each at most once; "host" always present
    content_length: int
    close: bool  # the connection closes after this exchange (asked, or HTTP/1.0 without keep-alive)
    size: int  # bytes of the head, blank line included
    http10: bool = False  # an HTTP/1.0 request (its keep-alive must be confirmed in the answer)
    expect_continue: bool = False  # ``Expect: 100-continue``: the body waits for our go-ahead


def parse_head(data: bytes | bytearray, max_head: int = MAX_HEAD_BYTES) -> RequestHead | None:
    """The request head at the start of ``data``, ``None`` if incomplete, or ``NotSimple``."""
    end = data.find(b"\r\n\r\n", 0, max_head + 4)
    if end < 0:
        if len(data) >= max_head + 4:
            raise NotSimple("request head too large")
        _check_partial(data)
        return None
    match = _HEAD.match(data, 0, end + 4)
    if match is None or match.end() != end + 4:
        raise NotSimple("not a plain HTTP/1.1 request head")
    method, target, minor, block = match.groups()
    http10 = minor == b"0"
    headers: dict[str, str] = {}
    lines = block.decode("latin-1").split("\r\n")
    lines.pop()  # the block ends with CRLF
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.lower()] = value.strip(" \t")
    if len(headers) != len(lines):
        raise NotSimple("repeated header")
    for declined in _DECLINED_HEADERS:
        if declined in headers:
            path = target.decode("ascii").partition("?")[0]
            raise NotSimple(f"{declined} header", (method.decode("ascii"), path, headers))
    expect = headers.get("expect")
    if expect is not None and expect.lower() != "100-continue":
        raise NotSimple("expect header")
    if "host" not in headers:
        raise NotSimple("no Host header")  # HTTP/1.1 requires one; h11 answers 400
    length = 0
    declared = headers.get("content-length")
    if declared is not None:
        if not _DIGITS.fullmatch(declared):
            raise NotSimple("unusual content-length")
        length = int(declared)
    tokens: set[str] = set()
    if "connection" in headers:
        tokens = {t.strip().lower() for t in headers["connection"].split(",")}
        if "upgrade" in tokens:
            raise NotSimple("connection upgrade")
    # HTTP/1.0 closes unless the client asks to keep alive (and we confirm it in the answer)
    close = "close" in tokens or (http10 and "keep-alive" not in tokens)
    path, _, query = target.decode("ascii").partition("?")
    # RFC 9110 10.1.1: an expectation received over HTTP/1.0 is ignored (no 100 is sent)
    return RequestHead(method.decode("ascii"), path, query, headers, length, close, end + 4,
                       http10, expect is not None and not http10)


def _check_partial(data: bytes | bytearray) -> None:
    """``NotSimple`` if an incomplete head already cannot become one the fast path takes."""
    line_end = data.find(b"\r\n")
    if line_end < 0:
        if _PARTIAL_LINE.fullmatch(data) is None:
            raise NotSimple("not the start of a request line")
        return
    if _LINE.match(data, 0, line_end + 2) is None:
        raise NotSimple("not a plain request line")
    if _BARE_CR_OR_LF.search(data, line_end + 2):
        raise NotSimple("bare CR or LF in the head")


_REASONS = {status.value: status.phrase.encode("ascii") for status in HTTPStatus}


class _DateCache:
    """The ``Date`` header value, formatted at most once a second."""

    def __init__(self) -> None:
        self._second = -1
        self._value = b""

    def __call__(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._value = formatdate(now, usegmt=True).encode("ascii")
        return self._value


http_date = _DateCache()


CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def render_response(status: int, body: bytes, content_type: str = "text/plain; charset=utf-8",
                    headers: dict[str, str] | None = None, *, close: bool = False,
                    keep_alive: bool = False) -> bytes:
    """One complete HTTP/1.1 response with a ``Content-Length`` body, as bytes.

    ``keep_alive`` adds ``connection: keep-alive``, which an HTTP/1.0 client needs to see
    before it keeps the connection.
    """
    out = [b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\ndate: %s\r\n"
           % (status, _REASONS.get(status, b"Unknown"), _field(content_type), len(body),
              http_date())]
    for name, value in (headers or {}).items():
        out.append(b"%s: %s\r\n" % (_field(name.lower()), _field(value)))
    if close:
        out.append(b"connection: close\r\n")
    elif keep_alive:
        out.append(b"connection: keep-alive\r\n")
    out.append(b"\r\n")
    out.append(body)
    return b"".join(out)


def _field(text: str) -> bytes:
    raw = text.encode("latin-1")
    if _BAD_VALUE.search(raw):
        raise ValueError(f"control character in response header {text!r}")
    return raw
