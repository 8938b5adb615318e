"""TwiML documents the daemon answers Twilio with. Pure string builders, XML-escaped.

Every piece of text that came from a user or a model goes through ``_text``/``_attr``,
which escape markup and drop characters XML 1.0 cannot carry, so a reply can never
inject verbs into the document.

The conversation shapes, as Twilio plays them:

* turn: ``<Say>`` then ``<Gather input="speech" actionOnEmptyResult="true">`` whose action
  URL carries the turn token; Twilio posts the result there even when nothing was said,
  so the call never falls off the end of the document;
* hold: ``<Pause>`` then ``<Redirect>`` back to the webhook (``type=hold``), looping until
  the bot's next turn replaces the document by a REST update;
* say-then-hold: ``<Say>`` then an immediate ``<Redirect>`` whose URL marks that the words
  were said, which is how we learn when Twilio finished speaking.
"""

from __future__ import annotations

import math
import re
from xml.sax.saxutils import escape

XML_DECL = '<?xml version="1.0" encoding="UTF-8"?>'
HOLD_PAUSE_S = 10  # how often a held call re-asks us; a REST update interrupts it anyway
CONTENT_TYPE = "text/xml"  # the XML declaration names the charset

_TWILIO_VOICE = re.compile(r"^(?:Polly\.[A-Za-z0-9_-]+|Google\.[A-Za-z0-9._-]+|alice|man|woman)$")
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def twilio_voice(voice: str | None) -> str | None:
    """``tts.voice`` only when Twilio knows it (Polly.*, Google.*, alice/man/woman)."""
    if voice and _TWILIO_VOICE.match(voice):
        return voice
    return None


def _text(value: str) -> str:
    return escape(_NOT_XML.sub("", value))


def _attr(value: str) -> str:
    return escape(_NOT_XML.sub("", value), {'"': "&quot;", "\n": "&#10;", "\r": "&#13;"})


def _seconds(value: float) -> int:
    return max(1, math.ceil(value))


def response(*verbs: str) -> str:
    return f"{XML_DECL}<Response>{''.join(verbs)}</Response>"


def say(text: str, voice: str | None = None) -> str:
    """A ``<Say>`` element, or nothing for empty text (Twilio rejects an empty Say)."""
    if not _NOT_XML.sub("", text).strip():
        return ""
    voice = twilio_voice(voice)
    attrs = f' voice="{_attr(voice)}"' if voice else ""
    return f"<Say{attrs}>{_text(text)}</Say>"


def pause(seconds: float) -> str:
    return f'<Pause length="{_seconds(seconds)}"/>'


def redirect(url: str) -> str:
    return f'<Redirect method="POST">{_text(url)}</Redirect>'


def gather(action_url: str) -> str:
    return (
        f'<Gather input="speech" speechTimeout="auto" action="{_attr(action_url)}" '
        'method="POST" actionOnEmptyResult="true"/>'
    )


# -- whole documents ------------------------------------------------------------------------


def empty() -> str:
    return response()


def hangup() -> str:
    return response("<Hangup/>")


def reject(reason: str | None = None) -> str:
    """Refuse an inbound call before answering (``reason`` may be "busy" or "rejected")."""
    if reason in ("busy", "rejected"):
        return response(f'<Reject reason="{reason}"/>')
    return response("<Reject/>")


def notify(message: str, *, voice: str | None = None, pause_s: float = 0) -> str:
    """Say the message, optionally wait ``notifyHangupDelaySec``, hang up."""
    return response(say(message, voice), pause(pause_s) if pause_s > 0 else "", "<Hangup/>")


def turn(message: str, action_url: str, *, voice: str | None = None) -> str:
    """One conversation turn: say ``message`` (may be empty), then listen."""
    return response(say(message, voice), gather(action_url))


def hold(redirect_url: str, *, pause_s: float = HOLD_PAUSE_S) -> str:
    """Keep the line open until the bot's next turn arrives by REST update."""
    return response(pause(pause_s), redirect(redirect_url))


def say_then_hold(message: str, redirect_url: str, *, voice: str | None = None) -> str:
    """Say, then come straight back (the redirect tells us the Say has finished)."""
    return response(say(message, voice), redirect(redirect_url))


def stream(
    stream_url: str,
    token: str,
    *,
    message: str = "",
    voice: str | None = None,
    parameters: dict[str, str] | None = None,
) -> str:
    """Optionally say ``message``, then connect the call's audio to our media WebSocket."""
    params = {"token": token, **(parameters or {})}
    inner = "".join(
        f'<Parameter name="{_attr(k)}" value="{_attr(v)}"/>' for k, v in params.items()
    )
    return response(
        say(message, voice),
        f'<Connect><Stream url="{_attr(stream_url)}">{inner}</Stream></Connect>',
    )
