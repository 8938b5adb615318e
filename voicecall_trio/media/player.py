"""Plays a call's utterances over its media stream: paced frames, a mark each, barge-in.

One ``Player`` per streamed call runs in the call's nursery. Utterances play in the order they
were queued; each one's audio arrives on a memory channel (8 kHz mu-law, any chunking, closed
at its end) while it is still being synthesised, so the first frame leaves as soon as the first
bytes do. Frames are 160 bytes, paced by ``pacing.Pacer`` on the trio clock; a ``mark`` named
after the utterance follows its last frame, and the carrier's echo of that mark is the moment
it counts as spoken (``on_spoken``). If no echo comes within the utterance's play time plus
``mark_grace_s`` it counts as spoken anyway, with a log line, so a call never waits forever.

The stream (the *sink*) may change under a playing utterance: ``attach(new)`` when a second
stream takes over, ``attach(None)`` when it is gone. Without one the player waits, and audio
keeps buffering in the channel. A sink whose send raises, or does not return within
``SEND_TIMEOUT_S`` (a peer that stopped reading), is treated as gone until the next ``attach``;
the player never dies of it, nor hangs on it. A sink that says ``send_bounded = True`` (the
media route's streams: each send returns within their own timeout, and a dead one takes sends
as no-ops) gets no timer per frame: a ``fail_after`` costs about 10 us, as much as the write.

``clear()`` (barge-in) is synchronous, for the STT's event handler: it says how much of the
playing utterance was heard, closes the channels of it and of everything queued behind it
(their producers see the channel closed and stop), forgets their marks, and wakes the player
task, which sends the carrier's ``clear`` at once (not after a frame's sleep).

Never here: decisions about the call (what to say, when to hang up) or the transcript.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol

import trio

from ..errors import SpeechError
from .framer import Framer
from .pacing import FRAME_S, LEAD_S, Pacer, heard_ms

log = logging.getLogger("voicecall.media.player")

MAX_QUEUED: Final = 64  # utterances waiting behind the playing one; more is a runaway producer
SEND_TIMEOUT_S: Final = 5.0  # a stream that takes longer to accept one message is treated as gone


class AudioSink(Protocol):
    """What the player needs of a media stream (``media.stream.MediaStream`` has it all)."""

    async def send_audio(self, frame: bytes) -> None: ...
    async def send_mark(self, name: str) -> None: ...
    async def send_clear(self) -> None: ...


@dataclass
class Utterance:
    """One thing to say: its transcript line's id, its text, and its audio as it comes."""

    id: str  # the bot transcript line's event id ("bot:<32 hex>"); also the mark's name
    text: str
    audio: trio.MemoryReceiveChannel[bytes]  # 8 kHz mu-law chunks of any size; closed at the end


@dataclass(eq=False)
class _Out:
    """An utterance with frames out and not yet heard (its mark not echoed)."""

    utterance: Utterance
    frames: int = 0
    end_at: float = 0.0  # when its last frame sent so far stops playing
    deadline: float | None = None  # set once its mark is due: spoken by then, echo or not

    def audible(self, now: float) -> bool:
        return self.deadline is None or self.end_at > now


class Player:
    """See the module docstring. ``run`` in the call's nursery; the rest is synchronous."""

    def __init__(self, *, on_started: Callable[[Utterance], None],
                 on_spoken: Callable[[Utterance], None],
                 lead_s: float = LEAD_S, mark_grace_s: float = 2.0) -> None:
        self._on_started = on_started
        self._on_spoken = on_spoken
        self._mark_grace_s = mark_grace_s
        self._pacer = Pacer(lead_s=lead_s)
        self._queue: deque[Utterance] = deque()
        self._current: Utterance | None = None  # the one whose channel the player reads
        self._out: list[_Out] = []  # in play order; a few at most (lead_s of overlap)
        self._sink: AudioSink | None = None
        self._epoch = 0  # bumped by clear(): whatever was playing before is dropped
        self._clear_due = False
        self._sender_wake = trio.Event()
        self._watch_wake = trio.Event()
        self._echo_missing_logged = False
        self._run_started = False  # a frame went out since the player was last idle
        self._failed_sink: AudioSink | None = None  # the last sink we logged a failure for

    # -- the synchronous side -------------------------------------------------------------

    @property
    def playing(self) -> bool:
        """An utterance has frames out that are not yet heard."""
        now = trio.current_time()
        return any(out.audible(now) for out in self._out)

    @property
    def idle(self) -> bool:
        """Nothing playing, queued or waiting for its mark's echo: the bot is silent."""
        return self._current is None and not self._queue and not self._out

    @property
    def speaking(self) -> bool:
        """``playing``, or between two utterances of one run: the next is waiting for its
        audio after one that played. (Not before the run's first frame: a greeting still
        being synthesised has not been heard, so talking over it is no barge-in.)"""
        return self.playing or (self._run_started
                                and (self._current is not None or bool(self._queue)))

    def attach(self, sink: AudioSink | None) -> None:
        """A new stream (takeover) or None (gone). The new one holds no audio: a new run."""
        if sink is self._sink:
            return
        self._sink = sink
        self._pacer.reset()
        self._poke()

    def enqueue(self, utterance: Utterance) -> None:
        """Play ``utterance`` after those already queued. Raises ``SpeechError`` (and closes
        its channel) when ``MAX_QUEUED`` are already waiting."""
        if len(self._queue) >= MAX_QUEUED:
            utterance.audio.close()
            raise SpeechError(f"speech queue full ({MAX_QUEUED} utterances waiting)")
        self._queue.append(utterance)
        self._poke()

    def clear(self) -> tuple[Utterance, int] | None:
        """Barge-in: (the playing utterance, ms of it heard), or None if nothing is playing;
        in the overlap of two, the one started last (its line is the transcript's latest).
        Drops it and every queued one; their marks no longer count. In a gap between two
        utterances (``speaking`` but not ``playing``) the waiting ones are dropped all the
        same, and None is returned: nothing was cut, and there is nothing to ``clear``."""
        now = trio.current_time()
        audible = [out for out in self._out if out.audible(now)]
        if not audible:
            if self.speaking:  # in a gap between two utterances: the next must not start
                self._drop_pending()
                self._poke()
            return None
        # the one started last: its line is the transcript's latest (with the lead, the next
        # utterance's first frames leave while the last ones of the one before still play)
        cut = audible[-1]
        result = (cut.utterance, heard_ms(cut.frames, cut.end_at - now))
        # utterances whose audio has all played stay: their echo is on its way
        self._out = [out for out in self._out if not out.audible(now)]
        self._drop_pending()
        self._pacer.reset()
        self._clear_due = True
        self._poke()
        return result

    def _drop_pending(self) -> None:
        """Close the channels of the utterance being read and of every queued one."""
        if self._current is not None:
            self._current.audio.close()
            self._current = None  # (its task lets go of it at its next step)
        for queued in self._queue:
            queued.audio.close()
        self._queue.clear()
        self._epoch += 1
        self._run_started = False

    def mark_echoed(self, name: str) -> None:
        """The carrier played up to our mark ``name``: that utterance is spoken. Echoes of
        cleared utterances, of marks not sent yet, and unknown names are ignored."""
        for i, out in enumerate(self._out):
            if out.utterance.id == name and out.deadline is not None:
                del self._out[i]
                self._poke()
                self._on_spoken(out.utterance)
                return

    # -- the player task ------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Play until cancelled (the call's nursery ends)."""
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch_marks)
                task_status.started()
                await self._send_loop()
        finally:  # producers still writing see their channel closed and stop
            for utterance in self._queue:
                utterance.audio.close()
            self._queue.clear()

    def _poke(self) -> None:
        self._sender_wake.set()
        self._watch_wake.set()

    async def _sender_wait(self, deadline: float = math.inf) -> None:
        """Until ``deadline`` or a poke; the frame-pacing sleep, so nothing new per frame."""
        with trio.move_on_at(deadline):
            await self._sender_wake.wait()
        if self._sender_wake.is_set():
            self._sender_wake = trio.Event()

    async def _send_loop(self) -> None:
        while True:
            if self._clear_due:
                await self._send_clear()
            elif self._queue:
                utterance = self._queue.popleft()
                self._current = utterance
                try:
                    await self._play(utterance, self._epoch)
                finally:  # however it ended, its producer may stop now
                    utterance.audio.close()
                    self._current = None
            else:
                self._run_started = False  # idle: the next utterance starts a new run
                await self._sender_wait()

    async def _play(self, utterance: Utterance, epoch: int) -> None:
        framer = Framer()
        out = _Out(utterance)
        while True:
            try:
                chunk = await utterance.audio.receive()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                break
            for frame in framer.push(chunk):
                if not await self._send_frame(out, frame, epoch):
                    return
        last = framer.flush()
        if last is not None and not await self._send_frame(out, last, epoch):
            return
        if self._epoch != epoch:
            return
        if out.frames == 0:  # no audio at all: nothing to wait for (and never "started")
            self._on_spoken(utterance)
            return
        out.deadline = out.end_at + self._mark_grace_s
        self._poke()
        await self._send_mark(out, epoch)

    async def _send_frame(self, out: _Out, frame: bytes, epoch: int) -> bool:
        """Send one frame when it is due; False if a clear dropped the utterance first."""
        while self._epoch == epoch:
            sink = self._sink
            if sink is None:
                await self._sender_wait()
                continue
            at = self._pacer.send_at()
            if at is not None and at > trio.current_time():
                await self._sender_wait(at)
                continue  # woken early: check clear and sink again
            if out.frames == 0:  # an utterance's first frame: let its producer run first
                await trio.lowlevel.checkpoint()  # (it notes the TTS's first byte)
                if self._epoch != epoch or sink is not self._sink:
                    continue
            try:
                if getattr(sink, "send_bounded", False):  # (no timer per frame: see below)
                    await sink.send_audio(frame)
                else:
                    with trio.fail_after(SEND_TIMEOUT_S):
                        await sink.send_audio(frame)
            except Exception as exc:  # the socket went away under us: wait for the next one
                self._sink_failed(sink, exc)
                continue
            if self._epoch != epoch or sink is not self._sink:
                # cleared, or another stream took over while this frame was being written:
                # dropped, or sent again on the new stream
                continue
            self._pacer.sent(trio.current_time())
            self._run_started = True
            out.frames += 1
            out.end_at = self._pacer.end or 0.0
            if out.frames == 1:
                self._out.append(out)
                self._on_started(out.utterance)
            return True
        return False

    async def _send_mark(self, out: _Out, epoch: int) -> None:
        while self._epoch == epoch and out in self._out:
            sink = self._sink
            if sink is None:
                await self._sender_wait()
                continue
            try:
                with trio.fail_after(SEND_TIMEOUT_S):
                    await sink.send_mark(out.utterance.id)
                return
            except Exception as exc:
                self._sink_failed(sink, exc)

    async def _send_clear(self) -> None:
        self._clear_due = False
        sink = self._sink
        if sink is None:
            return  # a new stream holds none of the old audio
        try:
            with trio.fail_after(SEND_TIMEOUT_S):
                await sink.send_clear()
        except Exception as exc:
            self._sink_failed(sink, exc)

    def _sink_failed(self, sink: AudioSink, exc: Exception) -> None:
        if sink is not self._failed_sink:
            self._failed_sink = sink
            log.warning("media stream send failed (%s); waiting for a new stream",
                        type(exc).__name__)
        if sink is self._sink:
            self._sink = None
            self._pacer.reset()

    async def _watch_marks(self) -> None:
        """Counts as spoken the utterances whose mark echo is overdue."""
        while True:
            now = trio.current_time()
            for out in [o for o in self._out if o.deadline is not None and o.deadline <= now]:
                self._out.remove(out)
                self._sender_wake.set()  # a mark still waiting for a stream is moot now
                level = logging.DEBUG if self._echo_missing_logged else logging.WARNING
                self._echo_missing_logged = True
                log.log(level, "no mark echo for %s within %.1f s of its end; counted as spoken",
                        out.utterance.id, self._mark_grace_s)
                self._on_spoken(out.utterance)
            deadline = min((o.deadline for o in self._out if o.deadline is not None),
                           default=math.inf)
            with trio.move_on_at(deadline):
                await self._watch_wake.wait()
            if self._watch_wake.is_set():
                self._watch_wake = trio.Event()


__all__ = ["FRAME_S", "MAX_QUEUED", "SEND_TIMEOUT_S", "AudioSink", "Player", "Utterance"]
