"""The Telnyx carrier: a thin async shell over the sans-IO modules of ``providers.telnyx``.

REST goes through ``RestClient`` (Bearer API key, retries only for idempotent actions, each
with a deterministic ``command_id``). Webhooks are verified first and fail closed: without
``telnyx.publicKey`` every webhook is refused unless ``skipSignatureVerification`` is set.

Webhook answers: 401 for a missing/bad signature, 400 for a body that is not a Telnyx
envelope, and 200 for everything else. A ``ProviderError`` while acting on a verified
webhook (answer, reject) is logged and still answered 200: Telnyx would retry the same
event, but the retry is a duplicate the directory already applied, so it could not act again
anyway. A failed answer instead ends the call as ``error`` and hangs it up here, which frees
the parked call at Telnyx (the supervisor treats a carrier error as the carrier's end of the
call and sends no hangup of its own).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from urllib.parse import urlsplit

import httpx
import nacl.signing
import trio

from ...config import VoiceCallConfig
from ...errors import ConfigError, ProviderError, SignatureRejected, WebhookRejected
from ...events import CallError, CallInitiated
from ...log_budget import LogBudget
from ...model import CallRecord, is_late_confirmation, was_answered
from .. import (
    CallDirectory,
    InboundDecision,
    RemoteCallState,
    RemoteStatus,
    WebhookRequest,
    WebhookResponse,
    rejected,
)
from ..rest import RestClient, RestRequest, RestResponse
from . import rest as api
from .signature import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    ReplayCache,
    decode_signature,
    load_public_key,
    parse_timestamp,
    verify,
)
from .webhooks import TelnyxWebhook, bind_events, parse_webhook

log = logging.getLogger("voicecall.telnyx")

_OK = WebhookResponse(200, b'{"ok":true}', "application/json")
_DUPLICATE = WebhookResponse(200, b'{"ok":true,"duplicate":true}', "application/json")
_CARRIER = "Telnyx"
_MAX_REMEMBERED_OFFERS = 1024


class TelnyxProvider:
    """``Provider`` for Telnyx Call Control v2.

    The webhook URL sent with each call is ``publicUrl`` (or what a tunnel later reports via
    ``set_public_url``); with none, Telnyx uses the webhook URL of the connection.
    """

    name = "telnyx"
    speaks_initial_message = False
    # the web layer answers 401 before reading a body that lacks one of these
    signature_headers: tuple[str, ...] = (SIGNATURE_HEADER, TIMESTAMP_HEADER)

    def __init__(
        self,
        config: VoiceCallConfig,
        http: httpx.AsyncClient,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self._clock = clock
        # forged or malformed webhooks: a flood must not flood the log (log_budget.py)
        self.refused = LogBudget(log, logging.WARNING)
        self._public_url = config.public_url
        self._key: nacl.signing.VerifyKey | None = None
        if config.telnyx.public_key:
            try:
                self._key = nacl.signing.VerifyKey(load_public_key(config.telnyx.public_key))
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        self._rest = RestClient(
            http,
            config.telnyx.api_base_url,
            headers={
                "Authorization": f"Bearer {config.telnyx.api_key or ''}",
                "Accept": "application/json",
            },
            describe_error=api.format_error,
            error_code=api.error_code,
            carrier=_CARRIER,
        )
        self._replays = ReplayCache()
        self._transcribing: set[str] = set()  # call ids with transcription_start sent
        self._offers: OrderedDict[str, None] = OrderedDict()  # inbound ccids acted upon

    def set_public_url(self, url: str | None) -> None:
        """The tunnel found our public URL (or lost it)."""
        self._public_url = url

    def reconfigure(self, config: VoiceCallConfig) -> None:
        """A reloaded config (``reloader.apply_config``; only keys ``reload.LIVE`` allows have
        changed): speech and dials from now on read it."""
        self._config = config

    @property
    def public_url(self) -> str | None:
        return self._public_url

    @property
    def webhook_url(self) -> str | None:
        """``publicUrl``, plus ``serve.path`` when it has no path of its own."""
        if not self._public_url:
            return None
        if urlsplit(self._public_url).path in ("", "/"):
            return self._public_url.rstrip("/") + self._config.serve.path
        return self._public_url

    # -- Provider: background and outbound ------------------------------------------------

    async def run(
        self,
        directory: CallDirectory,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Nothing runs in the background for Telnyx; webhooks arrive via the web layer."""
        task_status.started()
        await trio.sleep_forever()

    async def dial(self, record: CallRecord) -> str:
        connection_id = self._config.telnyx.connection_id
        if not connection_id:
            raise ProviderError("telnyx.connectionId is not set")
        request = api.create_call(
            call_id=record.call_id,
            connection_id=connection_id,
            to=record.to,
            from_=record.from_ or self._config.from_number or "",
            webhook_url=self.webhook_url,
            ring_timeout_ms=self._config.ring_timeout_ms,
        )
        response = await self._send(request)
        ccid = api.parse_created_call(response)
        if ccid is None:
            raise ProviderError("Telnyx created the call but sent no call_control_id",
                                status=response.status)
        return ccid

    async def hangup(self, record: CallRecord) -> None:
        self._transcribing.discard(record.call_id)
        if not record.provider_call_id:
            return  # never reached Telnyx: nothing to hang up
        response = await self._send(api.hangup(record.provider_call_id, call_id=record.call_id))
        if not api.hangup_succeeded(response):
            message = api.format_error(response)
            raise ProviderError(message, status=response.status, code=api.error_code_of(message))

    async def speak(self, record: CallRecord, text: str, *, listen: bool) -> None:
        ccid = _ccid(record)
        turn = api.text_turn(len(record.transcript), text)
        await self._send(
            api.speak(ccid, call_id=record.call_id, text=text, turn=turn,
                      voice=self._config.tts.voice)
        )
        if listen and record.call_id not in self._transcribing:
            self._transcribing.add(record.call_id)  # before the await: one start per call
            try:
                await self._send(api.transcription_start(ccid, call_id=record.call_id))
            except BaseException:
                self._transcribing.discard(record.call_id)
                raise

    async def fetch_state(self, record: CallRecord) -> RemoteCallState:
        if not record.provider_call_id:
            return RemoteCallState(RemoteStatus.UNKNOWN)
        # A failure (5xx after retries, timeout) raises: the supervisor then resumes the call
        # rather than abandoning one that may still be live at Telnyx.
        response = await self._send(api.get_call(record.provider_call_id))
        return api.parse_call_state(response)

    # -- Provider: webhooks ----------------------------------------------------------------

    async def handle_webhook(
        self, request: WebhookRequest, directory: CallDirectory
    ) -> WebhookResponse:
        try:
            if not self._config.skip_signature_verification and self._replayed(request):
                return _DUPLICATE
            hook = parse_webhook(request.body)
        except WebhookRejected as exc:
            self.refused("telnyx webhook from %s refused: %s", request.remote_addr or "?", exc)
            return rejected(exc)
        try:
            await self._act(hook, directory)
        except ProviderError as exc:
            log.warning("telnyx: %s %s (call %s): %s", hook.event_type, hook.event_id,
                        hook.call_control_id, exc)
        return _OK

    def _replayed(self, request: WebhookRequest) -> bool:
        """False when the delivery is authentic and new, True for a replay of one; raises
        ``SignatureRejected`` when it is not authentic."""
        signature = _header(request.headers, SIGNATURE_HEADER)
        timestamp = _header(request.headers, TIMESTAMP_HEADER)
        if not signature or not timestamp:
            raise SignatureRejected("signature headers missing", public="missing signature")
        if self._key is None:
            raise SignatureRejected("telnyx.publicKey is not set",
                                    public="signature cannot be verified")
        now = self._clock()
        result = verify(request.body, signature, timestamp, now, self._key)
        if not result.ok:
            raise SignatureRejected(result.reason)
        sig, ts = decode_signature(signature), parse_timestamp(timestamp)
        assert sig is not None and ts is not None  # verify() accepted both
        if self._replays.seen(sig, ts, now):
            log.info("telnyx webhook from %s ignored: replayed delivery",
                     request.remote_addr or "?")
            return True
        return False

    async def _act(self, hook: TelnyxWebhook, directory: CallDirectory) -> None:
        if hook.is_inbound_offer:
            await self._offer(hook, directory)
            return
        if not hook.events:
            return
        record = None
        if hook.call_id:
            record = directory.find(call_id=hook.call_id)
        if record is None and hook.call_control_id:
            record = directory.find(provider_call_id=hook.call_control_id)
        if record is None:
            log.debug("telnyx: %s for unknown call %s", hook.event_type, hook.call_control_id)
            return
        for event in bind_events(hook, call_id=record.call_id, direction=record.direction,
                                 answered=was_answered(record)):
            if is_late_confirmation(record, event):  # model.py, rule 7
                log.debug("telnyx: late %s for call %s ignored", hook.event_type,
                          record.call_id)
                continue
            record = await directory.deliver(event) or record
        if hook.event_type == "call.hangup":
            self._transcribing.discard(record.call_id)

    async def _offer(self, hook: TelnyxWebhook, directory: CallDirectory) -> None:
        """Apply the inbound policy, then answer or reject at Telnyx exactly once."""
        (event,) = hook.events
        assert isinstance(event, CallInitiated) and hook.call_control_id is not None
        ccid = hook.call_control_id
        outcome = await directory.offer_inbound(event)
        if outcome.duplicate or ccid in self._offers:
            return
        self._offers[ccid] = None
        while len(self._offers) > _MAX_REMEMBERED_OFFERS:
            self._offers.popitem(last=False)
        if outcome.decision is InboundDecision.REJECT:
            await self._send(api.reject(ccid))
            return
        call_id = outcome.record.call_id if outcome.record is not None else ccid
        try:
            await self._send(api.answer(ccid, call_id=call_id))
        except ProviderError as exc:
            if outcome.record is None:
                raise
            log.warning("telnyx: answering call %s failed: %s", call_id, exc)
            await directory.deliver(
                CallError(id=f"{hook.event_id}:answer", call_id=call_id, provider_call_id=ccid,
                          error=f"answer failed: {exc}")
            )
            try:
                response = await self._send(api.hangup(ccid, call_id=call_id))
            except ProviderError as hangup_exc:
                log.warning("telnyx: hanging up unanswered call %s failed: %s", call_id,
                            hangup_exc)
                return
            if not api.hangup_succeeded(response):
                log.warning("telnyx: hanging up unanswered call %s failed: %s", call_id,
                            api.format_error(response))

    # -- REST --------------------------------------------------------------------------------

    async def _send(self, request: RestRequest) -> RestResponse:
        """Send; errors read ``Telnyx <code>: <title>`` and carry the code (also the last
        error after retries ran out, whose message ``RestClient`` keeps)."""
        try:
            return await self._rest.send(request)
        except ProviderError as exc:
            if exc.code is None:
                exc.code = api.error_code_of(str(exc))
            raise


def _ccid(record: CallRecord) -> str:
    if not record.provider_call_id:
        raise ProviderError("the call has no Telnyx call_control_id yet")
    return record.provider_call_id


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    for key, item in headers.items():
        if key.lower() == name:
            return item
    return None
