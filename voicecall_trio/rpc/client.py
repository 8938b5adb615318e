"""A blocking JSON-RPC client over the Unix socket, on the stdlib only.

The CLI uses it so that ``voicecall status`` starts without importing trio, quart or httpx.
Notifications that arrive while waiting for a reply are queued for ``notifications()``. The
books (ids, the pending call, what each line read asks for) are kept by ``peer.Peer``, which is
stdlib-only too. A call never waits for a reply that cannot come: a reply it cannot read, one
over the line limit, or a refusal with a null id ends it with ``RpcError``.
"""

from __future__ import annotations

import os
import socket
from collections import deque
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

from ..errors import DaemonUnreachable as DaemonUnreachable  # re-exported: public API
from ..errors import RpcError
from .peer import Action, Peer, Refuse, Reply
from .protocol import INTERNAL_ERROR, Notification


class SyncClient:
    def __init__(self, path: Path | str, *, connect_timeout: float = 2.0) -> None:
        self.path = os.fspath(path)
        self._peer = Peer[None]()
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

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._sock.close()

    def call(self, method: str, params: dict[str, Any] | None = None,
             timeout: float | None = None) -> Any:
        msg_id, line = self._peer.send_request(method, params or {}, None)  # RpcError: text
        self._sock.settimeout(timeout)
        try:
            self._sock.sendall(line)
            while True:
                action = self._next_action()
                if isinstance(action, Reply):  # the one call pending is this one
                    reply = action.response
                    if reply.id is None:  # a refusal: the daemon could not read the line
                        code = reply.error.get("code", -32603) if reply.error else -32603
                        raise RpcError(code, "the daemon could not read the request")
                    if reply.error is not None:
                        raise RpcError.from_reply(reply.error)
                    return reply.result
                if isinstance(action, Notification):
                    self._pending.append(action)
                elif isinstance(action, Refuse):
                    # a reply line that is not JSON-RPC (or not UTF-8): it cannot be matched
                    # to this call, and waiting for another would hang
                    raise RpcError(action.error.code, "the daemon's reply could not be read")
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise DaemonUnreachable(self.path, f"connection lost: {exc}") from None
        finally:
            self._peer.forget(msg_id)
            self._sock.settimeout(None)

    def notifications(self) -> Iterator[Notification]:
        """Yield notifications until the daemon closes the connection."""
        while True:
            while self._pending:
                yield self._pending.popleft()
            action = self._next_action(skip_too_long=True)
            if isinstance(action, Notification):
                yield action

    def _next_action(self, *, skip_too_long: bool = False) -> Action[None]:
        """The next line's action. A line over the limit fails a call (its reply would
        never come) but is only skipped while watching notifications."""
        while (action := self._peer.next_action()) is None:
            data = self._sock.recv(65536)
            if not data:
                raise DaemonUnreachable(self.path, "the daemon closed the connection")
            self._peer.feed(data)
        if isinstance(action, Refuse) and action.too_long and not skip_too_long:
            # the rest of that line is dropped and its reply would never come: say so
            # rather than wait for ever
            raise RpcError(INTERNAL_ERROR, "the daemon's reply is over the 1 MiB line limit")
        return action
