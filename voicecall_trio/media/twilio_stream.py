"""Twilio Media Streams framing (sans-IO): a message's text in, a ``StreamEvent`` out.

Inbound messages are a msgspec tagged union on ``event`` (``connected``, ``start``, ``media``,
``mark``, ``dtmf``, ``stop``), decoded in one pass; a ``media`` payload's base64 is decoded
strictly, so a corrupt frame is ``Malformed`` rather than a burst of noise. Unknown events and
anything malformed become ``Malformed`` values; ``decode`` never raises.

Outbound ``media`` / ``mark`` / ``clear`` are written as text exactly as Twilio documents them
(``shared/vectors/twilio_media_stream_outbound.json``): ``media`` carries only the payload (no
track, chunk or timestamp) on a bidirectional ``<Connect><Stream>``. ``media`` is built by string
formatting, the frame's base64 being the only per-frame work.
"""

from __future__ import annotations

import binascii

import msgspec

from .stream import Digits, Hello, Malformed, MarkEcho, Started, Stopped, StreamEvent


class _Message(msgspec.Struct, tag_field="event", rename="camel"):
    pass


class Connected(_Message, tag="connected"):
    protocol: str = ""
    version: str = ""


class MediaFormat(msgspec.Struct, rename="camel"):
    encoding: str = ""
    sample_rate: int = 0
    channels: int = 0


class StartInfo(msgspec.Struct, rename="camel"):
    stream_sid: str = ""
    call_sid: str = ""
    account_sid: str = ""
    tracks: list[str] = msgspec.field(default_factory=list)
    media_format: MediaFormat | None = None
    custom_parameters: dict[str, str] = msgspec.field(default_factory=dict)


class Start(_Message, tag="start"):
    start: StartInfo
    stream_sid: str = ""
    sequence_number: str = ""


# The per-frame messages hold only strings, so they can never be part of a cycle: untracked
# by the garbage collector (``gc=False``), 50 a second per call add nothing to its counts.
class MediaPayload(msgspec.Struct, gc=False):
    payload: str
    track: str = ""
    chunk: str = ""
    timestamp: str = ""


class Media(_Message, tag="media", gc=False):
    media: MediaPayload
    stream_sid: str = ""
    sequence_number: str = ""


class MarkName(msgspec.Struct):
    name: str


class Mark(_Message, tag="mark"):
    mark: MarkName
    stream_sid: str = ""
    sequence_number: str = ""


class DtmfDigit(msgspec.Struct):
    digit: str
    track: str = ""


class Dtmf(_Message, tag="dtmf"):
    dtmf: DtmfDigit
    stream_sid: str = ""
    sequence_number: str = ""


class StopInfo(msgspec.Struct, rename="camel"):
    account_sid: str = ""
    call_sid: str = ""


class Stop(_Message, tag="stop"):
    stop: StopInfo | None = None
    stream_sid: str = ""
    sequence_number: str = ""


InboundMessage = Connected | Start | Media | Mark | Dtmf | Stop
_decoder = msgspec.json.Decoder(InboundMessage)
_json = msgspec.json.Encoder()
TOKEN_PARAMETER = "token"  # our <Parameter name="token"> of <Stream>
_HELLO = Hello()
_STOPPED = Stopped()


def decode(message: str | bytes) -> StreamEvent:
    """One inbound Twilio message as a ``StreamEvent``; ``Malformed`` for anything unreadable."""
    try:
        decoded = _decoder.decode(message)
    except msgspec.DecodeError as exc:
        return Malformed(_reason(exc))
    if type(decoded) is Media:
        try:
            return binascii.a2b_base64(decoded.media.payload, strict_mode=True)
        except (binascii.Error, ValueError):
            return Malformed("media payload is not base64")
    if type(decoded) is Start:
        info = decoded.start
        return Started(info.stream_sid or decoded.stream_sid, info.call_sid,
                       info.custom_parameters.get(TOKEN_PARAMETER))
    if type(decoded) is Mark:
        return MarkEcho(decoded.mark.name)
    if type(decoded) is Dtmf:
        return Digits(decoded.dtmf.digit)
    if type(decoded) is Stop:
        return _STOPPED
    return _HELLO


def _reason(exc: msgspec.DecodeError) -> str:
    """msgspec's message without any of the input (it quotes bad tag values)."""
    text = str(exc)
    if "Invalid value" in text and "$.event" in text:
        return "unknown event"
    return text.split(" - at ")[0][:80] + (f" at {text.split(' - at ')[1][:60]}"
                                           if " - at " in text else "")


def media(stream_sid: str, frame: bytes) -> str:
    """Play ``frame`` (8 kHz mu-law) on the call."""
    payload = binascii.b2a_base64(frame, newline=False).decode("ascii")
    sid = _json.encode(stream_sid).decode()
    return f'{{"event":"media","streamSid":{sid},"media":{{"payload":"{payload}"}}}}'


def mark(stream_sid: str, name: str) -> str:
    """Ask Twilio to echo ``name`` once the audio sent before it has been played."""
    return _json.encode({"event": "mark", "streamSid": stream_sid,
                         "mark": {"name": name}}).decode()


def clear(stream_sid: str) -> str:
    """Drop the audio Twilio has buffered (barge-in); its pending marks are echoed."""
    return _json.encode({"event": "clear", "streamSid": stream_sid}).decode()


class TwilioFraming:
    """This module as a ``StreamFraming`` (what ``TwilioProvider.framing`` offers the route)."""

    decode = staticmethod(decode)
    media = staticmethod(media)
    mark = staticmethod(mark)
    clear = staticmethod(clear)


FRAMING = TwilioFraming()
