"""Executes carrier REST request specs through an injected ``httpx.AsyncClient``.

Carrier modules build ``RestRequest`` values (pure); this shell sends them. Only requests
marked ``idempotent`` are retried (429, 5xx, timeouts, connection errors), with exponential
backoff on the trio clock; a call-creating request is never retried blindly. Failures become
``ProviderError`` with a message the carrier module formats (code and text from the body).
Secrets travel only in headers and never reach a log line or an error message.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import httpx
import msgspec
import trio

from ..errors import ProviderError
from .rest_spec import RestRequest, RestResponse

__all__ = ["RETRY_STATUSES", "RestClient", "RestRequest", "RestResponse"]

log = logging.getLogger("voicecall.rest")

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


ErrorFormatter = Callable[[RestResponse], str]


def _default_error(response: RestResponse) -> str:
    return f"HTTP {response.status}"


def _no_code(response: RestResponse) -> str | None:
    return None


class RestClient:
    def __init__(
        self,
        client: httpx.AsyncClient,
        base_url: str,
        *,
        headers: Mapping[str, str] | None = None,
        auth: httpx.Auth | tuple[str, str] | None = None,
        describe_error: ErrorFormatter = _default_error,
        error_code: Callable[[RestResponse], str | None] = _no_code,
        carrier: str = "carrier",
        attempts: int = 4,
        backoff_s: float = 0.25,
        timeout_s: float = 10.0,
    ) -> None:
        self._client = client
        self._base = base_url.rstrip("/")
        self._headers = dict(headers or {})
        self._auth = auth
        self._describe = describe_error
        self._code = error_code
        self._carrier = carrier
        self._attempts = max(1, attempts)
        self._backoff = backoff_s
        self._timeout = timeout_s

    def url(self, path: str) -> str:
        return self._base + "/" + path.lstrip("/")

    async def send(self, request: RestRequest) -> RestResponse:
        attempts = self._attempts if request.idempotent else 1
        delay = self._backoff
        last: str = "no attempt made"
        for attempt in range(1, attempts + 1):
            try:
                response = await self._send_once(request)
            except httpx.TimeoutException:
                last = f"{self._carrier} did not answer in time"
            except httpx.TransportError as exc:
                last = f"cannot reach {self._carrier}: {type(exc).__name__}"
            else:
                if response.ok or response.status in request.ok_statuses:
                    return response
                # the carrier's formatter names the carrier: "Twilio 21211: Invalid 'To'"
                last = self._describe(response)
                if response.status not in RETRY_STATUSES:
                    raise ProviderError(last, status=response.status,
                                        code=self._code(response))
            if attempt < attempts:
                log.info(
                    "%s %s failed (%s); retry %d/%d",
                    request.method, request.path, last, attempt, attempts - 1,
                )
                await trio.sleep(delay)
                delay *= 2
        raise ProviderError(last)

    async def _send_once(self, request: RestRequest) -> RestResponse:
        kwargs: dict[str, Any] = {"headers": self._headers, "timeout": self._timeout}
        if self._auth is not None:
            kwargs["auth"] = self._auth
        if request.form is not None:
            kwargs["data"] = dict(request.form)
        if request.json is not None:
            kwargs["content"] = msgspec.json.encode(request.json)
            kwargs["headers"] = {**self._headers, "content-type": "application/json"}
        if request.params is not None:
            kwargs["params"] = dict(request.params)
        response = await self._client.request(request.method, self.url(request.path), **kwargs)
        return RestResponse(response.status_code, response.content, dict(response.headers))
