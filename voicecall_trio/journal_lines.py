"""What a journal line is and where it is found: encoding, decoding, the rotated files' names.

A line is one full ``CallRecord`` snapshot in the seed's JSON format, ending in a newline.
``calls.jsonl`` is the current file and ``calls.jsonl.<age>`` the rotated ones; ``read_line``
is the one positioned read that ``JournalIndex`` locations are made for.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

from .model import CallRecord

_encoder = msgspec.json.Encoder()
_record_decoder = msgspec.json.Decoder(CallRecord)


def encode_record(record: CallRecord) -> bytes:
    """One journal line. Raises (``UnicodeEncodeError``, ``msgspec.EncodeError``) for a
    record that cannot be written, e.g. text with a lone surrogate."""
    return _encoder.encode(record) + b"\n"


def decode_record(line: bytes) -> CallRecord:
    """Decode one journal line; lines written without a transcript (older writers) get []."""
    try:
        return _record_decoder.decode(line)
    except msgspec.ValidationError:
        obj = msgspec.json.decode(line)
        if not isinstance(obj, dict) or "transcript" in obj:
            raise
        obj["transcript"] = []
        return msgspec.convert(obj, CallRecord)


def read_line(path: Path, offset: int) -> bytes | None:
    """The line starting at ``offset`` (without its newline); None if the file is gone."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        chunks: list[bytes] = []
        pos = offset
        while True:
            chunk = os.pread(fd, 64 * 1024, pos)
            if not chunk:
                break
            end = chunk.find(b"\n")
            if end >= 0:
                chunks.append(chunk[:end])
                break
            chunks.append(chunk)
            pos += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def segment_path(path: Path, age: int) -> Path:
    return path if age == 0 else path.with_name(f"{path.name}.{age}")
