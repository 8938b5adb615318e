"""``stt.ws_client.mask_frame`` against wsproto's server-side parser (the reference)."""

from __future__ import annotations

import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, BytesMessage, Request, TextMessage

from voicecall_trio.stt.ws_client import mask_frame


def server() -> WSConnection:
    """A wsproto server past its handshake with a wsproto client."""
    client, srv = WSConnection(ConnectionType.CLIENT), WSConnection(ConnectionType.SERVER)
    srv.receive_data(client.send(Request(host="h", target="/")))
    next(srv.events())
    client.receive_data(srv.send(AcceptConnection()))
    return srv


@pytest.mark.parametrize("n", [0, 1, 3, 4, 5, 125, 126, 127, 300, 65535, 65536, 70001])
@pytest.mark.parametrize("mask", [b"\x00\x00\x00\x00", b"\xff\xff\xff\xff", b"\x12\x34\x56\x78"])
def test_a_text_frame_parses_to_its_payload(n: int, mask: bytes) -> None:
    text = "".join(chr(48 + (i * 7) % 75) for i in range(n))
    srv = server()
    srv.receive_data(mask_frame(0x81, text.encode(), mask))
    events = list(srv.events())
    assert all(isinstance(e, TextMessage) for e in events)
    assert "".join(e.data for e in events if isinstance(e, TextMessage)) == text
    assert events[-1].message_finished  # type: ignore[attr-defined]


def test_a_binary_frame_and_the_mask_bit_and_key_on_the_wire() -> None:
    payload = bytes(range(256)) * 3
    mask = b"\xa1\xb2\xc3\xd4"
    frame = mask_frame(0x82, payload, mask)
    assert frame[:4] == bytes((0x82, 0xFE, 0x03, 0x00))  # FIN+binary, masked, 16-bit length
    assert frame[4:8] == mask
    assert bytes(b ^ mask[i % 4] for i, b in enumerate(frame[8:])) == payload
    srv = server()
    srv.receive_data(frame)
    (event,) = srv.events()
    assert isinstance(event, BytesMessage) and bytes(event.data) == payload


def test_frames_split_at_any_byte_still_parse() -> None:
    frames = b"".join(mask_frame(0x81, f"message {i}".encode() * i, bytes((i, 1, 2, 3)))
                      for i in range(20))
    srv = server()
    for i in range(0, len(frames), 7):
        srv.receive_data(frames[i:i + 7])
    texts: list[str] = []
    part = ""
    for event in srv.events():
        assert isinstance(event, TextMessage)
        part += event.data
        if event.message_finished:
            texts.append(part)
            part = ""
    assert texts == [f"message {i}" * i for i in range(20)]
