"""Reaching the daemon from the CLI: which socket, and one blocking JSON-RPC call.

The socket comes from ``--socket`` when given, else from the config exactly as the daemon
derives it (``configfile.locate``, stdlib only: no msgspec on the CLI's path).
"""

from __future__ import annotations

import os
from typing import Any


def socket_path(socket: str | None, config: str | None) -> str:
    """``--socket`` (``~`` expanded), else the socket the config names."""
    if socket:
        return os.path.expanduser(socket)
    from ..configfile import locate

    return locate(config, os.environ)[0]


def journal_path(config: str | None) -> str:
    """The ``calls.jsonl`` the config names (read directly by ``tail`` and ``latency``)."""
    from ..configfile import locate

    return locate(config, os.environ)[1]


def rpc(socket: str | None, config: str | None, method: str,
        params: dict[str, Any] | None = None) -> Any:
    """One request on a fresh connection; raises ``DaemonUnreachable`` or ``RpcError``."""
    from ..rpc.client import SyncClient

    with SyncClient(socket_path(socket, config)) as client:
        return client.call(method, params or {})
