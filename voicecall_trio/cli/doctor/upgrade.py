"""One unsigned WebSocket upgrade request, and the status line it gets back (trio).

Enough to prove that the public stream URL reaches a stream route: the daemon answers 403
(the upgrade is not signed: enforcement works) or 101; a 404 or no connection means the
carrier's media stream would never arrive. Raw HTTP/1.1 over trio's streams, because an HTTP
client would not send an upgrade; the connection is closed right after the status line.
"""

from __future__ import annotations

import base64
import secrets
import ssl
from urllib.parse import urlsplit

import trio

TIMEOUT_S = 10.0
MAX_HEAD_BYTES = 8192


def upgrade_request(url: str) -> tuple[str, int, bool, bytes]:
    """(host, port, tls, request bytes) for ``ws://`` / ``wss://`` ``url``."""
    parts = urlsplit(url)
    tls = parts.scheme in ("wss", "https")
    host = parts.hostname or ""
    port = parts.port or (443 if tls else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    key = base64.b64encode(secrets.token_bytes(16)).decode()
    head = (f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            "User-Agent: voicecall-doctor\r\n\r\n")
    return host, port, tls, head.encode("ascii")


def status_of(head: bytes) -> int | None:
    """The status code of an HTTP/1.x status line, or None."""
    line = head.split(b"\r\n", 1)[0].split()
    if len(line) >= 2 and line[0].startswith(b"HTTP/1.") and line[1].isdigit():
        return int(line[1])
    return None


async def upgrade_status(url: str, timeout_s: float = TIMEOUT_S) -> int | str:
    """The HTTP status the upgrade got, or why there was none."""
    host, port, tls, request = upgrade_request(url)
    if not host:
        return f"{url} has no host"
    try:
        with trio.fail_after(timeout_s):
            stream: trio.abc.Stream = await trio.open_tcp_stream(host, port)
            try:
                if tls:
                    stream = trio.SSLStream(stream, ssl.create_default_context(),
                                            server_hostname=host)
                await stream.send_all(request)
                head = b""
                while b"\r\n" not in head and len(head) < MAX_HEAD_BYTES:
                    chunk = await stream.receive_some(4096)
                    if not chunk:
                        break
                    head += chunk
            finally:
                await trio.aclose_forcefully(stream)
    except trio.TooSlowError:
        return f"no answer within {timeout_s:g} s"
    except (OSError, trio.BrokenResourceError, ssl.SSLError) as exc:
        return f"cannot connect: {exc}"
    status = status_of(head)
    return status if status is not None else "the answer is not HTTP"
