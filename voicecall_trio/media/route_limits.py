"""The media route's admission arithmetic: how many streams, how many still pending, per IP.

A stream is *pending* from its upgrade request until a valid ``start`` attached it to a call;
anyone who finds the stream URL can open pending connections, so those are capped in total
and per address (``streaming.maxPendingConnections``, ``...PerIp``), and every stream, pending
or attached, counts against ``streaming.maxConnections``. Checked before the WebSocket
handshake, so an excess upgrade costs one 503 and nothing else.

Pure: counts in, a verdict out.
"""

from __future__ import annotations


class Admission:
    """Counts of open and pending streams; ``admit`` takes a slot, ``attached`` and
    ``release`` give back what it took."""

    def __init__(self, max_connections: int, max_pending: int, max_pending_per_ip: int) -> None:
        self.max_connections = max_connections
        self.max_pending = max_pending
        self.max_pending_per_ip = max_pending_per_ip
        self.open = 0  # every stream the route holds, pending or attached
        self.pending = 0
        self.pending_by_ip: dict[str, int] = {}

    def refusal(self, ip: str) -> str | None:
        """Why a new stream from ``ip`` may not be admitted now, or None."""
        if self.open >= self.max_connections:
            return f"{self.open} media streams open (streaming.maxConnections)"
        if self.pending >= self.max_pending:
            return f"{self.pending} streams without a start (streaming.maxPendingConnections)"
        if self.pending_by_ip.get(ip, 0) >= self.max_pending_per_ip:
            return (f"{self.max_pending_per_ip} streams without a start from {ip} "
                    "(streaming.maxPendingConnectionsPerIp)")
        return None

    def admit(self, ip: str) -> str | None:
        """Take an open and a pending slot for ``ip``; or say why not (and take nothing)."""
        refusal = self.refusal(ip)
        if refusal is None:
            self.open += 1
            self.pending += 1
            self.pending_by_ip[ip] = self.pending_by_ip.get(ip, 0) + 1
        return refusal

    def attached(self, ip: str) -> None:
        """The stream's ``start`` was valid: it is no longer pending."""
        self.pending -= 1
        count = self.pending_by_ip.pop(ip, 0) - 1
        if count > 0:
            self.pending_by_ip[ip] = count

    def release(self, ip: str, *, pending: bool) -> None:
        """The stream is gone; ``pending`` if it never attached."""
        self.open -= 1
        if pending:
            self.attached(ip)
