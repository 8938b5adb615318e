"""The HTTP face of the daemon: HTTP requests in, ``WebhookRequest`` out, nothing else.

Two layers behind Hypercorn:

- ``WebhookEndpoint``, a bare ASGI callable, serves exactly ``serve.path``. It is the hot
  path: every carrier callback comes through it, and skipping the framework there cut the
  server CPU per webhook by about a quarter (see docs/benchmarks.md). Guards run
  before the carrier module sees a request: 405 for anything but POST, a per-IP in-flight limit
  (429), a 401 when the carrier's signature header is missing (before the body is read), and a
  body size cap (413, also enforced while streaming a body without Content-Length).
- A quart-trio app serves everything else: ``/healthz``, 404s, and the lifespan protocol.

Whatever the carrier module does with a request, a failure becomes a 4xx and one log line,
never a 500 that leaks a traceback and never a crashed daemon.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from quart import Response
from quart_trio import QuartTrio

from .config import VoiceCallConfig
from .providers.base import CallDirectory, Provider, WebhookRequest, WebhookResponse

log = logging.getLogger("voicecall.web")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class _TooLarge(Exception):
    pass


class WebhookEndpoint:
    """The carrier webhook as a bare ASGI app (one concept: guards, then the carrier)."""

    def __init__(self, config: VoiceCallConfig, provider: Provider,
                 directory: CallDirectory) -> None:
        security = config.webhook_security
        self.provider = provider
        self.directory = directory
        self.max_body = security.max_body_bytes
        self.limit = security.max_in_flight_per_ip
        self.required = tuple(
            () if config.skip_signature_verification else provider.signature_headers
        )
        self.in_flight: Counter[str] = Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "POST":
            await _reply(send, 405, b"method not allowed\n", extra=[(b"allow", b"POST")])
            return
        client = scope.get("client")
        remote = str(client[0]) if client else ""
        if self.in_flight[remote] >= self.limit:
            log.info("webhook from %s refused: too many requests in flight", remote)
            await _reply(send, 429, b"too many requests in flight\n")
            return
        self.in_flight[remote] += 1
        try:
            await self._handle(scope, receive, send, remote)
        finally:
            self.in_flight[remote] -= 1
            if self.in_flight[remote] <= 0:
                del self.in_flight[remote]

    async def _handle(self, scope: Scope, receive: Receive, send: Send, remote: str) -> None:
        headers = {name.decode("latin-1").lower(): value.decode("latin-1")
                   for name, value in scope["headers"]}
        for name in self.required:
            if name not in headers:
                log.info("webhook from %s refused: missing %s header", remote, name)
                await _reply(send, 401, b"missing signature\n")
                return
        try:
            declared = int(headers.get("content-length", "0") or 0)
        except ValueError:
            await _reply(send, 400, b"bad content-length\n")
            return
        try:
            if declared > self.max_body:
                raise _TooLarge
            body = await self._read_body(receive)
        except _TooLarge:
            log.info("webhook from %s refused: body over %d bytes", remote, self.max_body)
            await _reply(send, 413, b"request body too large\n")
            return
        request = WebhookRequest(
            method="POST",
            path=scope["path"],
            query_string=scope.get("query_string", b"").decode("latin-1"),
            headers=headers,
            body=body,
            remote_addr=remote,
            scheme=scope.get("scheme", "http"),
            host=headers.get("host", ""),
        )
        try:
            result = await self.provider.handle_webhook(request, self.directory)
        except Exception:
            log.exception("webhook from %s: carrier module failed", remote)
            result = WebhookResponse(400, b"bad request\n")
        extra = [(k.lower().encode("latin-1"), v.encode("latin-1"))
                 for k, v in result.headers.items()]
        await _reply(send, result.status, result.body, result.content_type, extra)

    async def _read_body(self, receive: Receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise _TooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


async def _reply(send: Send, status: int, body: bytes,
                 content_type: str = "text/plain; charset=utf-8",
                 extra: list[tuple[bytes, bytes]] | None = None) -> None:
    headers = [(b"content-type", content_type.encode("latin-1")),
               (b"content-length", str(len(body)).encode())]
    headers.extend(extra or ())
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def create_app(
    config: VoiceCallConfig,
    provider: Provider,
    directory: CallDirectory,
    *,
    health: Callable[[], dict[str, Any]] = lambda: {"ok": True},
) -> ASGIApp:
    """The daemon's ASGI app: the webhook endpoint at exactly ``serve.path``, Quart for the rest."""
    webhook = WebhookEndpoint(config, provider, directory)
    webhook_path = config.serve.path
    framework = QuartTrio("voicecall_trio")

    @framework.route("/healthz", methods=["GET"])
    async def healthz() -> Any:
        return health()

    @framework.errorhandler(404)
    async def not_found(_: Exception) -> Any:
        return Response("not found\n", status=404)

    @framework.errorhandler(405)
    async def not_allowed(_: Exception) -> Any:
        return Response("method not allowed\n", status=405)

    rest: Any = framework  # Quart's own ASGI types are TypedDicts; ours are plain mappings

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == webhook_path:
            await webhook(scope, receive, send)
            return
        await rest(scope, receive, send)

    return app
