"""Our callback URL grammar for Twilio, built and read in this one module.

Twilio calls back the URLs we gave it (the ``Url`` and ``StatusCallback`` of a created call,
a ``<Gather>``'s ``action``, a ``<Redirect>``), and the query parameters we wrote into them are
how a webhook says what it is for. Everything that writes one of them and everything that
reads one goes through here, so the two sides cannot drift apart:

* ``callId``: our call id (absent on the bare webhook URL: an inbound offer, or a number's
  status callback);
* ``type``: ``status`` (status callback), ``amd`` (async answering-machine result),
  ``gather`` (a Gather's result), ``hold`` (our Pause + Redirect loop); absent for the TwiML
  fetch of an answered call;
* ``turn``: the token of the Gather whose result this is;
* ``said``: on a hold redirect right after a ``<Say>``, the token of that Say (Twilio has
  finished saying it).

Pure: strings in, strings out. The webhook base is ``publicUrl`` (plus ``serve.path`` when it
has no path of its own), else the URL Twilio signed; the shell decides which, this module only
appends to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

from ..forms import first_values

CALL_ID = "callId"
TYPE = "type"
TURN = "turn"
SAID = "said"

STATUS = "status"
AMD = "amd"
GATHER = "gather"
HOLD = "hold"


def with_query(url: str, **items: str) -> str:
    """Append our query parameters to a webhook URL (which may already have a query)."""
    extra = urlencode(items)
    if not extra:
        return url
    return f"{url}{'&' if '?' in url else '?'}{extra}"


def webhook_base(public_url: str, serve_path: str) -> str:
    """``publicUrl``, plus ``serve.path`` when it has no path of its own."""
    if urlsplit(public_url).path in ("", "/"):
        return public_url.rstrip("/") + serve_path
    return public_url


def stream_url(base: str, stream_path: str) -> str:
    """``wss://<public host><streaming.streamPath>`` (https -> wss, http -> ws)."""
    parts = urlsplit(base)
    scheme = "ws" if parts.scheme == "http" else "wss"
    return f"{scheme}://{parts.netloc}{stream_path}"


def answer_url(base: str, call_id: str) -> str:
    """A created call's ``Url``: Twilio fetches the call's TwiML there on answer."""
    return with_query(base, **{CALL_ID: call_id})


def status_url(base: str, call_id: str) -> str:
    """A created call's ``StatusCallback``."""
    return with_query(base, **{CALL_ID: call_id, TYPE: STATUS})


def gather_url(base: str, call_id: str, turn: str) -> str:
    """A ``<Gather>``'s action: its result comes back with the turn token."""
    return with_query(base, **{CALL_ID: call_id, TYPE: GATHER, TURN: turn})


def hold_url(base: str, call_id: str, *, said: str | None = None) -> str:
    """The hold loop's ``<Redirect>``; with ``said``, it reports that a ``<Say>`` finished."""
    if said is None:
        return with_query(base, **{CALL_ID: call_id, TYPE: HOLD})
    return with_query(base, **{CALL_ID: call_id, TYPE: HOLD, SAID: said})


@dataclass(frozen=True, slots=True)
class Callback:
    """What our query parameters say about a webhook (blank values read as absent)."""

    call_id: str | None = None
    type: str = ""  # "" for the TwiML fetch or the bare webhook URL
    turn: str | None = None
    said: str | None = None


def parse_callback(query_string: str) -> Callback:
    """A webhook's raw query string -> ``Callback``; unknown parameters are ignored."""
    query = first_values(query_string)
    return Callback(
        call_id=query.get(CALL_ID) or None,
        type=query.get(TYPE, ""),
        turn=query.get(TURN) or None,
        said=query.get(SAID) or None,
    )
