"""What a carrier must offer the call supervisor, what the supervisor offers a carrier, and
which carriers there are.

One package per carrier (``twilio/``, ``telnyx/``) plus the in-process ``mock``. A carrier is
split like an httpx transport: pure parsing/verification/building lives in its sans-IO modules
(``signature``, ``webhooks``, ``rest``, and for Twilio ``twiml``, ``urls``, ``flow``); its
``shell`` is the thin async class implementing ``Provider``, which sends REST requests through
an injected ``httpx.AsyncClient`` and turns webhook requests into ``events`` delivered through
a ``CallDirectory``. Shared by the carriers: ``rest_spec`` (requests as values), ``rest`` (their
executor) and ``forms`` (form decoding).

This module stays light (stdlib only at run time): importing it must not pull in trio, httpx
or a carrier. ``make_provider`` imports the one carrier the config names, when it is called.

Contract for the initial message: once a call is answered, the initial message
(``record.metadata["initialMessage"]``) must be spoken. Carriers that speak it from their
first webhook answer (Twilio TwiML) set ``speaks_initial_message = True``; for the others the
supervisor calls ``speak`` itself when the call is answered.
"""


from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import httpx
    import trio

    from ..config import VoiceCallConfig
    from ..errors import WebhookRejected
    from ..events import AnyEvent, CallInitiated, EndReason
    from ..model import CallRecord


@dataclass(frozen=True, slots=True)
class WebhookRequest:
    """A carrier's HTTP request, as the web layer received it (no framework objects)."""

    method: str
    path: str
    query_string: str  # raw, without the leading "?"
    headers: Mapping[str, str]  # lower-case names
    body: bytes
    remote_addr: str = ""
    scheme: str = "http"
    host: str = ""  # the Host header as received


@dataclass(frozen=True, slots=True)
class WebhookResponse:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: Mapping[str, str] = field(default_factory=dict)


class InboundDecision(enum.Enum):
    ACCEPT = "accept"
    REJECT = "reject"


@dataclass(frozen=True, slots=True)
class InboundOutcome:
    decision: InboundDecision
    record: CallRecord | None  # the new call when accepted (or when it already existed)
    duplicate: bool = False  # this offer was seen before: do nothing at the carrier again


class RemoteStatus(enum.Enum):
    """What the carrier says about a call after a daemon restart."""

    LIVE = "live"
    ENDED = "ended"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class RemoteCallState:
    status: RemoteStatus
    end_reason: EndReason | None = None
    answered: bool = False


class CallDirectory(Protocol):
    """The supervisor, as a carrier sees it."""

    def find(
        self, *, call_id: str | None = None, provider_call_id: str | None = None
    ) -> CallRecord | None: ...

    async def deliver(self, event: AnyEvent) -> CallRecord | None:
        """Apply a carrier event; returns the call's record after it (None: no such call)."""
        ...

    async def offer_inbound(self, event: CallInitiated) -> InboundOutcome:
        """Apply the inbound policy to a new call; idempotent per provider call id."""
        ...


class Provider(Protocol):
    name: str
    speaks_initial_message: bool
    # headers a webhook must carry; without one the web layer answers 401 before the body
    signature_headers: tuple[str, ...]

    def set_public_url(self, url: str | None) -> None:
        """The public URL changed (a tunnel reported it); carriers build callback URLs on it."""
        ...

    @property
    def public_url(self) -> str | None:
        """The public URL in force: ``publicUrl``, or what a tunnel reported."""
        ...

    async def run(self, directory: CallDirectory, *, task_status: trio.TaskStatus[None]) -> None:
        """Background work owned by the daemon (the mock's simulated callees); report ready."""
        ...

    async def dial(self, record: CallRecord) -> str:
        """Ask the carrier to place ``record``; return the carrier's call id. Never retried."""
        ...

    async def hangup(self, record: CallRecord) -> None:
        """Hang up; a call the carrier no longer knows counts as hung up."""
        ...

    async def speak(self, record: CallRecord, text: str, *, listen: bool) -> None:
        """Say ``text`` on a live call; with ``listen`` also collect the callee's next words."""
        ...

    async def fetch_state(self, record: CallRecord) -> RemoteCallState:
        """The carrier's view of a call, for reconciliation after a restart."""
        ...

    async def handle_webhook(
        self, request: WebhookRequest, directory: CallDirectory
    ) -> WebhookResponse:
        """Verify, parse and act on one webhook; never raises for bad input."""
        ...


def plain(status: int, text: str) -> WebhookResponse:
    return WebhookResponse(status, text.encode())


def rejected(rejection: WebhookRejected) -> WebhookResponse:
    """The one rendering of a rejection: its status and only its public text."""
    return plain(rejection.status, rejection.public)


def _twilio(config: VoiceCallConfig, http: httpx.AsyncClient) -> Provider:
    from .twilio.shell import TwilioProvider

    return TwilioProvider(config, http)


def _telnyx(config: VoiceCallConfig, http: httpx.AsyncClient) -> Provider:
    from .telnyx.shell import TelnyxProvider

    return TelnyxProvider(config, http)


def _mock(config: VoiceCallConfig, http: httpx.AsyncClient) -> Provider:
    from .mock import MockProvider

    return MockProvider(config)  # no network: the HTTP client is not used


# the config's ``provider`` -> its factory; a carrier's modules are imported only when chosen
CARRIERS: dict[str, Callable[[VoiceCallConfig, httpx.AsyncClient], Provider]] = {
    "twilio": _twilio,
    "telnyx": _telnyx,
    "mock": _mock,
}


def make_provider(config: VoiceCallConfig, http: httpx.AsyncClient) -> Provider:
    """The carrier the config names (config validation allows only ``CARRIERS``' names)."""
    return CARRIERS.get(config.provider, _mock)(config, http)
