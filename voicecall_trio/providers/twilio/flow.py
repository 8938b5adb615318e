"""The Twilio call flow: which TwiML answers which webhook, and which turn token is current.

Sans-IO, in the manner of h11's connection object: the shell hands it a parsed webhook and the
call record it found (after delivering the webhook's own events), and gets back a ``Reply``:
the events to deliver and the TwiML to answer. The flow never awaits, never sends and never
asks the supervisor anything; the tokens it hands out come from an injected ``new_token``.

How a call goes:

* outbound: Twilio fetches the answer URL (``urls.answer_url``) and we answer with the initial
  message: notify = Say, Pause (``notifyHangupDelaySec``), Hangup; conversation = Say + Gather,
  or, while streaming runs, Connect/Stream alone (the call's voice session speaks the greeting
  over the stream, so it can be interrupted). A second, different fetch of a notify
  call gets only ``<Hangup/>`` (the message is spoken once); of a conversation call, a Gather
  without the greeting.
* inbound: the shell offers the call to the inbound policy and hands the outcome here;
  rejected calls get ``<Reject/>`` (hung up exactly once, by Twilio), accepted ones
  ``CallAnswered`` and the greeting + Gather.
* turns: each Gather carries a fresh turn token. A result with the current token is
  delivered (``CallSpeech``) and the call is held (Pause + Redirect loop) until ``speak``
  replaces the TwiML by a REST update; a result with any other token is acknowledged with the
  hold TwiML and delivers nothing.
* the bot's words: when our webhook answer speaks (initial message, inbound greeting) the
  reply carries ``CallSpeaking(text)`` with a deterministic id (``twilio:<CallSid>:say:initial``),
  so the transcript has it once. For ``speak`` the supervisor records ``CallSpeaking`` itself.
  A Say not followed by a Gather redirects straight back with ``said=<token>``, and that
  request delivers ``CallSpoken`` (Twilio has finished saying it).

State: per call, the current Gather token, the Say token awaited and whether the initial
message went out; only this process's memory, bounded (``LIVE_CALLS_LIMIT``, least recently
used dropped first). After a daemon restart a Gather result from before it is stale, and
"initial message served" is also read from the record's journaled event ids.

Media-stream tokens (``<Parameter name="token">``) are the call id MACed with a per-process
secret, so the stream route can tell which call a stream belongs to without any state.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from ...config import VoiceCallConfig
from ...events import AnyEvent, CallAnswered, CallSpeaking, CallSpoken
from ...model import CallRecord
from .. import InboundDecision, InboundOutcome
from . import twiml, urls
from .webhooks import TwilioWebhook

DEFAULT_GREETING = "Hello! How can I help you today?"  # as the supervisor's
LIVE_CALLS_LIMIT = 1024

TokenSource = Callable[[], str]


def new_token() -> str:
    """A turn or Say token: 12 URL-safe characters, unguessable."""
    return secrets.token_urlsafe(9)


@dataclass(frozen=True, slots=True)
class Reply:
    """What to do about one webhook: deliver ``events`` in order, then answer ``twiml``."""

    twiml: str
    events: tuple[AnyEvent, ...] = ()
    note: str | None = None  # worth a log line (the shell writes it)


@dataclass(frozen=True, slots=True)
class Turn:
    """A ``speak`` about to go out by REST update; its token is already current."""

    call_id: str
    twiml: str
    token: str
    listen: bool
    old_turn: str | None
    old_said: str | None


@dataclass(slots=True)
class _Live:
    """What we told Twilio about one call."""

    turn: str | None = None  # token of the Gather whose result we want
    said: str | None = None  # token of the Say whose end we wait for
    initial_served: bool = False


class TwilioFlow:
    def __init__(
        self,
        config: VoiceCallConfig,
        *,
        secret: bytes,
        new_token: TokenSource = new_token,
        live_calls_limit: int = LIVE_CALLS_LIMIT,
    ) -> None:
        self._config = config
        self._voice = twiml.twilio_voice(config.tts.voice)
        self._secret = secret
        self._new_token = new_token
        self._limit = max(1, live_calls_limit)
        self._calls: OrderedDict[str, _Live] = OrderedDict()

    def reconfigure(self, config: VoiceCallConfig) -> None:
        """A reloaded config (``reloader.apply_config``): the voice and defaults of the turns
        built from now on."""
        self._config = config
        self._voice = twiml.twilio_voice(config.tts.voice)

    # -- media-stream tokens ----------------------------------------------------------------

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

    # -- webhooks: (parsed webhook, record) -> Reply ------------------------------------------

    def status(self, record: CallRecord | None) -> None:
        """A status event was delivered; ``record`` is the call after it."""
        if record is not None and record.terminal:
            self.forget(record.call_id)

    def fetch(self, hook: TwilioWebhook, record: CallRecord, base: str) -> Reply:
        """Twilio wants the TwiML of a known call (its webhook's events already delivered)."""
        if record.terminal:
            return Reply(twiml.hangup())
        mode = record.metadata.get("mode") or self._config.outbound.default_mode
        message = str(record.metadata.get("initialMessage") or "")
        if mode == "notify":
            live = self._live(record.call_id)
            if self._served(live, record, hook.call_sid):
                return Reply(twiml.hangup())
            live.initial_served = True
            document = twiml.notify(message, voice=self._voice,
                                    pause_s=self._config.outbound.notify_hangup_delay_sec)
            return Reply(document, self._said_initial(record, hook.call_sid, message))
        return self._open_conversation(record, hook.call_sid, message, base)

    def inbound(self, hook: TwilioWebhook, outcome: InboundOutcome, base: str) -> Reply:
        """The inbound policy decided about a new call (``outcome``)."""
        record = outcome.record
        if outcome.decision is InboundDecision.REJECT or record is None:
            return Reply(twiml.reject(), note=f"inbound Twilio call {hook.call_sid} from "
                                             f"{hook.from_} rejected")
        if record.terminal:
            return Reply(twiml.hangup())
        answered = CallAnswered(id=f"twilio:{hook.call_sid}:answered", call_id=record.call_id,
                                provider_call_id=hook.call_sid)
        greeting = str(record.metadata.get("initialMessage") or self._config.inbound_greeting
                       or DEFAULT_GREETING)
        reply = self._open_conversation(record, hook.call_sid, greeting, base)
        return Reply(reply.twiml, (answered, *reply.events))

    def gather(self, hook: TwilioWebhook, record: CallRecord | None, base: str) -> Reply:
        """The result of one of our Gathers: delivered only for the current turn."""
        if record is None or record.terminal:
            return Reply(twiml.hangup())
        live = self._live(record.call_id)
        hold = twiml.hold(urls.hold_url(base, record.call_id))
        if hook.turn is None or hook.turn != live.turn:
            return Reply(hold, note=f"stale Gather result for call {record.call_id} ignored")
        if not hook.events:  # nothing heard: keep listening on the same turn
            return Reply(twiml.turn("", urls.gather_url(base, record.call_id, live.turn)))
        return Reply(hold, hook.events)

    def hold(self, hook: TwilioWebhook, record: CallRecord | None, base: str) -> Reply:
        """Our hold loop came back; after a Say, it says the words were spoken."""
        if record is None or record.terminal:
            return Reply(twiml.hangup())
        live = self._live(record.call_id)
        events: tuple[AnyEvent, ...] = ()
        if hook.said is not None and hook.said == live.said:
            live.said = None
            events = (CallSpoken(id=f"twilio:{hook.call_sid}:spoken:{hook.said}",
                                 call_id=record.call_id, provider_call_id=hook.call_sid),)
        return Reply(twiml.hold(urls.hold_url(base, record.call_id)), events)

    # -- the bot's next turn, sent by REST update ---------------------------------------------

    def speak(self, record: CallRecord, text: str, *, listen: bool, base: str) -> Turn:
        """The TwiML that says ``text`` (and listens, with ``listen``).

        Its token is current *before* the update goes out: Twilio may post the new Gather's
        result (or the said-redirect) before the REST response reaches the shell. If the
        update fails, ``speak_failed`` puts the old tokens back.
        """
        token = self._new_token()
        if self._streams(record):
            document = self._stream_doc(record, text, base)
        elif listen:
            document = twiml.turn(text, urls.gather_url(base, record.call_id, token),
                                  voice=self._voice)
        else:
            document = twiml.say_then_hold(text, urls.hold_url(base, record.call_id, said=token),
                                           voice=self._voice)
        live = self._live(record.call_id)
        turn = Turn(record.call_id, document, token, listen, live.turn, live.said)
        if listen:
            live.turn = token
        else:
            live.said = token
        return turn

    def speak_failed(self, turn: Turn) -> None:
        """The update did not go out: the old document is still playing (unless another
        ``speak`` replaced it meanwhile)."""
        live = self._calls.get(turn.call_id)
        if live is None:
            return
        if live.turn == turn.token:
            live.turn = turn.old_turn
        if live.said == turn.token:
            live.said = turn.old_said

    def forget(self, call_id: str) -> None:
        """The call is over (hung up, or a terminal status arrived)."""
        self._calls.pop(call_id, None)

    # -- helpers ------------------------------------------------------------------------------

    def _open_conversation(
        self, record: CallRecord, sid: str, message: str, base: str
    ) -> Reply:
        """Greeting + listen; a repeated fetch only listens again (no second greeting)."""
        live = self._live(record.call_id)
        served = self._served(live, record, sid)
        text = "" if served else message
        live.initial_served = True
        if self._streams(record):
            # the greeting goes over the stream (the call's voice session speaks it), so the
            # callee can interrupt it: nothing is said in TwiML
            return Reply(self._stream_doc(record, "", base))
        live.turn = live.turn or self._new_token()
        document = twiml.turn(text, urls.gather_url(base, record.call_id, live.turn),
                              voice=self._voice)
        events = () if served else self._said_initial(record, sid, message)
        return Reply(document, events)

    def _live(self, call_id: str) -> _Live:
        live = self._calls.get(call_id)
        if live is None:
            live = self._calls[call_id] = _Live()
            while len(self._calls) > self._limit:
                self._calls.popitem(last=False)
        else:
            self._calls.move_to_end(call_id)
        return live

    @staticmethod
    def _served(live: _Live, record: CallRecord, sid: str) -> bool:
        """The initial message went out (in this process, or per the journaled event ids)."""
        return live.initial_served or f"twilio:{sid}:say:initial" in record.processed_event_ids

    @staticmethod
    def _said_initial(record: CallRecord, sid: str, message: str) -> tuple[AnyEvent, ...]:
        if not message.strip():
            return ()
        return (CallSpeaking(id=f"twilio:{sid}:say:initial", call_id=record.call_id,
                             provider_call_id=sid, text=message),)

    def _streams(self, record: CallRecord) -> bool:
        """Conversation calls use the media stream when streaming runs (enabled, with a key)."""
        return streams(self._config, record)

    def _stream_doc(self, record: CallRecord, message: str, base: str) -> str:
        url = urls.stream_url(base, self._config.streaming.stream_path)
        return twiml.stream(url, self.stream_token(record.call_id), message=message,
                            voice=self._voice)


def streams(config: VoiceCallConfig, record: CallRecord) -> bool:
    """Whether a Twilio call is carried on a media stream: every call that converses (an
    outbound ``conversation`` call, any accepted inbound call) while streaming runs."""
    if not config.streaming_active():
        return False
    default = "conversation" if record.direction == "inbound" else None
    mode = record.metadata.get("mode") or default or config.outbound.default_mode
    return mode == "conversation"
