"""The Twilio carrier: the async shell over the pure Twilio modules.

``signature`` verifies, ``webhooks`` parses, ``twiml`` and ``rest``
build; this class only sends REST specs through the injected ``httpx.AsyncClient`` and
turns webhooks into events delivered through the ``CallDirectory``.

How a call goes:

* outbound: ``dial`` creates the call with ``Url=<webhook>?callId=..``; on answer Twilio
  fetches it and we answer with the initial message: notify = Say, Pause
  (``notifyHangupDelaySec``), Hangup; conversation = Say + Gather (or Say + Connect/Stream
  when ``streaming.enabled``). A second, different fetch of a notify call gets only
  ``<Hangup/>`` (the message is spoken once); of a conversation call, a Gather without
  the greeting.
* inbound: the first request to the bare webhook URL is offered to the inbound policy;
  rejected calls get ``<Reject/>`` (hung up exactly once, by Twilio), accepted ones the
  greeting + Gather.
* turns: each Gather carries a fresh turn token. A result with the current token is
  delivered (``CallSpeech``) and the call is held (Pause + Redirect loop) until ``speak``
  replaces the TwiML by a REST update; a result with any other token is acknowledged
  with the hold TwiML and delivers nothing.
* the bot's words: when our webhook answer speaks (initial message, inbound greeting) we
  deliver ``CallSpeaking(text)`` with a deterministic id (``twilio:<CallSid>:say:initial``),
  so the transcript has it once. For ``speak`` the supervisor records ``CallSpeaking``
  itself. A Say not followed by a Gather redirects straight back with ``said=<token>``,
  and that request delivers ``CallSpoken`` (Twilio has finished saying it).

Idempotency: event ids come from the webhook content (the model drops repeats), and an
identical signed request seen again (bounded replay cache keyed by signature + request)
gets the first answer back with no side effect. Per-call turn state lives in memory: after
a daemon restart a Gather result from before it is treated as stale.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
from collections import OrderedDict
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
import trio

from ...config import VoiceCallConfig
from ...events import CallAnswered, CallSpeaking, CallSpoken
from ...model import CallRecord
from .. import (
    CallDirectory,
    InboundDecision,
    ProviderError,
    RemoteCallState,
    RemoteStatus,
    WebhookRequest,
    WebhookResponse,
    plain,
)
from ..rest import RestClient
from . import twiml
from .rest import (
    call_sid_of,
    create_call,
    fetch_call,
    format_error,
    hangup_call,
    parse_fetch,
    update_twiml,
    with_query,
)
from .signature import (
    SIGNATURE_HEADER,
    SignatureCheck,
    UrlPolicy,
    reconstruct_for,
    verify_request,
)
from .webhooks import (
    RequestKind,
    TwilioWebhook,
    WebhookParseError,
    parse_webhook,
    strict_form,
)

log = logging.getLogger("voicecall.twilio")

DEFAULT_GREETING = "Hello! How can I help you today?"  # as the supervisor's
REPLAY_CACHE_SIZE = 512
LIVE_CALLS_LIMIT = 1024


@dataclass(slots=True)
class _Live:
    """What we told Twilio about one call; only this process's memory."""

    turn: str | None = None  # token of the Gather whose result we want
    said: str | None = None  # token of the Say whose end we wait for
    initial_served: bool = False


def _xml(document: str) -> WebhookResponse:
    return WebhookResponse(200, document.encode("utf-8"), content_type=twiml.CONTENT_TYPE)


def _new_token() -> str:
    return secrets.token_urlsafe(9)


class TwilioProvider:
    name = "twilio"
    speaks_initial_message = True
    # the web layer answers 401 before reading a body that lacks this header
    signature_headers: tuple[str, ...] = (SIGNATURE_HEADER,)

    def __init__(
        self,
        config: VoiceCallConfig,
        http: httpx.AsyncClient,
        *,
        secret: bytes | None = None,
        replay_cache_size: int = REPLAY_CACHE_SIZE,
    ) -> None:
        self._config = config
        self._account = config.twilio.account_sid or ""
        self._token = config.twilio.auth_token
        self._rest = RestClient(
            http,
            config.twilio.api_base_url,
            auth=(self._account, self._token or ""),
            describe_error=format_error,
            carrier="Twilio",
        )
        self._voice = twiml.twilio_voice(config.tts.voice)
        self._public_url = config.public_url
        self._policy: UrlPolicy | None = None  # rebuilt when the public URL changes
        self._last_base: str | None = None
        self._secret = secret or secrets.token_bytes(32)
        self._replay: OrderedDict[str, WebhookResponse] = OrderedDict()
        self._replay_size = max(1, replay_cache_size)
        self._pending: dict[str, trio.Event] = {}
        self._calls: OrderedDict[str, _Live] = OrderedDict()

    # -- URLs and tokens --------------------------------------------------------------------

    def set_public_url(self, url: str | None) -> None:
        """The tunnel found our public URL (or lost it)."""
        self._public_url = url

    @property
    def public_url(self) -> str | None:
        return self._public_url

    @property
    def webhook_url(self) -> str | None:
        """The public webhook URL: ``publicUrl`` (plus ``serve.path`` if it has no path)."""
        if self._public_url:
            if urlsplit(self._public_url).path in ("", "/"):
                return self._public_url.rstrip("/") + self._config.serve.path
            return self._public_url
        return self._last_base

    def stream_url(self) -> str | None:
        """``wss://<public host><streaming.streamPath>`` (https -> wss, http -> ws)."""
        base = self.webhook_url
        if base is None:
            return None
        parts = urlsplit(base)
        scheme = "ws" if parts.scheme == "http" else "wss"
        return f"{scheme}://{parts.netloc}{self._config.streaming.stream_path}"

    def stream_token(self, call_id: str) -> str:
        """The media-stream ``<Parameter name="token">``: the call id, MACed with our secret."""
        mac = hmac.new(self._secret, b"stream:" + call_id.encode(), hashlib.sha256).digest()
        return f"{call_id}.{base64.urlsafe_b64encode(mac[:18]).decode()}"

    def stream_call_id(self, token: str) -> str | None:
        """The call id a stream token was issued for, or None if we did not issue it."""
        call_id, _, _ = token.rpartition(".")
        if call_id and hmac.compare_digest(self.stream_token(call_id).encode(), token.encode()):
            return call_id
        return None

    def _require_base(self) -> str:
        base = self.webhook_url
        if base is None:
            raise ProviderError("Twilio needs a public webhook URL (publicUrl or a tunnel)")
        return base

    # -- Provider protocol: REST side -------------------------------------------------------

    async def run(
        self,
        directory: CallDirectory,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Nothing runs in the background for Twilio; webhooks arrive via the web layer."""
        task_status.started()
        await trio.sleep_forever()

    async def dial(self, record: CallRecord) -> str:
        request = create_call(
            self._account,
            to=record.to,
            from_=record.from_ or self._config.from_number or "",
            webhook_url=self._require_base(),
            call_id=record.call_id,
            ring_timeout_ms=self._config.ring_timeout_ms,
        )
        response = await self._rest.send(request)
        sid = call_sid_of(response)
        if sid is None:
            raise ProviderError("Twilio accepted the call but returned no call SID",
                                status=response.status)
        return sid

    async def hangup(self, record: CallRecord) -> None:
        if record.provider_call_id:
            await self._rest.send(hangup_call(self._account, record.provider_call_id))
        self._calls.pop(record.call_id, None)

    async def speak(self, record: CallRecord, text: str, *, listen: bool) -> None:
        """Replace the call's TwiML. The supervisor records ``CallSpeaking`` for these words."""
        sid = record.provider_call_id
        if not sid:
            raise ProviderError("the call has no Twilio call SID yet")
        base = self._require_base()
        token = _new_token()
        if self._streams(record):
            document = self._stream_doc(record, text)
        elif listen:
            document = twiml.turn(text, self._gather_url(base, record.call_id, token),
                                  voice=self._voice)
        else:
            hold = with_query(base, callId=record.call_id, type="hold", said=token)
            document = twiml.say_then_hold(text, hold, voice=self._voice)
        # The token is current *before* the update goes out: Twilio may post the new Gather's
        # result (or the said-redirect) before the REST response reaches us.
        live = self._live(record.call_id)
        old_turn, old_said = live.turn, live.said
        if listen:
            live.turn = token
        else:
            live.said = token
        try:
            await self._rest.send(update_twiml(self._account, sid, document))
        except BaseException:
            # the old document is still playing (unless another speak replaced it meanwhile)
            if live.turn == token:
                live.turn = old_turn
            if live.said == token:
                live.said = old_said
            raise

    async def fetch_state(self, record: CallRecord) -> RemoteCallState:
        if not record.provider_call_id:
            return RemoteCallState(RemoteStatus.UNKNOWN)
        request = fetch_call(self._account, record.provider_call_id)
        return parse_fetch(await self._rest.send(request))

    # -- Provider protocol: webhooks --------------------------------------------------------

    async def handle_webhook(
        self, request: WebhookRequest, directory: CallDirectory
    ) -> WebhookResponse:
        if request.method.upper() != "POST":
            return plain(405, "method not allowed")
        form = strict_form(request.body, request.headers.get("content-type", ""))
        check = self._check(request, form)
        if not check.ok:
            log.warning("Twilio webhook refused: %s (tried %s)", check.reason,
                        ", ".join(check.tried_urls) or "no URL")
            return plain(401, "missing signature" if check.reason == "missing signature"
                         else "invalid signature")
        key = self._replay_key(request)
        while (pending := self._pending.get(key)) is not None:
            await pending.wait()  # an identical request is being handled right now
        if (cached := self._replay.get(key)) is not None:
            self._replay.move_to_end(key)
            log.info("Twilio webhook repeated; answered from the replay cache")
            return cached
        done = self._pending[key] = trio.Event()
        try:
            response = await self._handle_verified(request, check, directory, form)
            if response.status == 200:
                self._replay[key] = response
                while len(self._replay) > self._replay_size:
                    self._replay.popitem(last=False)
            return response
        finally:
            del self._pending[key]
            done.set()

    def _check(self, request: WebhookRequest,
               form: list[tuple[str, str]] | None) -> SignatureCheck:
        policy = self._policy
        if policy is None or policy.public_url != (self._public_url or self._config.public_url):
            policy = self._policy = UrlPolicy.from_config(self._config, self._public_url)
        if self._config.skip_signature_verification:
            urls = reconstruct_for(policy, request).urls
            return SignatureCheck(True, "verification skipped", urls, urls[0] if urls else None)
        return verify_request(self._token, policy, request, form=form)

    @staticmethod
    def _replay_key(request: WebhookRequest) -> str:
        digest = hashlib.sha256()
        for part in (request.headers.get(SIGNATURE_HEADER, ""), request.path,
                     request.query_string):
            digest.update(part.encode("utf-8", "replace") + b"\0")
        digest.update(request.body)
        return digest.hexdigest()

    def _base_for(self, check: SignatureCheck) -> str | None:
        """Where our TwiML points Twilio back to: publicUrl, else the URL Twilio signed."""
        if self._public_url:
            return self.webhook_url
        if check.url:
            self._last_base = check.url.split("?", 1)[0]
        return self._last_base

    async def _handle_verified(
        self, request: WebhookRequest, check: SignatureCheck, directory: CallDirectory,
        form: list[tuple[str, str]] | None,
    ) -> WebhookResponse:
        try:
            hook = parse_webhook(request.body, request.query_string,
                                 request.headers.get("content-type", ""), form=form)
        except WebhookParseError as exc:
            log.warning("Twilio webhook unreadable: %s", exc)
            return plain(400, f"bad request: {exc}")
        base = self._base_for(check)
        if hook.kind is RequestKind.STATUS:
            return await self._on_status(hook, directory)
        if base is None:  # cannot happen once a URL verified; only with odd skip setups
            log.warning("Twilio webhook: no public URL to point TwiML at")
            return _xml(twiml.hangup())
        if hook.kind is RequestKind.GATHER:
            return await self._on_gather(hook, base, directory)
        if hook.kind is RequestKind.HOLD:
            return await self._on_hold(hook, base, directory)
        if hook.inbound_offer is not None:
            return await self._on_inbound(hook, base, directory)
        return await self._on_fetch(hook, base, directory)

    # -- one handler per kind of request ----------------------------------------------------

    def _find(self, hook: TwilioWebhook, directory: CallDirectory) -> CallRecord | None:
        record = directory.find(call_id=hook.call_id) if hook.call_id else None
        if record is None:
            record = directory.find(provider_call_id=hook.call_sid)
        if record is not None and record.provider_call_id not in (None, hook.call_sid):
            log.warning("Twilio webhook for call %s names CallSid %s; ignored",
                        record.call_id, hook.call_sid)
            return None
        return record

    async def _on_status(self, hook: TwilioWebhook, directory: CallDirectory) -> WebhookResponse:
        if hook.error:
            log.info("Twilio reports call %s %s: %s", hook.call_sid, hook.status, hook.error)
        for event in hook.events:
            record = await directory.deliver(event)
            if record is not None and record.terminal:
                self._calls.pop(record.call_id, None)
        return _xml(twiml.empty())

    async def _on_fetch(
        self, hook: TwilioWebhook, base: str, directory: CallDirectory
    ) -> WebhookResponse:
        record = self._find(hook, directory)
        if record is None or record.terminal:
            log.info("Twilio asked for TwiML of unknown or ended call %s", hook.call_sid)
            return _xml(twiml.hangup())
        for event in hook.events:
            record = await directory.deliver(event) or record
        if record.terminal:
            return _xml(twiml.hangup())
        mode = record.metadata.get("mode") or self._config.outbound.default_mode
        message = str(record.metadata.get("initialMessage") or "")
        if mode == "notify":
            live = self._live(record.call_id)
            if self._served(live, record, hook.call_sid):
                return _xml(twiml.hangup())
            live.initial_served = True
            document = twiml.notify(message, voice=self._voice,
                                    pause_s=self._config.outbound.notify_hangup_delay_sec)
            await self._said_initial(record, hook.call_sid, message, directory)
            return _xml(document)
        return await self._open_conversation(record, hook.call_sid, message, base, directory)

    async def _on_inbound(
        self, hook: TwilioWebhook, base: str, directory: CallDirectory
    ) -> WebhookResponse:
        assert hook.inbound_offer is not None
        outcome = await directory.offer_inbound(hook.inbound_offer)
        record = outcome.record
        if outcome.decision is InboundDecision.REJECT or record is None:
            log.info("inbound Twilio call %s from %s rejected", hook.call_sid, hook.from_)
            return _xml(twiml.reject())
        if record.terminal:
            return _xml(twiml.hangup())
        record = await directory.deliver(
            CallAnswered(id=f"twilio:{hook.call_sid}:answered", call_id=record.call_id,
                         provider_call_id=hook.call_sid)
        ) or record
        greeting = str(record.metadata.get("initialMessage") or self._config.inbound_greeting
                       or DEFAULT_GREETING)
        return await self._open_conversation(record, hook.call_sid, greeting, base, directory)

    async def _open_conversation(
        self, record: CallRecord, sid: str, message: str, base: str, directory: CallDirectory
    ) -> WebhookResponse:
        """Greeting + listen; a repeated fetch only listens again (no second greeting)."""
        live = self._live(record.call_id)
        served = self._served(live, record, sid)
        text = "" if served else message
        live.initial_served = True
        if self._streams(record):
            document = self._stream_doc(record, text)
        else:
            live.turn = live.turn or _new_token()
            document = twiml.turn(text, self._gather_url(base, record.call_id, live.turn),
                                  voice=self._voice)
        if not served:
            await self._said_initial(record, sid, message, directory)
        return _xml(document)

    async def _on_gather(
        self, hook: TwilioWebhook, base: str, directory: CallDirectory
    ) -> WebhookResponse:
        record = self._find(hook, directory)
        if record is None or record.terminal:
            return _xml(twiml.hangup())
        live = self._live(record.call_id)
        hold = twiml.hold(with_query(base, callId=record.call_id, type="hold"))
        if hook.turn is None or hook.turn != live.turn:
            log.info("stale Gather result for call %s ignored", record.call_id)
            return _xml(hold)
        if not hook.events:  # nothing heard: keep listening on the same turn
            return _xml(twiml.turn("", self._gather_url(base, record.call_id, live.turn)))
        for event in hook.events:
            await directory.deliver(event)
        return _xml(hold)

    async def _on_hold(
        self, hook: TwilioWebhook, base: str, directory: CallDirectory
    ) -> WebhookResponse:
        record = self._find(hook, directory)
        if record is None or record.terminal:
            return _xml(twiml.hangup())
        live = self._live(record.call_id)
        if hook.said is not None and hook.said == live.said:
            live.said = None
            await directory.deliver(
                CallSpoken(id=f"twilio:{hook.call_sid}:spoken:{hook.said}",
                           call_id=record.call_id, provider_call_id=hook.call_sid)
            )
        return _xml(twiml.hold(with_query(base, callId=record.call_id, type="hold")))

    # -- helpers ----------------------------------------------------------------------------

    def _live(self, call_id: str) -> _Live:
        live = self._calls.get(call_id)
        if live is None:
            live = self._calls[call_id] = _Live()
            while len(self._calls) > LIVE_CALLS_LIMIT:
                self._calls.popitem(last=False)
        else:
            self._calls.move_to_end(call_id)
        return live

    @staticmethod
    def _served(live: _Live, record: CallRecord, sid: str) -> bool:
        """The initial message went out (in this process, or per the journaled event ids)."""
        return live.initial_served or f"twilio:{sid}:say:initial" in record.processed_event_ids

    async def _said_initial(
        self, record: CallRecord, sid: str, message: str, directory: CallDirectory
    ) -> None:
        if message.strip():
            await directory.deliver(
                CallSpeaking(id=f"twilio:{sid}:say:initial", call_id=record.call_id,
                             provider_call_id=sid, text=message)
            )

    def _streams(self, record: CallRecord) -> bool:
        """Conversation calls use the media stream when streaming is enabled."""
        if not self._config.streaming.enabled:
            return False
        default = "conversation" if record.direction == "inbound" else None
        mode = record.metadata.get("mode") or default or self._config.outbound.default_mode
        return mode == "conversation"

    def _stream_doc(self, record: CallRecord, message: str) -> str:
        url = self.stream_url()
        if url is None:
            raise ProviderError("streaming needs a public URL (publicUrl or a tunnel)")
        return twiml.stream(url, self.stream_token(record.call_id), message=message,
                            voice=self._voice)

    @staticmethod
    def _gather_url(base: str, call_id: str, token: str) -> str:
        return with_query(base, callId=call_id, type="gather", turn=token)

