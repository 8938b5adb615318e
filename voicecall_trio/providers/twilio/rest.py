"""Twilio REST requests as ``RestRequest`` specs, and readers for what Twilio answers.

No I/O here: ``RestClient`` (``providers/rest.py``) sends the specs. Only the call-creating
request is not idempotent, so a failed dial is never repeated by a retry (a second real
phone call is the worst bug a phone daemon can have). A hangup of a call Twilio no longer
knows (404) counts as done.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import quote

from .. import RemoteCallState, RemoteStatus
from ..rest_spec import RestRequest, RestResponse
from .urls import answer_url, status_url
from .webhooks import STATUS_END_REASONS

API_VERSION = "2010-04-01"
STATUS_CALLBACK_EVENTS = ["initiated", "ringing", "answered", "completed"]
_MAX_ERROR_CHARS = 300


def calls_path(account_sid: str, call_sid: str | None = None) -> str:
    base = f"/{API_VERSION}/Accounts/{quote(account_sid, safe='')}/Calls"
    return f"{base}/{quote(call_sid, safe='')}.json" if call_sid else f"{base}.json"


def create_call(
    account_sid: str,
    *,
    to: str,
    from_: str,
    webhook_url: str,
    call_id: str,
    ring_timeout_ms: int,
) -> RestRequest:
    """POST Calls.json: Twilio fetches ``Url`` on answer and reports progress to us."""
    form: Mapping[str, str | list[str]] = {
        "To": to,
        "From": from_,
        "Url": answer_url(webhook_url, call_id),
        "Method": "POST",
        "StatusCallback": status_url(webhook_url, call_id),
        "StatusCallbackMethod": "POST",
        "StatusCallbackEvent": list(STATUS_CALLBACK_EVENTS),
        "Timeout": str(max(1, round(ring_timeout_ms / 1000))),
    }
    return RestRequest("POST", calls_path(account_sid), form=form, idempotent=False)


def hangup_call(account_sid: str, call_sid: str) -> RestRequest:
    return RestRequest(
        "POST",
        calls_path(account_sid, call_sid),
        form={"Status": "completed"},
        idempotent=True,
        ok_statuses=frozenset({404}),
    )


def update_twiml(account_sid: str, call_sid: str, twiml: str) -> RestRequest:
    """Replace what a live call is doing (the next turn). Same TwiML twice is harmless."""
    return RestRequest(
        "POST", calls_path(account_sid, call_sid), form={"Twiml": twiml}, idempotent=True
    )


def fetch_call(account_sid: str, call_sid: str) -> RestRequest:
    return RestRequest(
        "GET", calls_path(account_sid, call_sid), idempotent=True, ok_statuses=frozenset({404})
    )


def call_sid_of(response: RestResponse) -> str | None:
    doc = response.json()
    sid = doc.get("sid") if isinstance(doc, dict) else None
    return sid if isinstance(sid, str) and sid else None


def remote_state(status: str | None) -> RemoteCallState:
    """A Twilio call status -> what the supervisor needs after a restart."""
    if status in ("queued", "initiated", "ringing"):
        return RemoteCallState(RemoteStatus.LIVE)
    if status == "in-progress":
        return RemoteCallState(RemoteStatus.LIVE, answered=True)
    if status in STATUS_END_REASONS:
        return RemoteCallState(
            RemoteStatus.ENDED, end_reason=STATUS_END_REASONS[status],
            answered=status == "completed",
        )
    return RemoteCallState(RemoteStatus.UNKNOWN)


def parse_fetch(response: RestResponse) -> RemoteCallState:
    """GET Calls/{sid}.json -> state; a call Twilio does not know (404) is UNKNOWN."""
    if response.status == 404:
        return RemoteCallState(RemoteStatus.UNKNOWN)
    doc = response.json()
    status = doc.get("status") if isinstance(doc, dict) else None
    return remote_state(status if isinstance(status, str) else None)


def format_error(response: RestResponse) -> str:
    """``Twilio <code>: <message>`` from Twilio's JSON error body, else ``HTTP <status>``."""
    doc = response.json()
    if isinstance(doc, dict):
        code = doc.get("code")
        message = str(doc.get("message") or "").strip()[:_MAX_ERROR_CHARS]
        if code is not None or message:
            head = f"Twilio {code}" if code is not None else "Twilio"
            return f"{head}: {message}" if message else head
    return f"HTTP {response.status}"
