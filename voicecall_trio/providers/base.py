"""Compatibility path: the provider protocols now live in ``voicecall_trio.providers``.

Kept only for modules outside the providers package that are being reworked in parallel
(``calls.py``, ``recovery.py``, ``web.py``, ``front.py``, ``rpc/methods.py``); new code imports
from ``voicecall_trio.providers``. Delete once nothing imports it.
"""

from . import (
    CallDirectory,
    InboundDecision,
    InboundOutcome,
    Provider,
    ProviderError,
    RemoteCallState,
    RemoteStatus,
    WebhookRequest,
    WebhookResponse,
    plain,
)

__all__ = [
    "CallDirectory",
    "InboundDecision",
    "InboundOutcome",
    "Provider",
    "ProviderError",
    "RemoteCallState",
    "RemoteStatus",
    "WebhookRequest",
    "WebhookResponse",
    "plain",
]
