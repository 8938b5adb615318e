"""One streamed call's voice: its media stream, its one STT session and its playback.

A ``VoiceSession`` runs in the call's nursery (``call.py`` starts it for a call the carrier
carries on a media stream) and joins three parts that know nothing of each other:

* the media stream (``media/route.py``): the route attaches each accepted stream here; a
  newer stream for the same call takes over and the older one is closed with 1000. The
  caller's audio goes to the STT untouched; echoed marks go to the player.
* the STT session (``stt/pump.py``), opened when the first stream attaches and kept for the
  call's life (a takeover keeps it): interim transcripts become ``call.speech`` with
  ``isFinal: false`` (published, not journaled), finals the transcript lines that
  ``continue`` and replies use; ``speech_started`` while the bot speaks (an utterance
  playing, or the gap before the next one of a run) is a barge-in.
* the player (``media/player.py``): utterances synthesised by the TTS client (``tts/``) are
  queued in order and paced out as 20 ms frames; an utterance enters the transcript when its
  first frame goes out and counts as spoken when its mark comes back.

Nothing here writes a record: every change is an event handed to the supervisor
(``Supervisor.apply_now``), which stays the only writer of call records.

The initial message (outbound) or greeting (inbound) is synthesised as soon as the session
starts, which is right after the dial request returned, while the call rings: its audio is
waiting in the player when the stream's ``start`` arrives.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from .errors import CallNotConnected, SpeechError, VoiceCallError
from .events import (
    CallActive,
    CallDtmf,
    CallError,
    CallEvent,
    CallInterrupted,
    CallSpeaking,
    CallSpeech,
    CallSpoken,
)
from .front_limits import Throttled
from .media.player import Player, Utterance
from .stt.realtime import Final, Interim, SpeechStarted, SpeechStopped, SttEvent, SttFailure

if TYPE_CHECKING:
    import httpx

    from .call import LiveCall
    from .config import VoiceCallConfig
    from .media.stream import MediaStream
    from .providers import Provider
    from .stt.pump import RealtimeTranscriber
    from .supervisor import Supervisor
    from .tts import SpeechClient

log = logging.getLogger("voicecall.voice")

CLOSE_TIMEOUT_S = 2.0  # closing a stream at the end of a call gives up after this long
STT_ERRORS_LOGGED = 3  # per session; later ones are counted, not logged

TranscriberFactory = Callable[[Callable[[SttEvent], None], Callable[[], None]],
                              "RealtimeTranscriber"]


class VoiceSession:
    """The voice of one call while it streams; see the module docstring."""

    def __init__(self, sup: Supervisor, call: LiveCall, *, speech: SpeechClient | None,
                 transcriber: TranscriberFactory, barge_in: bool) -> None:
        self._sup = sup
        self._call = call
        self._speech = speech
        self._new_transcriber = transcriber
        self._barge_in = barge_in
        self.player = Player(on_started=self._started, on_spoken=self._spoken)
        self.stream: MediaStream | None = None
        self.stt: RealtimeTranscriber | None = None
        self.streams_attached = 0
        self._nursery: trio.Nursery | None = None
        self._events = 0  # numbers the STT's events, so each has its own event id
        self._stt_errors = 0
        # ``say`` calls waiting for their TTS's first audio: that wait runs in the caller's
        # task (``nursery.start``), out of reach of the call's nursery, so the end cancels it
        self._waiting: set[trio.CancelScope] = set()
        # a flood of ``speak`` past the queue, or a TTS down for every sentence of a reply:
        # one line a minute per call (each failure is still a ``call.error`` and an answer)
        self._speech_log = Throttled(f"call {call.record.call_id}: speech failed", logger=log)
        self._over = False

    @property
    def call_id(self) -> str:
        return self._call.record.call_id

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Until the call's nursery is cancelled (the call ended)."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await nursery.start(self.player.run)
                self._call.voice = self
                task_status.started()
                nursery.start_soon(self._greet)
                try:
                    await trio.sleep_forever()
                finally:  # the call ended: (the nursery would wait for pending starts)
                    self._over = True
                    for scope in self._waiting:
                        scope.cancel()
        finally:
            self._over = True
            self._call.voice = None
            stream, self.stream = self.stream, None
            if stream is not None:
                with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT_S):
                    await stream.close(1000, "call ended")

    # -- speech ---------------------------------------------------------------------------
    @property
    def silent(self) -> bool:
        """The bot has said everything queued (each heard, cut or counted as spoken)."""
        return self.player.idle

    async def say(self, text: str) -> None:
        """Queue ``text``; returns once the TTS answered (``SpeechError`` if it did not).

        The utterance takes its place in the queue at once, so utterances play in the order
        they were asked for even when a later one's TTS answers first."""
        nursery = self._require_nursery()
        if self._speech is None:
            raise self._speech_failed(SpeechError("no speech (TTS) key is configured"))
        # unbounded: the TTS's own cap (tts.stream) bounds an utterance, and a greeting
        # synthesised while the phone rings must not stall its HTTP read meanwhile
        send, receive = trio.open_memory_channel[bytes](math.inf)
        utterance = Utterance(id=f"bot:{self._sup.ids().replace('-', '')}", text=text,
                              audio=receive)
        if self._over:
            raise CallNotConnected("Call has ended")
        with trio.CancelScope() as waiting:
            self._waiting.add(waiting)
            try:
                self.player.enqueue(utterance)
                await nursery.start(self._synthesize, text, send)
            except SpeechError as exc:
                send.close()
                raise self._speech_failed(exc) from None
            finally:
                self._waiting.discard(waiting)
        if waiting.cancelled_caught:
            send.close()
            raise CallNotConnected("Call ended before its speech started")
        self._milestone("ttsFirstByte")

    async def _synthesize(self, text: str, send: trio.MemorySendChannel[bytes], *,
                          task_status: trio.TaskStatus[None]) -> None:
        """The TTS request for one utterance: a failure before its first audio is the
        caller's (``say`` raises); after it, the utterance just ends early."""
        assert self._speech is not None
        status = _Watched(task_status)
        async with send:
            try:
                await self._speech.synthesize(text, send, task_status=status)
            except Exception as exc:
                if not status.done:
                    if isinstance(exc, SpeechError):
                        raise
                    raise SpeechError(f"speech failed: {type(exc).__name__}") from None
                log.warning("call %s: speech stopped early (%s)", self.call_id,
                            type(exc).__name__)
            if not status.done:  # the client returned without audio
                task_status.started()

    def _speech_failed(self, exc: SpeechError) -> SpeechError:
        """A (rate-limited) log line and a retryable ``call.error``; the call goes on."""
        self._speech_log(trio.current_time(), str(exc))
        self._emit(CallError(id=f"tts:{self._sup.ids()}", error=f"speech failed: {exc}",
                             retryable=True))
        return exc

    async def _greet(self) -> None:
        """Speak the initial message (outbound) or greeting (inbound) once per call."""
        record = self._call.record
        message = str(record.metadata.get("initialMessage") or "")
        if not message.strip() or record.metadata.get("initialSpoken"):
            return
        self._sup.note(self._call, initialSpoken=True)
        try:
            await self.say(message)
        except VoiceCallError as exc:
            log.warning("call %s: initial message not spoken: %s", self.call_id, exc)

    def _started(self, utterance: Utterance) -> None:
        self._emit(CallSpeaking(id=utterance.id, text=utterance.text))
        self._milestone("firstAudioOut")

    def _spoken(self, utterance: Utterance) -> None:
        self._emit(CallSpoken(id=f"{utterance.id}:spoken"))
        self._milestone("heard")

    def _milestone(self, stage: str) -> None:
        """A stage of the current turn's latency waterfall (the first mark of each counts)."""
        waterfall = self._call.waterfall
        if waterfall is not None:
            waterfall.mark(stage, at=trio.current_time())

    # -- streams (StreamSessions / StreamHandler) ----------------------------------------
    def attach(self, stream: MediaStream) -> VoiceSession:
        """A stream for this call was accepted: it carries the audio from now on."""
        nursery = self._require_nursery()
        old, self.stream = self.stream, stream
        self.streams_attached += 1
        self.player.attach(stream)
        if old is not None and old is not stream:
            log.info("call %s: a newer media stream takes over", self.call_id)
            nursery.start_soon(old.close, 1000, "replaced by a newer stream")
        if self.stt is None:
            self.stt = self._new_transcriber(self._on_stt, self._on_stt_lost)
            nursery.start_soon(self.stt.run)
        self._emit(CallActive(id=f"stream:{self.call_id}:{self.streams_attached}"))
        return self

    def media(self, stream: MediaStream, audio: bytes) -> None:
        if stream is self.stream and self.stt is not None:
            self.stt.send_audio(audio)

    def mark(self, stream: MediaStream, name: str) -> None:
        self.player.mark_echoed(name)

    def dtmf(self, stream: MediaStream, digits: str) -> None:
        self._events += 1
        self._emit(CallDtmf(id=f"stream:{self.call_id}:dtmf:{self._events}", digits=digits))

    def stopped(self, stream: MediaStream) -> None:
        if stream is self.stream:
            self.stream = None
            self.player.attach(None)

    # -- transcription --------------------------------------------------------------------
    def _on_stt(self, event: SttEvent) -> None:
        match event:
            case SpeechStarted():
                if self._barge_in and self.player.speaking:
                    self.barge_in()
            case SpeechStopped():
                self._milestone("callerStopped")
            case Interim(text=text):
                if text:
                    self._events += 1
                    self._emit(CallSpeech(id=f"stt:{self.call_id}:{self._events}", text=text,
                                          is_final=False))
            case Final(text=text):
                if text.strip():
                    self._events += 1
                    self._emit(CallSpeech(id=f"stt:{self.call_id}:{self._events}", text=text))
            case SttFailure(message=message):
                self._stt_errors += 1
                if self._stt_errors <= STT_ERRORS_LOGGED:
                    log.warning("call %s: transcription error: %s", self.call_id, message)

    def barge_in(self) -> None:
        """The caller talks over the bot: silence it and note how much was heard. Between
        two sentences (nothing audible, the next still coming) nothing was cut, but the next
        sentences and the reply making them are dropped all the same."""
        speaking = self.player.speaking
        cut = self.player.clear()
        if cut is None:
            if speaking:
                log.info("call %s: barge-in between two utterances", self.call_id)
                self._sup.interrupt_reply(self._call)
            return
        utterance, heard_ms = cut
        log.info("call %s: barge-in after %d ms of speech", self.call_id, heard_ms)
        self._emit(CallInterrupted(id=f"{utterance.id}:cut", utterance=utterance.id,
                                   heard_ms=heard_ms))
        self._sup.interrupt_reply(self._call)

    def _on_stt_lost(self) -> None:
        log.warning("call %s: transcription lost: the STT could not be reached again",
                    self.call_id)
        self._sup.note(self._call, transcriptionLost=True)
        self._emit(CallError(id=f"stt:{self.call_id}:lost", retryable=True,
                             error="transcription lost: the STT could not be reached"))

    # -- helpers --------------------------------------------------------------------------
    def _emit(self, event: CallEvent) -> None:
        """Hand an event to the supervisor. Called from the player's and the STT's
        callbacks, which must not raise: a record that cannot be stored is logged."""
        if self._call.record.terminal:
            return
        try:
            self._sup.apply_now(self._call, event)
        except Exception:
            log.exception("call %s: could not record %s", self.call_id, type(event).__name__)

    def _require_nursery(self) -> trio.Nursery:
        if self._nursery is None:
            raise VoiceCallError("the call's voice session is not running")
        return self._nursery


class _Watched:
    """A task status that remembers whether ``started`` was called."""

    def __init__(self, inner: trio.TaskStatus[None]) -> None:
        self.inner = inner
        self.done = False

    def started(self, value: None = None) -> None:
        self.done = True
        self.inner.started()


def voice_factory(config: VoiceCallConfig, provider: Provider, http: httpx.AsyncClient
                  ) -> Callable[[Supervisor, LiveCall], VoiceSession | None]:
    """What ``call.py`` asks for each call: a voice session if the carrier streams it."""
    from .stt.pump import RealtimeTranscriber
    from .tts import make_speech

    streams_call = getattr(provider, "streams_call", None)
    key = config.openai_key() or ""
    s = config.streaming  # the STT settings need a restart; tts.* follows a reload

    def transcriber(on_event: Callable[[SttEvent], None],
                    on_lost: Callable[[], None]) -> RealtimeTranscriber:
        return RealtimeTranscriber(url=s.realtime_url, api_key=key, model=s.stt_model,
                                   vad_threshold=s.vad_threshold,
                                   silence_duration_ms=s.silence_duration_ms,
                                   on_event=on_event, on_lost=on_lost)

    def make(sup: Supervisor, call: LiveCall) -> VoiceSession | None:
        if streams_call is None or not streams_call(call.record):
            return None
        return VoiceSession(sup, call, speech=make_speech(sup.config, http),
                            transcriber=transcriber, barge_in=s.barge_in)

    return make


__all__ = ["VoiceSession", "voice_factory"]
