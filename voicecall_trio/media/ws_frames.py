"""Client WebSocket frames, split whole, and the common one read without wsproto (sans-IO).

Why: on a media stream nearly every frame is the same shape, one masked text frame holding
a whole ~300-byte Twilio message, 50 a second per call. wsproto's general parser spends about
8 us on each (measured; more than everything else the route does per frame); reading that one
shape directly costs about 1 us. So the route splits the bytes it receives into whole frames
(``extent``), reads that shape itself (``unmasked``) and feeds every other frame, whole, to
wsproto, which therefore always sits at a frame boundary and keeps the protocol's rules
(control frames, fragments, close codes, UTF-8) for everything unusual.

Pure: bytes in, bytes out.
"""

from __future__ import annotations

SIMPLE_TEXT = 0x81  # FIN, no RSV bits, opcode 1 (text)
MASKED = 0x80


def extent(buf: bytes | bytearray, pos: int) -> tuple[int, int] | None:
    """(header length, frame length) of the frame at ``pos``, both counted from ``pos``, or
    None if its header is not all there yet. The frame itself may still be incomplete."""
    avail = len(buf) - pos
    if avail < 2:
        return None
    second = buf[pos + 1]
    length = second & 0x7F
    header = 2
    if length == 126:
        header = 4
        if avail < 4:
            return None
        length = int.from_bytes(buf[pos + 2:pos + 4], "big")
    elif length == 127:
        header = 10
        if avail < 10:
            return None
        length = int.from_bytes(buf[pos + 2:pos + 10], "big")
    if second & MASKED:
        header += 4
    return header, header + length


def is_simple(buf: bytes | bytearray, pos: int) -> bool:
    """A whole, masked, unfragmented text frame (what the route reads itself)."""
    return buf[pos] == SIMPLE_TEXT and bool(buf[pos + 1] & MASKED)


def unmasked(buf: bytes | bytearray, pos: int, header: int, length: int) -> bytes:
    """The payload of the masked frame at ``pos`` (``header`` and ``length`` from ``extent``)."""
    size = length - header
    key = bytes(buf[pos + header - 4:pos + header])
    masked = int.from_bytes(buf[pos + header:pos + length], "little")
    mask = int.from_bytes((key * (size // 4 + 1))[:size], "little")
    return (masked ^ mask).to_bytes(size, "little")


def server_text(payload: bytes) -> bytes:
    """A whole, unmasked text frame holding ``payload`` (UTF-8): what a server sends.

    Why by hand: wsproto's serialiser costs several microseconds a frame, for a frame the
    route sends 50 times a second per call; the connection's state (open, closing) is still
    wsproto's, which the sender checks first, and control frames and close still go through it.
    """
    size = len(payload)
    if size < 126:
        return bytes((SIMPLE_TEXT, size)) + payload
    if size < 65536:
        return b"\x81\x7e" + size.to_bytes(2, "big") + payload
    return b"\x81\x7f" + size.to_bytes(8, "big") + payload
