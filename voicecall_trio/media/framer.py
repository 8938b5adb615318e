"""mu-law bytes of any chunking -> 20 ms frames of exactly 160 bytes, the unit a carrier plays.

Twilio plays what it is sent in order, whatever the size, but marks and pacing are only honest
if every message is one 20 ms frame. The last frame of an utterance is padded with mu-law
silence (0xFF) so it is whole too. *Pure*.
"""

from __future__ import annotations

from typing import Final

from .mulaw import SILENCE

FRAME_BYTES: Final = 160  # 20 ms at 8 kHz, one byte a sample
_PAD: Final = bytes([SILENCE]) * FRAME_BYTES


class Framer:
    """Cuts a stream of mu-law bytes into frames; keeps the remainder for the next push."""

    def __init__(self) -> None:
        self._rest = bytearray()

    @property
    def pending(self) -> int:
        """Bytes held back, less than one frame."""
        return len(self._rest)

    def push(self, ulaw: bytes) -> list[bytes]:
        """The whole frames ``ulaw`` completes (maybe none)."""
        rest = self._rest
        if not rest and len(ulaw) == FRAME_BYTES:
            return [bytes(ulaw)]  # the common case of a carrier-sized chunk: no copy through
        rest += ulaw
        whole = len(rest) - len(rest) % FRAME_BYTES
        if not whole:
            return []
        frames = [bytes(rest[i:i + FRAME_BYTES]) for i in range(0, whole, FRAME_BYTES)]
        del rest[:whole]
        return frames

    def flush(self) -> bytes | None:
        """The last, short frame padded with silence; None when nothing is left."""
        if not self._rest:
            return None
        frame = bytes(self._rest) + _PAD[len(self._rest):]
        self._rest.clear()
        return frame


__all__ = ["FRAME_BYTES", "Framer"]
