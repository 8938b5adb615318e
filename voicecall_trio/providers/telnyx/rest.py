"""Telnyx Call Control v2 REST requests, as pure ``RestRequest`` values, and their answers.

Every call action carries a ``command_id`` derived from our call id, the action and the turn
(uuid5), so the same logical action always has the same id: Telnyx ignores a command whose
id it has already seen for that call, which is what makes retrying on 429/5xx/timeouts safe
(``idempotent=True``). Creating a call is the exception: it is never retried.

Errors come as ``{"errors": [{"code", "title", "detail"}]}`` and are shown as
``Telnyx <code>: <title>``.
"""

from __future__ import annotations

import hashlib
import math
import re
import uuid
from typing import Any
from urllib.parse import quote

from .. import RemoteCallState, RemoteStatus
from ..rest_spec import RestRequest, RestResponse
from .webhooks import encode_client_state

# Fixed namespace so command ids are stable across processes and restarts.
COMMAND_NAMESPACE = uuid.UUID("5b0d1c52-6f0e-4a47-9a8e-7f3e2c1d9a10")
CALL_ENDED_CODE = "90018"  # "Call has already ended"
DEFAULT_SPEAK_LANGUAGE = "en-US"
DEFAULT_TRANSCRIPTION_LANGUAGE = "en"
_BASIC_VOICES = frozenset({"male", "female"})
_CODE_IN_MESSAGE = re.compile(r"Telnyx (?P<code>[\w.-]+):")


def command_id(call_id: str, action: str, turn: int | str = 0) -> str:
    """The same logical action on the same call always gets the same id."""
    return str(uuid.uuid5(COMMAND_NAMESPACE, f"{call_id}|{action}|{turn}"))


def text_turn(transcript_len: int, text: str) -> str:
    """A speak's turn: where in the conversation it happens and what it says."""
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    return f"{transcript_len}:{digest}"


def telnyx_voice(voice: str | None) -> str:
    """Our ``tts.voice`` defaults to an OpenAI name (``coral``) Telnyx does not know.

    Telnyx takes ``male``/``female`` or a provider-qualified name (``Polly.Joanna``,
    ``Telnyx.NaturalHD.astra``); anything else falls back to ``female``.
    """
    if voice and (voice in _BASIC_VOICES or "." in voice):
        return voice
    return "female"


def _call_path(call_control_id: str, action: str | None = None) -> str:
    base = "calls/" + quote(call_control_id, safe=":")
    return f"{base}/actions/{action}" if action else base


def create_call(
    *,
    call_id: str,
    connection_id: str,
    to: str,
    from_: str,
    webhook_url: str | None,
    ring_timeout_ms: int,
) -> RestRequest:
    body: dict[str, Any] = {
        "connection_id": connection_id,
        "to": to,
        "from": from_,
        "client_state": encode_client_state(call_id),
        "command_id": command_id(call_id, "dial"),
        "timeout_secs": max(1, math.ceil(ring_timeout_ms / 1000)),
    }
    if webhook_url:
        body["webhook_url"] = webhook_url
        body["webhook_url_method"] = "POST"
    return RestRequest("POST", "calls", json=body, idempotent=False)


def answer(call_control_id: str, *, call_id: str) -> RestRequest:
    body = {
        "client_state": encode_client_state(call_id),
        "command_id": command_id(call_id, "answer"),
    }
    return RestRequest("POST", _call_path(call_control_id, "answer"), json=body,
                       idempotent=True)


def reject(call_control_id: str, *, cause: str = "CALL_REJECTED") -> RestRequest:
    """Refuse an inbound call; we have no call id of ours, so the key is Telnyx's."""
    body = {"cause": cause, "command_id": command_id(call_control_id, "reject")}
    return RestRequest("POST", _call_path(call_control_id, "reject"), json=body,
                       idempotent=True)


def speak(
    call_control_id: str,
    *,
    call_id: str,
    text: str,
    turn: str,
    voice: str | None,
    language: str = DEFAULT_SPEAK_LANGUAGE,
) -> RestRequest:
    body = {
        "payload": text,
        "payload_type": "text",
        "voice": telnyx_voice(voice),
        "language": language,
        "client_state": encode_client_state(call_id),
        "command_id": command_id(call_id, "speak", turn),
    }
    return RestRequest("POST", _call_path(call_control_id, "speak"), json=body, idempotent=True)


def transcription_start(
    call_control_id: str, *, call_id: str, language: str = DEFAULT_TRANSCRIPTION_LANGUAGE
) -> RestRequest:
    """Transcribe the remote party (track ``inbound``) for the rest of the call."""
    body = {
        "language": language,
        "transcription_tracks": "inbound",
        "client_state": encode_client_state(call_id),
        "command_id": command_id(call_id, "transcription_start"),
    }
    return RestRequest("POST", _call_path(call_control_id, "transcription_start"), json=body,
                       idempotent=True)


def transcription_stop(call_control_id: str, *, call_id: str, turn: int | str = 0) -> RestRequest:
    body = {
        "client_state": encode_client_state(call_id),
        "command_id": command_id(call_id, "transcription_stop", turn),
    }
    return RestRequest("POST", _call_path(call_control_id, "transcription_stop"), json=body,
                       idempotent=True)


def hangup(call_control_id: str, *, call_id: str) -> RestRequest:
    """404 (unknown call) and 422 (maybe "already ended", see ``hangup_succeeded``) pass."""
    body = {"command_id": command_id(call_id, "hangup")}
    return RestRequest("POST", _call_path(call_control_id, "hangup"), json=body,
                       idempotent=True, ok_statuses=frozenset({404, 422}))


def get_call(call_control_id: str) -> RestRequest:
    return RestRequest("GET", _call_path(call_control_id), idempotent=True,
                       ok_statuses=frozenset({404, 422}))


# -- answers -------------------------------------------------------------------------------


def first_error(response: RestResponse) -> tuple[str, str] | None:
    """``(code, title)`` of the first error in a Telnyx error body."""
    body = response.json()
    if not isinstance(body, dict):
        return None
    errors = body.get("errors")
    if not isinstance(errors, list) or not errors or not isinstance(errors[0], dict):
        return None
    code = errors[0].get("code")
    title = errors[0].get("title") or errors[0].get("detail") or ""
    return (str(code) if code is not None else "?", str(title))


def format_error(response: RestResponse) -> str:
    """``Telnyx <code>: <title>``; a body without errors gives the HTTP status."""
    error = first_error(response)
    if error is None:
        return f"Telnyx HTTP {response.status}"
    code, title = error
    return f"Telnyx {code}: {title}" if title else f"Telnyx {code}"


def error_code(response: RestResponse) -> str | None:
    """The code of the first error in a Telnyx error body."""
    error = first_error(response)
    return error[0] if error is not None else None


def error_code_of(message: str) -> str | None:
    """The code ``format_error`` put into a ``ProviderError`` message."""
    match = _CODE_IN_MESSAGE.search(message)
    return match.group("code") if match else None


def call_already_ended(response: RestResponse) -> bool:
    if response.status == 404:
        return True
    error = first_error(response)
    return response.status == 422 and error is not None and error[0] == CALL_ENDED_CODE


def hangup_succeeded(response: RestResponse) -> bool:
    return response.ok or call_already_ended(response)


def parse_created_call(response: RestResponse) -> str | None:
    """The ``call_control_id`` of a created call, ``None`` if the answer lacks one."""
    body = response.json()
    data = body.get("data") if isinstance(body, dict) else None
    ccid = data.get("call_control_id") if isinstance(data, dict) else None
    return ccid if isinstance(ccid, str) and ccid else None


def parse_call_state(response: RestResponse) -> RemoteCallState:
    """GET /calls/{id}: ``data.is_alive`` says live or ended; 404/"ended" means ended."""
    if call_already_ended(response):
        return RemoteCallState(RemoteStatus.ENDED)
    if not response.ok:
        return RemoteCallState(RemoteStatus.UNKNOWN)
    body = response.json()
    data = body.get("data") if isinstance(body, dict) else None
    alive = data.get("is_alive") if isinstance(data, dict) else None
    if alive is True:
        assert isinstance(data, dict)
        answered = data.get("state") in ("answered", "active", "bridged")
        return RemoteCallState(RemoteStatus.LIVE, answered=answered)
    if alive is False:
        return RemoteCallState(RemoteStatus.ENDED)
    return RemoteCallState(RemoteStatus.UNKNOWN)
