"""The HTTP face of the daemon: HTTP requests in, ``WebhookRequest`` out, nothing else.

One quart-trio app: the carrier webhook at exactly ``serve.path`` (POST only), ``/healthz``,
and 404 for everything else. Guards run before the carrier sees a request: a per-IP in-flight
limit (429), a body size cap (413), and a 401 when the carrier's signature header is missing,
before the body is read. Whatever the carrier module does with a request, a failure becomes a
4xx and one log line, never a 500 that leaks a traceback and never a crashed daemon.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

from quart import Response, request
from quart_trio import QuartTrio

from .config import VoiceCallConfig
from .providers.base import CallDirectory, Provider, WebhookRequest

log = logging.getLogger("voicecall.web")


def create_app(
    config: VoiceCallConfig,
    provider: Provider,
    directory: CallDirectory,
    *,
    health: Callable[[], dict[str, Any]] = lambda: {"ok": True},
) -> QuartTrio:
    app = QuartTrio("voicecall_trio")
    security = config.webhook_security
    app.config["MAX_CONTENT_LENGTH"] = security.max_body_bytes
    webhook_path = config.serve.path
    required = () if config.skip_signature_verification else provider.signature_headers
    in_flight: Counter[str] = Counter()
    limit = security.max_in_flight_per_ip

    @app.route("/healthz", methods=["GET"])
    async def healthz() -> Any:
        return health()

    @app.route(webhook_path, methods=["POST"])
    async def webhook() -> Any:
        remote = request.remote_addr or ""
        if in_flight[remote] >= limit:
            log.info("webhook from %s refused: too many requests in flight", remote)
            return Response("too many requests in flight\n", status=429)
        in_flight[remote] += 1
        try:
            for name in required:
                if name not in request.headers:
                    log.info("webhook from %s refused: missing %s header", remote, name)
                    return Response("missing signature\n", status=401)
            length = request.content_length
            if length is not None and length > security.max_body_bytes:
                return Response("request body too large\n", status=413)
            body = await request.get_data(cache=False, as_text=False)
            assert isinstance(body, bytes)
            hook = WebhookRequest(
                method=request.method,
                path=request.path,
                query_string=request.query_string.decode("latin-1"),
                headers={k.lower(): v for k, v in request.headers.items()},
                body=body,
                remote_addr=remote,
                scheme=request.scheme,
                host=request.host,
            )
            try:
                result = await provider.handle_webhook(hook, directory)
            except Exception:
                log.exception("webhook from %s: carrier module failed", remote)
                return Response("bad request\n", status=400)
            return Response(result.body, status=result.status,
                            content_type=result.content_type, headers=dict(result.headers))
        finally:
            in_flight[remote] -= 1
            if in_flight[remote] <= 0:
                del in_flight[remote]

    @app.errorhandler(404)
    async def not_found(_: Exception) -> Any:
        return Response("not found\n", status=404)

    @app.errorhandler(405)
    async def not_allowed(_: Exception) -> Any:
        return Response("method not allowed\n", status=405)

    @app.errorhandler(413)
    async def too_large(_: Exception) -> Any:
        return Response("request body too large\n", status=413)

    @app.errorhandler(400)
    async def bad_request(_: Exception) -> Any:
        return Response("bad request\n", status=400)

    return app
