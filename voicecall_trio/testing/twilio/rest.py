"""The fake Twilio's REST API, as an ASGI app: Basic auth, the ``Calls`` resource (create,
update by ``Status`` / ``Twiml`` / ``Url``, fetch), Twilio-shaped JSON errors, injected failures,
and a record of every request. Creating a call starts its callee simulation.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote

import msgspec

from .base import _new_sid
from .callee import CalleeSimulation
from .values import API_VERSION, MORE_INFO, ApiRequest, FakeCall, _Doc


def _error(status: int, code: int, message: str) -> tuple[int, dict[str, Any]]:
    return status, {"code": code, "message": message, "more_info": MORE_INFO.format(code=code),
                    "status": status}


class RestApi(CalleeSimulation):
    """Serves the REST subset the daemon uses (``_asgi``, run by ``BackgroundService``)."""

    async def _asgi(self, scope: dict[str, Any], receive: Callable[[], Any],
                    send: Callable[[dict[str, Any]], Any]) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}
        status, doc, extra = self._handle_rest(scope["method"], scope["path"], headers,
                                               b"".join(chunks))
        payload = msgspec.json.encode(doc)
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", b"application/json; charset=utf-8"),
            (b"content-length", str(len(payload)).encode()), *extra]})
        await send({"type": "http.response.body", "body": payload})

    def _authorized(self, headers: dict[str, str]) -> bool:
        scheme, _, encoded = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return secrets.compare_digest(f"{user}:{password}".encode(),
                                      f"{self.account_sid}:{self.auth_token}".encode())

    def _handle_rest(self, method: str, path: str, headers: dict[str, str], body: bytes
                     ) -> tuple[int, dict[str, Any], list[tuple[bytes, bytes]]]:
        form = tuple(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        prefix = f"/{API_VERSION}/Accounts/"
        rest = path[len(prefix):] if path.startswith(prefix) else ""
        account, _, resource = rest.partition("/")
        sid: str | None = None
        action: Literal["create", "update", "fetch", "account", "other"] = "other"
        if not resource and account.endswith(".json") and method == "GET":
            account, action = account[:-len(".json")], "account"  # the account itself
        elif resource == "Calls.json" and method == "POST":
            action = "create"
        elif resource.startswith("Calls/") and resource.endswith(".json"):
            sid = unquote(resource[len("Calls/"):-len(".json")])
            if method == "POST":
                action = "update"
            elif method == "GET":
                action = "fetch"
        status, doc, extra = self._route(method, path, headers, form, unquote(account), action,
                                         sid)
        self.api_requests.append(ApiRequest(method, path, form, status, action, sid))
        self._notify()
        return status, doc, extra

    def _route(self, method: str, path: str, headers: dict[str, str],
               form: tuple[tuple[str, str], ...], account: str,
               action: Literal["create", "update", "fetch", "account", "other"],
               sid: str | None
               ) -> tuple[int, dict[str, Any], list[tuple[bytes, bytes]]]:
        if not self._authorized(headers):
            status, doc = _error(401, 20003, "Authenticate")
            return status, doc, [(b"www-authenticate", b'Basic realm="Twilio API"')]
        not_found = _error(404, 20404, f"The requested resource {path} was not found")
        if account != self.account_sid or action == "other":
            return (*not_found, [])
        for failure in self._failures:
            if (failure.remaining > 0 and failure.action in (None, action)
                    and failure.call_sid in (None, sid)):
                failure.remaining -= 1
                if failure.remaining == 0:
                    self._failures.remove(failure)
                return (*_error(failure.status, failure.code, failure.message), [])
        if action == "account":  # doctor's cheap authenticated read
            return 200, {"sid": self.account_sid, "status": "active", "type": "Full"}, []
        if action == "create":
            return (*self._create(dict(form), [v for k, v in form if k == "StatusCallbackEvent"]),
                    [])
        call = self.calls.get(sid or "")
        if call is None:
            return (*not_found, [])
        if action == "fetch":
            return 200, call.as_json(self.account_sid), []
        return (*self._update(call, dict(form)), [])

    def _create(self, form: dict[str, str], events: list[str]) -> tuple[int, dict[str, Any]]:
        to, from_ = form.get("To", ""), form.get("From", "")
        if not to:
            return _error(400, 21201, "No 'To' number is specified")
        if not from_:
            return _error(400, 21213, "No 'From' number is specified")
        if not to.startswith("+") or not to[1:].isdigit():
            return _error(400, 21211, f"Invalid 'To' Phone Number: {to}")
        url, twiml = form.get("Url"), form.get("Twiml")
        if not url and not twiml:
            return _error(400, 21205, "Url parameter is required")
        subscribed = {e for value in events for e in value.split()}
        if form.get("StatusCallback") and not subscribed:
            subscribed = {"completed"}
        try:
            timeout = int(form.get("Timeout", "60"))
        except ValueError:
            return _error(400, 21216, "Timeout must be an integer")
        call = FakeCall(
            sid=_new_sid(), direction="outbound-api", from_=from_, to=to, url=url,
            method=form.get("Method", "POST").upper(),
            status_callback=form.get("StatusCallback") or None,
            status_events=frozenset(subscribed), callee=self.callee(to),
            timeout_s=max(1, min(timeout, 600)), initial_twiml=twiml, _owner=self,
        )
        self.calls[call.sid] = call
        self._spawn(self._outbound, call)
        return 201, call.as_json(self.account_sid)

    def _update(self, call: FakeCall, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        wanted = form.get("Status")
        if wanted is not None:
            if wanted not in ("completed", "canceled"):
                return _error(400, 21218, f"Invalid Status: {wanted}")
            if call.status in ("queued", "initiated", "ringing"):
                self._end(call, "canceled", by="rest")
            elif call.status == "in-progress" and wanted == "completed":
                self._end(call, "completed", by="rest")
            return 200, call.as_json(self.account_sid)  # an ended call stays as it was
        twiml, url = form.get("Twiml"), form.get("Url")
        if twiml is None and url is None:
            return 200, call.as_json(self.account_sid)
        if call.status != "in-progress":
            return _error(400, 21220, "Call is not in-progress. Cannot redirect.")
        if twiml is not None:
            call.updates.append(twiml)
            parsed = self._parse(call, twiml, None)
            if not isinstance(parsed, _Doc):
                return _error(400, 12100, "Document parse failure")
        else:
            method = form.get("Method", "POST")
            redirect = ET.Element("Redirect", {"method": method})
            redirect.text = url
            parsed = _Doc(None, [redirect])
        call._pending = parsed
        if call._scope is not None:
            call._scope.cancel()
        self._notify()
        return 200, call.as_json(self.account_sid)

