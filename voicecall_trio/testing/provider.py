"""``FakeProvider``: a ``Provider`` that reaches no carrier, for testing what sits around one.

The web gate, the HTTP front and the supervisor each hold a provider; their tests need one that
does what it is told and remembers what it was asked. This one answers every webhook with
``reply(request)`` (optionally after ``hold`` is set, to keep a handler busy), and records each
webhook, dial, hang-up and speak. It verifies nothing and delivers no events: the signature check
and the parsing are the real carriers' business, tested in their own modules.

``reply`` is where a test says what "the carrier module" does: return a response, or raise to
play a carrier module with a bug.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from ..model import CallRecord
from ..providers import (
    CallDirectory,
    RemoteCallState,
    RemoteStatus,
    WebhookRequest,
    WebhookResponse,
)

if TYPE_CHECKING:
    from ..providers import Provider

__all__ = ["FakeProvider", "Reply", "empty_twiml"]

Reply = Callable[[WebhookRequest], WebhookResponse]


def empty_twiml(request: WebhookRequest) -> WebhookResponse:
    """The default ``reply``: an empty TwiML document."""
    return WebhookResponse(200, b"<Response/>", "text/xml")


class FakeProvider:
    """A provider that records and obeys (see the module docstring).

    ``seen``: every webhook request, in arrival order (before ``hold``); ``dialled``,
    ``hung_up``, ``spoken`` (``(record, text, listen)``): what the supervisor asked.
    ``dial`` returns ``fake-1``, ``fake-2``, ...; ``fetch_state`` returns ``remote``.
    """

    speaks_initial_message = False

    def __init__(
        self,
        reply: Reply = empty_twiml,
        *,
        hold: trio.Event | None = None,
        name: str = "fake",
        signature_headers: tuple[str, ...] = ("x-sig",),
    ) -> None:
        self.name = name
        self.signature_headers = signature_headers  # a webhook without one is 401 at the gate
        self.reply = reply
        self.hold = hold  # when set by a test, webhook handlers wait for it
        self.seen: list[WebhookRequest] = []
        self.dialled: list[CallRecord] = []
        self.hung_up: list[CallRecord] = []
        self.spoken: list[tuple[CallRecord, str, bool]] = []
        self.remote = RemoteCallState(RemoteStatus.UNKNOWN)
        self._public_url: str | None = None
        self._ids = itertools.count(1)

    def set_public_url(self, url: str | None) -> None:
        self._public_url = url

    @property
    def public_url(self) -> str | None:
        return self._public_url

    async def run(
        self, directory: CallDirectory, *, task_status: trio.TaskStatus[None]
    ) -> None:
        """Nothing runs in the background; ready at once."""
        task_status.started()
        await trio.sleep_forever()

    async def dial(self, record: CallRecord) -> str:
        self.dialled.append(record)
        return f"fake-{next(self._ids)}"

    async def hangup(self, record: CallRecord) -> None:
        self.hung_up.append(record)

    async def speak(self, record: CallRecord, text: str, *, listen: bool) -> None:
        self.spoken.append((record, text, listen))

    async def fetch_state(self, record: CallRecord) -> RemoteCallState:
        return self.remote

    async def handle_webhook(
        self, request: WebhookRequest, directory: CallDirectory
    ) -> WebhookResponse:
        self.seen.append(request)
        if self.hold is not None:
            await self.hold.wait()
        return self.reply(request)


if TYPE_CHECKING:
    _conforms: Provider = FakeProvider()  # mypy checks the whole protocol here
