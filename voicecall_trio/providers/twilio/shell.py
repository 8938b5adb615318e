"""The Twilio carrier's async shell: REST through httpx, webhooks through the flow.

A webhook's route: ``signature`` verifies it (failing closed), the replay cache answers an
identical signed request seen before, ``webhooks`` parses it into a ``TwilioWebhook`` with its
events, the shell finds the call record and delivers those events, ``flow`` turns (webhook,
record) into a ``Reply`` (more events and the TwiML), the shell delivers the reply's events
and renders its TwiML. The only question the shell puts to the supervisor is the inbound
policy's (``offer_inbound``); what to answer is the flow's decision alone.

``dial``, ``hangup``, ``speak`` and ``fetch_state`` send the REST specs of ``rest`` through the
injected ``httpx.AsyncClient``; ``speak`` gets its TwiML and turn token from the flow.

Idempotency: event ids come from the webhook content (the model drops repeats), and an
identical signed request seen again (bounded replay cache keyed by signature + request) gets
the first answer back with no side effect.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections import OrderedDict

import httpx
import trio

from ...config import VoiceCallConfig
from ...errors import ProviderError, WebhookParseError
from ...log_budget import LogBudget
from ...media import twilio_stream
from ...model import CallRecord
from .. import (
    CallDirectory,
    RemoteCallState,
    RemoteStatus,
    WebhookRequest,
    WebhookResponse,
    plain,
    rejected,
)
from ..rest import RestClient
from . import twiml, urls
from .flow import Reply, TokenSource, TwilioFlow, new_token, streams
from .rest import (
    call_sid_of,
    create_call,
    fetch_call,
    format_error,
    hangup_call,
    parse_fetch,
    update_twiml,
)
from .signature import SIGNATURE_HEADER, SignatureCheck, verify_request, verify_upgrade
from .signed_url import UrlPolicy, reconstruct_for
from .webhooks import (
    RequestKind,
    TwilioWebhook,
    parse_webhook,
    strict_form,
)

log = logging.getLogger("voicecall.twilio")

REPLAY_CACHE_SIZE = 512


def _xml(document: str) -> WebhookResponse:
    return WebhookResponse(200, document.encode("utf-8"), content_type=twiml.CONTENT_TYPE)


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
        new_token: TokenSource = new_token,
    ) -> None:
        self._config = config
        # forged or unreadable webhooks: a flood must not flood the log (log_budget.py)
        self.refused = LogBudget(log, logging.WARNING)
        self.unreadable = LogBudget(log, logging.WARNING)
        self._account = config.twilio.account_sid or ""
        self._token = config.twilio.auth_token
        self._rest = RestClient(
            http,
            config.twilio.api_base_url,
            auth=(self._account, self._token or ""),
            describe_error=format_error,
            carrier="Twilio",
        )
        self._public_url = config.public_url
        self._policy: UrlPolicy | None = None  # rebuilt when the public URL changes
        self._last_base: str | None = None
        self._flow = TwilioFlow(config, secret=secret or secrets.token_bytes(32),
                                new_token=new_token)
        self._replay: OrderedDict[str, WebhookResponse] = OrderedDict()
        self._replay_size = max(1, replay_cache_size)
        self._pending: dict[str, trio.Event] = {}

    # -- URLs and tokens --------------------------------------------------------------------

    def set_public_url(self, url: str | None) -> None:
        """The tunnel found our public URL (or lost it)."""
        self._public_url = url

    def reconfigure(self, config: VoiceCallConfig) -> None:
        """A reloaded config (``reloader.apply_config``; only keys ``reload.LIVE`` allows have
        changed): new turns and dials read it."""
        self._config = config
        self._flow.reconfigure(config)

    @property
    def public_url(self) -> str | None:
        return self._public_url

    @property
    def webhook_url(self) -> str | None:
        """The public webhook URL: ``publicUrl`` (plus ``serve.path`` if it has no path)."""
        if self._public_url:
            return urls.webhook_base(self._public_url, self._config.serve.path)
        return self._last_base

    def stream_url(self) -> str | None:
        """``wss://<public host><streaming.streamPath>`` (https -> wss, http -> ws)."""
        base = self.webhook_url
        if base is None:
            return None
        return urls.stream_url(base, self._config.streaming.stream_path)

    def stream_token(self, call_id: str) -> str:
        """The media-stream ``<Parameter name="token">``: the call id, MACed with our secret."""
        return self._flow.stream_token(call_id)

    def stream_call_id(self, token: str) -> str | None:
        """The call id a stream token was issued for, or None if we did not issue it."""
        return self._flow.stream_call_id(token)

    # -- media streams (media.stream.StreamAuthenticator) ----------------------------------

    framing = twilio_stream.FRAMING  # Twilio Media Streams messages

    def verify_upgrade(self, request: WebhookRequest) -> str | None:
        """None if Twilio signed this media-stream upgrade (or verification is skipped), else
        why not, naming the URLs tried (never the token)."""
        if self._config.skip_signature_verification:
            return None
        check = verify_upgrade(self._token, self._url_policy(), request, self.stream_url())
        if check.ok:
            return None
        return f"{check.reason} (tried {', '.join(check.tried_urls) or 'no URL'})"

    def call_id_for_token(self, token: str) -> str | None:
        return self.stream_call_id(token)

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
        self._flow.forget(record.call_id)

    def streams_call(self, record: CallRecord) -> bool:
        """Whether this call is carried on a media stream (its voice runs in ``voice.py``)."""
        return streams(self._config, record)

    async def speak(self, record: CallRecord, text: str, *, listen: bool) -> None:
        """Replace the call's TwiML. The supervisor records ``CallSpeaking`` for these words."""
        sid = record.provider_call_id
        if not sid:
            raise ProviderError("the call has no Twilio call SID yet")
        turn = self._flow.speak(record, text, listen=listen, base=self._require_base())
        try:
            await self._rest.send(update_twiml(self._account, sid, turn.twiml))
        except BaseException:
            self._flow.speak_failed(turn)
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
            self.refused("Twilio webhook refused: %s (tried %s)", check.reason,
                     ", ".join(check.tried_urls) or "no URL")
            return rejected(check.rejection())
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
        policy = self._url_policy()
        if self._config.skip_signature_verification:
            tried = reconstruct_for(policy, request).urls
            return SignatureCheck(True, "verification skipped", tried, tried[0] if tried else None)
        return verify_request(self._token, policy, request, form=form)

    def _url_policy(self) -> UrlPolicy:
        policy = self._policy
        if policy is None or policy.public_url != (self._public_url or self._config.public_url):
            policy = self._policy = UrlPolicy.from_config(self._config, self._public_url)
        return policy

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
            self.unreadable("Twilio webhook unreadable: %s", exc)
            return rejected(exc)
        base = self._base_for(check)
        if hook.kind is RequestKind.STATUS:
            return await self._on_status(hook, directory)
        if base is None:  # cannot happen once a URL verified; only with odd skip setups
            log.warning("Twilio webhook: no public URL to point TwiML at")
            return _xml(twiml.hangup())
        if hook.kind is RequestKind.GATHER:
            reply = self._flow.gather(hook, self._find(hook, directory), base)
        elif hook.kind is RequestKind.HOLD:
            reply = self._flow.hold(hook, self._find(hook, directory), base)
        elif hook.inbound_offer is not None:
            outcome = await directory.offer_inbound(hook.inbound_offer)
            reply = self._flow.inbound(hook, outcome, base)
        else:  # the TwiML fetch of a call we know: its own events first
            record = self._find(hook, directory)
            if record is None or record.terminal:
                log.info("Twilio asked for TwiML of unknown or ended call %s", hook.call_sid)
                return _xml(twiml.hangup())
            for event in hook.events:
                record = await directory.deliver(event) or record
            reply = self._flow.fetch(hook, record, base)
        return await self._answer(reply, directory)

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
            self._flow.status(await directory.deliver(event))
        return _xml(twiml.empty())

    async def _answer(self, reply: Reply, directory: CallDirectory) -> WebhookResponse:
        """Deliver the flow's events in order, then render its TwiML."""
        if reply.note:
            log.info("%s", reply.note)
        for event in reply.events:
            await directory.deliver(event)
        return _xml(reply.twiml)
