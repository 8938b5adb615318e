"""Just enough WebSocket (RFC 6455) for the media benchmark's load generator, sans-IO.

The generator plays 200 Twilio streams and an STT server on one core; wsproto costs tens of
microseconds a message, which would make the generator the bottleneck it is meant to measure
past. Here a client frame is one XOR of two ints and a header, and the reader only splits
frames: no extensions, no fragmented-message reassembly beyond continuation frames, no UTF-8
validation. It is a load tool's codec, not a library: it trusts its peer (the daemon under
test) to speak correct WebSocket, and raises ``ValueError`` on anything else.
"""

from __future__ import annotations

import base64
import hashlib
import os
from typing import Final

GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TEXT, BINARY, CONTINUATION, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA
MAX_MESSAGE: Final = 1 << 20  # a longer frame from the daemon is a bug there: refuse it
MAX_HEAD: Final = 16 * 1024  # an upgrade request/response head longer than this is refused


def accept_key(key: str) -> str:
    """``Sec-WebSocket-Accept`` for a ``Sec-WebSocket-Key``."""
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


def client_upgrade(host: str, resource: str, headers: list[tuple[str, str]]) -> tuple[bytes, str]:
    """The client's upgrade request and the accept value its 101 must carry."""
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [f"GET {resource} HTTP/1.1", f"Host: {host}", "Upgrade: websocket",
             "Connection: Upgrade", f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
    lines += [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"), accept_key(key)


def parse_head(data: bytes) -> tuple[str, dict[str, str], bytes] | None:
    """(first line, lower-cased headers, bytes after the head), or None for "need more"."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        if len(data) > MAX_HEAD:
            raise ValueError("HTTP head too long")
        return None
    first, *rest = data[:end].decode("latin-1").split("\r\n")
    headers = {}
    for line in rest:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return first, headers, data[end + 4:]


def server_accept(headers: dict[str, str]) -> bytes:
    """The 101 answer to an upgrade request's headers."""
    key = headers.get("sec-websocket-key", "")
    return ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept_key(key)}\r\n\r\n").encode("latin-1")


def _header(opcode: int, length: int, masked: bool) -> bytes:
    bit = 0x80 if masked else 0
    if length < 126:
        return bytes((0x80 | opcode, bit | length))
    if length < 1 << 16:
        return bytes((0x80 | opcode, bit | 126)) + length.to_bytes(2, "big")
    return bytes((0x80 | opcode, bit | 127)) + length.to_bytes(8, "big")


class Masker:
    """Client frames with one fixed, non-zero masking key (a load tool needs no secrecy; a
    zero key would let a server skip the XOR and so flatter it). The repeated key as an int
    is cached per payload length, so masking is one big-int XOR."""

    def __init__(self, key: bytes = b"\x5a\xc3\x3c\xa5") -> None:
        self.key = key
        self._ints: dict[int, int] = {}

    def frame(self, payload: bytes, opcode: int = TEXT) -> bytes:
        n = len(payload)
        mask = self._ints.get(n)
        if mask is None:
            mask = self._ints[n] = int.from_bytes((self.key * (n // 4 + 1))[:n], "big")
        body = (int.from_bytes(payload, "big") ^ mask).to_bytes(n, "big")
        return _header(opcode, n, True) + self.key + body


def server_frame(payload: bytes, opcode: int = TEXT) -> bytes:
    """A server frame (unmasked)."""
    return _header(opcode, len(payload), False) + payload


def unmask(payload: bytes, key: bytes) -> bytes:
    n = len(payload)
    if n == 0:
        return payload
    mask = int.from_bytes((key * (n // 4 + 1))[:n], "big")
    return (int.from_bytes(payload, "big") ^ mask).to_bytes(n, "big")


class FrameReader:
    """Bytes in, ``(opcode, payload)`` messages out; control frames come out as they arrive,
    continuation frames are joined to their message."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._parts: list[bytes] = []
        self._opcode = 0

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        buf = self._buf
        buf += data
        out: list[tuple[int, bytes]] = []
        pos = 0
        size = len(buf)
        while size - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            length, at = b1 & 0x7F, pos + 2
            if length == 126:
                if size - at < 2:
                    break
                length, at = int.from_bytes(buf[at:at + 2], "big"), at + 2
            elif length == 127:
                if size - at < 8:
                    break
                length, at = int.from_bytes(buf[at:at + 8], "big"), at + 8
            if length > MAX_MESSAGE:
                raise ValueError(f"frame of {length} bytes")
            key = b""
            if b1 & 0x80:
                if size - at < 4:
                    break
                key, at = bytes(buf[at:at + 4]), at + 4
            if size - at < length:
                break
            payload = bytes(buf[at:at + length])
            if key:
                payload = unmask(payload, key)
            pos = at + length
            opcode, fin = b0 & 0x0F, b0 & 0x80
            if opcode >= CLOSE:
                out.append((opcode, payload))
            elif opcode == CONTINUATION:
                self._parts.append(payload)
                if fin:
                    out.append((self._opcode, b"".join(self._parts)))
                    self._parts = []
            elif fin:
                out.append((opcode, payload))
            else:
                self._opcode, self._parts = opcode, [payload]
        if pos:
            del buf[:pos]
        return out


__all__ = ["BINARY", "CLOSE", "PING", "PONG", "TEXT", "FrameReader", "Masker", "accept_key",
           "client_upgrade", "parse_head", "server_accept", "server_frame", "unmask"]
