"""The HTTP face of the daemon: HTTP requests in, ``WebhookRequest`` out, nothing else.

Three pieces, whichever server carried the request:

- ``WebhookGate``: the webhook's checks and the carrier call, in one place. The fast path in
  ``front.py`` (which answers almost every carrier callback itself) and the ASGI endpoint
  below both go through it, so the two cannot drift. The checks run before the carrier module
  sees a request: 405 for anything but POST, a 401 when the carrier's signature header is
  missing (before the body is read), a body size cap (413), and a per-IP in-flight limit
  (429) taken only once the body is complete and released before the answer is sent, so
  requests that never finish, or answers a peer never reads, cannot hold the slots a
  carrier's next request needs.
- ``WebhookEndpoint``: the same gate as a bare ASGI app at exactly ``serve.path``, for the
  webhook requests the fast path hands to Hypercorn (chunked bodies, h2, ``Expect``).
- A quart-trio app for everything else: ``/healthz``, 404s, and the lifespan protocol.

Whatever the carrier module does with a request, a failure becomes a 4xx and one log line,
never a 500 that leaks a traceback and never a crashed daemon.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

import trio
from quart import Response
from quart_trio import QuartTrio

from .config import VoiceCallConfig
from .errors import BodyTooLarge, WebhookRejected
from .health import PROBE_HEADER
from .log_budget import LogBudget
from .providers import CallDirectory, Provider, WebhookRequest, WebhookResponse, rejected

log = logging.getLogger("voicecall.web")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


METHOD_NOT_ALLOWED = WebhookResponse(405, b"method not allowed\n", headers={"Allow": "POST"})
TOO_MANY = WebhookResponse(429, b"too many requests in flight\n")
MISSING_SIGNATURE = WebhookResponse(401, b"missing signature\n")
BAD_LENGTH = WebhookResponse(400, b"bad content-length\n")
# RFC 9112 6.3: both framings at once is how requests are smuggled past a proxy; refused
AMBIGUOUS_FRAMING = WebhookResponse(400, b"transfer-encoding and content-length together\n")
TOO_LARGE = WebhookResponse(413, b"request body too large\n")
CARRIER_FAILED = WebhookResponse(400, b"bad request\n")


class WebhookGate:
    """The webhook's guards and the carrier call, whichever HTTP layer carried the request.

    Both the ASGI endpoint below and the fast front (``front.py``) go through one gate, so
    the two paths cannot drift: same order of checks, same answers, one in-flight count.

    Verified requests start their carrier handling in arrival order (the ``_turnstile``).
    trio runs each batch of ready tasks forwards or backwards at random, so under a burst a
    request answered early in one batch can be answered late in the next: at 50 busy
    connections that doubled p99 over p50. Passing a FIFO lock first (and releasing it at
    once) restores first-come-first-served without limiting concurrency: a handler that waits
    on the carrier's REST API holds nothing while it waits.
    """

    def __init__(self, config: VoiceCallConfig, provider: Provider,
                 directory: CallDirectory, *, probe_token: str | None = None) -> None:
        security = config.webhook_security
        self.probe_token = probe_token
        self.provider = provider
        self.directory = directory
        self.path = config.serve.path
        self.max_body = security.max_body_bytes
        self.limit = security.max_in_flight_per_ip
        self.required = tuple(
            () if config.skip_signature_verification else provider.signature_headers
        )
        self.in_flight: dict[str, int] = {}
        self._turnstile = trio.StrictFIFOLock()
        # refusals of outside input: a flood of them must not flood the log (log_budget.py)
        self.refused_busy = LogBudget(log)
        self.refused_unsigned = LogBudget(log)
        self.refused_large = LogBudget(log)
        self.refused_other = LogBudget(log)

    def full(self, remote: str) -> bool:
        """Would ``enter`` refuse ``remote`` now? (Asked before a ``100 Continue``.)"""
        return self.in_flight.get(remote, 0) >= self.limit

    def enter(self, remote: str) -> bool:
        """Take an in-flight slot for ``remote``; False (answer 429) when it has too many.

        Taken only for a request that is complete (body read) and so can be verified: a slot
        held while a body trickles in would let junk that never finishes starve the carrier,
        which behind a tunnel shares the junk's address (127.0.0.1).
        """
        count = self.in_flight.get(remote, 0)
        if count >= self.limit:
            self.refused_busy("webhook from %s refused: too many requests in flight", remote)
            return False
        self.in_flight[remote] = count + 1
        return True

    def leave(self, remote: str) -> None:
        count = self.in_flight.pop(remote, 0) - 1
        if count > 0:
            self.in_flight[remote] = count

    def refuse_head(self, headers: Mapping[str, str], remote: str) -> WebhookResponse | None:
        """The answer when the head alone settles it (401, 400, 413), before any body is read."""
        for name in self.required:
            if name not in headers:
                self.refused_unsigned("webhook from %s refused: missing %s header", remote, name)
                return MISSING_SIGNATURE
        try:
            declared = int(headers.get("content-length", "0") or 0)
        except ValueError:
            return BAD_LENGTH
        if declared > self.max_body:
            self.refused_large("webhook from %s refused: body over %d bytes", remote, self.max_body)
            return TOO_LARGE
        return None

    def stamp(self, headers: Mapping[str, str], response: WebhookResponse) -> WebhookResponse:
        """``response``, with the probe token echoed when the request carried it (doctor)."""
        token, probe = self.probe_token, headers.get(PROBE_HEADER)
        if not token or probe is None or not hmac.compare_digest(
                probe.encode("utf-8", "replace"), token.encode()):
            return response
        return WebhookResponse(response.status, response.body, response.content_type,
                               {**response.headers, PROBE_HEADER: token})

    async def respond(self, request: WebhookRequest) -> WebhookResponse:
        """The carrier module's answer. A ``WebhookRejected`` it raises is rendered with its
        own status; any other failure becomes a 400 and one log line."""
        async with self._turnstile:
            pass
        try:
            return await self.provider.handle_webhook(request, self.directory)
        except WebhookRejected as exc:  # a rejection the carrier module left to us
            self.refused_other("webhook from %s refused: %s", request.remote_addr, exc)
            return rejected(exc)
        except Exception:
            log.exception("webhook from %s: carrier module failed", request.remote_addr)
            return CARRIER_FAILED


class WebhookEndpoint:
    """The carrier webhook as a bare ASGI app: the gate's checks around a streamed body."""

    def __init__(self, gate: WebhookGate) -> None:
        self.gate = gate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "POST":
            await _reply(send, METHOD_NOT_ALLOWED)
            return
        client = scope.get("client")
        remote = str(client[0]) if client else ""
        headers = {name.decode("latin-1").lower(): value.decode("latin-1")
                   for name, value in scope["headers"]}
        refusal = self.gate.refuse_head(headers, remote)
        if refusal is None:
            try:
                body = await self._read_body(receive)
            except BodyTooLarge:
                self.gate.refused_large("webhook from %s refused: body over %d bytes",
                                        remote, self.gate.max_body)
                refusal = TOO_LARGE
        if refusal is not None:
            # over HTTP/1.x the connection ends after it rather than read an unwanted body
            refusal = self.gate.stamp(headers, refusal)
            await _reply(send, refusal, close=scope.get("http_version", "1.1") in ("1.0", "1.1"))
            return
        if not self.gate.enter(remote):
            await _reply(send, TOO_MANY)
            return
        try:
            response = await self._handle(scope, headers, body, remote)
        finally:
            # released before the answer is sent, as on the fast path: a peer that never
            # reads its answer (an h2 stream with a zero window) must not keep the slot
            self.gate.leave(remote)
        await _reply(send, self.gate.stamp(headers, response))

    async def _handle(self, scope: Scope, headers: dict[str, str], body: bytes,
                      remote: str) -> WebhookResponse:
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
        return await self.gate.respond(request)

    async def _read_body(self, receive: Receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.gate.max_body:
                raise BodyTooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


async def _reply(send: Send, response: WebhookResponse, *, close: bool = False) -> None:
    """Send ``response``; ``close`` adds ``connection: close`` (HTTP/1.x only)."""
    headers = [(b"content-type", response.content_type.encode("latin-1")),
               (b"content-length", str(len(response.body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    headers.extend((k.lower().encode("latin-1"), v.encode("latin-1"))
                   for k, v in response.headers.items())
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})


def create_app(
    config: VoiceCallConfig,
    provider: Provider,
    directory: CallDirectory,
    *,
    health: Callable[[], dict[str, Any]] = lambda: {"ok": True},
) -> ASGIApp:
    """The daemon's ASGI app: the webhook endpoint at exactly ``serve.path``, Quart for the rest."""
    return create_app_for(WebhookGate(config, provider, directory), health=health)


def create_app_for(gate: WebhookGate, *,
                   health: Callable[[], dict[str, Any]] = lambda: {"ok": True}) -> ASGIApp:
    """The ASGI app around an existing gate (the fast front shares the gate with it)."""
    webhook = WebhookEndpoint(gate)
    webhook_path = gate.path
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
