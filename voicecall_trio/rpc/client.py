"""A blocking JSON-RPC client over the Unix socket, on the stdlib only.

The CLI uses it so that ``voicecall status`` starts without importing trio, quart or httpx.
Notifications that arrive while waiting for a reply are queued for ``notifications()``.
"""

from __future__ import annotations

import itertools
import os
import socket
from collections import deque
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

from .protocol import (
    INTERNAL_ERROR,
    LineSplitter,
    LineTooLong,
    Notification,
    ProtocolError,
    Response,
    RpcError,
    encode_request,
    parse_line,
)


class DaemonUnreachable(Exception):
    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(
            f"voicecall daemon is not reachable at {path} ({reason}). "
            "Start it with `voicecall serve` (or pass --socket / set VOICECALL_SOCKET)."
        )
        self.path = path


class SyncClient:
    def __init__(self, path: Path | str, *, connect_timeout: float = 2.0) -> None:
        self.path = os.fspath(path)
        self._ids = itertools.count(1)
        self._splitter = LineSplitter()
        self._pending: deque[Notification] = deque()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(connect_timeout)
        try:
            self._sock.connect(self.path)
        except FileNotFoundError:
            self._sock.close()
            raise DaemonUnreachable(self.path, "no socket file") from None
        except ConnectionRefusedError:
            self._sock.close()
            raise DaemonUnreachable(self.path, "connection refused: stale socket") from None
        except PermissionError:
            self._sock.close()
            raise DaemonUnreachable(self.path, "permission denied") from None
        except OSError as exc:
            self._sock.close()
            raise DaemonUnreachable(self.path, exc.strerror or str(exc)) from None
        self._sock.settimeout(None)
        self._lines: deque[bytes] = deque()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._sock.close()

    def call(self, method: str, params: dict[str, Any] | None = None,
             timeout: float | None = None) -> Any:
        msg_id = next(self._ids)
        line = encode_request(msg_id, method, params or {})  # RpcError for invalid text
        self._sock.settimeout(timeout)
        try:
            self._sock.sendall(line)
            while True:
                message = self._next_message()
                if isinstance(message, Response) and message.id == msg_id:
                    if message.error is not None:
                        raise RpcError.from_reply(message.error)
                    return message.result
                if isinstance(message, Notification):
                    self._pending.append(message)
                elif isinstance(message, ProtocolError):
                    # a reply line that is not JSON-RPC (or not UTF-8): it cannot be matched
                    # to this call, and waiting for another would hang
                    raise RpcError(message.code, "the daemon's reply could not be read")
                elif isinstance(message, Response) and message.id is None:
                    code = message.error.get("code", -32603) if message.error else -32603
                    raise RpcError(code, "the daemon could not read the request")
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise DaemonUnreachable(self.path, f"connection lost: {exc}") from None
        finally:
            self._sock.settimeout(None)

    def notifications(self) -> Iterator[Notification]:
        """Yield notifications until the daemon closes the connection."""
        while True:
            while self._pending:
                yield self._pending.popleft()
            message = self._next_message()
            if isinstance(message, Notification):
                yield message

    def _next_message(self) -> Any:
        while not self._lines:
            data = self._sock.recv(65536)
            if not data:
                raise DaemonUnreachable(self.path, "the daemon closed the connection")
            for item in self._splitter.feed(data):
                if isinstance(item, LineTooLong):
                    # the rest of that line is dropped and its reply would never come:
                    # say so rather than wait for ever
                    raise RpcError(INTERNAL_ERROR, "the daemon's reply is over the 1 MiB "
                                   "line limit")
                self._lines.append(item)
        return parse_line(self._lines.popleft())
