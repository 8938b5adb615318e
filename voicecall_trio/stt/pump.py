"""The trio shell of realtime transcription: one call's audio to the STT, its events back.

``RealtimeTranscriber`` runs in the call's nursery. ``send_audio`` is on the per-frame path
(the media route calls it for each 20 ms frame): it only appends to a buffer and wakes the
sender, so it never blocks and never awaits. Everything else happens in ``run``:

- **Connecting.** ``run`` reports started at once and connects in the background (the URL
  gets ``?intent=transcription``, the key goes in ``Authorization: Bearer``; it is never
  logged). Audio that arrives meanwhile is held (at most ``FIRST_HOLD_BYTES``, 10 s, also
  across failed first attempts; beyond that the oldest is dropped) and goes out first, right
  after ``session.update``, so the STT hears the stream byte-identical and in order from its
  first frame. Connecting is bounded by ``CONNECT_TIMEOUT_S``. A message still being sent
  after ``SEND_STALL_S`` ends the session (the keepalive task watches the sender, so the
  send path has no timeout scope of its own; it notices within ``SEND_STALL_S`` to twice
  that); so does a ping every ``PING_EVERY_S`` that gets no pong within ``PONG_TIMEOUT_S``.
- **The connection.** The default connector is ``ws_client.open_websocket``, a lean client
  (wsproto for the handshake and the receive side, each append framed and masked by hand,
  one ``send_all``); ``connect`` takes anything with the same ``send_message`` /
  ``get_message`` / ``ping``, such as trio-websocket's connections of the in-memory fakes.
- **Batching.** When the sender wakes it sends everything pending as one append (at most
  ``MAX_APPEND_BYTES``, 32 KiB, a message). With ``batch_s`` > 0 it first waits that long
  (at most ``MAX_BATCH_S``, 100 ms) to gather frames: fewer messages, more latency.
- **Reconnecting.** A session that ends (dropped, closed, stalled) is followed by another
  after a back-off (``BACKOFF_S`` doubling). Audio of the gap is kept, at most the last
  ``GAP_HOLD_BYTES`` (2 s), and sent first on the new session after its ``session.update``.
  ``max_retries`` failures in a row (a refused or failed connect, a session that ended
  before ``STABLE_S``, or one that stalled) give up: ``on_lost()`` is called once, ``run``
  returns, and later audio is dropped. An HTTP 401/403 counts as a failure like any other,
  and its log line says the key was refused.
- **Events.** Server events go through ``realtime.RealtimeDecoder``; its ``SttEvent`` values
  go to ``on_event`` as they come (it must not block; should it raise, the session ends as
  if dropped, with the traceback logged). ``error`` events arrive there as ``SttFailure``
  for the caller to log; the session carries on. Malformed server messages, and turns
  skipped because they never completed, are counted and logged at most once a minute.

Cost per frame (``scripts/stt_frame_cost.py``, a 160-byte frame, best of 5 on this 2-core
box under load): 0.15 us in ``send_audio``, 0.3 us to encode it as its own append (0.2 us a
frame when five share one); framing it costs ~1 us in ``ws_client.mask_frame`` (4 us in
wsproto). What dominates is per message: the trio ``send_all`` and its socket write, and
the sender's wake-up. ``scripts/stt_send_cost.py`` times the whole path on loopback (paced
frames, one append each): ~40 us of process CPU a frame with the lean client and this send
path, ~59 us with trio-websocket and a timeout scope and an Event per send (200 calls,
trio's loop included). The sender batches by itself when it runs late (it sends everything
pending); ``batch_s`` forces it, at the price of that much latency (the default is 0).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Protocol

import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, HandshakeError

from . import ws_client
from .realtime import RealtimeDecoder, SttEvent, append, session_update, transcription_url

log = logging.getLogger("voicecall.stt")


class RealtimeSocket(Protocol):
    """What the pump uses of a connection: ``ws_client.LeanWebSocket`` or trio-websocket's."""

    async def send_message(self, message: str) -> None: ...
    async def get_message(self) -> str | bytes: ...
    async def ping(self) -> None: ...


Connector = Callable[[str, dict[str, str]], AbstractAsyncContextManager[RealtimeSocket]]

BYTES_PER_S = 8000  # 8 kHz mu-law
FIRST_HOLD_BYTES = 10 * BYTES_PER_S  # held while the first session connects
GAP_HOLD_BYTES = 2 * BYTES_PER_S  # kept from a gap between sessions: the last 2 s
OPEN_HOLD_BYTES = 10 * BYTES_PER_S  # pending behind a slow but open session
MAX_APPEND_BYTES = 32 * 1024  # audio in one append message
MAX_BATCH_S = 0.1  # the longest the sender waits to gather frames
CONNECT_TIMEOUT_S = 10.0  # TCP, TLS, the upgrade and sending session.update
CLOSE_TIMEOUT_S = 2.0  # the closing handshake of a session we end
SEND_STALL_S = 5.0  # one message still not written: the session is dead
PING_EVERY_S = 20.0
PONG_TIMEOUT_S = 10.0
BACKOFF_S = 0.2  # the first pause before reconnecting; doubles with each failure in a row
STABLE_S = 5.0  # a session that lasted this long resets the failure count
MAX_SERVER_MESSAGE = 1 << 20  # a longer server message closes the session (1009)
LOG_EVERY_S = 60.0

CONNECTING, OPEN, GAP, LOST, CLOSED = "connecting", "open", "gap", "lost", "closed"
_HOLD = {CONNECTING: FIRST_HOLD_BYTES, OPEN: OPEN_HOLD_BYTES, GAP: GAP_HOLD_BYTES}


def open_realtime(url: str, headers: dict[str, str]
                  ) -> AbstractAsyncContextManager[RealtimeSocket]:
    """The default connector: the lean client, with our timeouts and message size limit."""
    return ws_client.open_websocket(url, headers, connect_timeout=CONNECT_TIMEOUT_S,
                                    max_message_size=MAX_SERVER_MESSAGE)


class _Throttled:
    """A warning that may recur often: one line per ``every_s``, with the count since."""

    def __init__(self, message: str, every_s: float = LOG_EVERY_S) -> None:
        self.message = message
        self.every_s = every_s
        self._count = 0
        self._next_at = -math.inf

    def __call__(self, detail: str, exc: BaseException | None = None) -> None:
        self._count += 1
        now = trio.current_time()
        if now >= self._next_at:
            log.warning("%s: %s (%d time(s) since the last such line)", self.message, detail,
                        self._count, exc_info=exc)
            self._count = 0
            self._next_at = now + self.every_s


class RealtimeTranscriber:
    """One call's realtime transcription session, kept up while the call lives.

    ``url`` is ``streaming.realtimeUrl``; ``connect`` replaces trio-websocket (tests pass the
    fake's in-memory connector). Optional: ``language`` (sent only if given), ``beta`` (the
    older ``transcription_session.update`` and its ``OpenAI-Beta`` header), ``batch_s``.
    Counters for tests and the benchmark: ``sessions_opened``, ``appends_sent``,
    ``bytes_sent``, ``bytes_dropped``.
    """

    def __init__(self, *, url: str, api_key: str, model: str, vad_threshold: float,
                 silence_duration_ms: int, on_event: Callable[[SttEvent], None],
                 on_lost: Callable[[], None], connect: Connector | None = None,
                 max_retries: int = 5, language: str | None = None, beta: bool = False,
                 batch_s: float = 0.0) -> None:
        self.url = transcription_url(url)
        self._headers = {"Authorization": f"Bearer {api_key}"}
        if beta:
            self._headers["OpenAI-Beta"] = "realtime=v1"
        self._update = session_update(model, vad_threshold, silence_duration_ms,
                                      language=language, beta=beta)
        self._on_event = on_event
        self._on_lost = on_lost
        self._connect: Connector = connect or open_realtime
        self.max_retries = max(1, max_retries)
        self._batch_s = min(max(0.0, batch_s), MAX_BATCH_S)
        self._decoder = RealtimeDecoder()
        self._pending = bytearray()
        self._idle = trio.lowlevel.ParkingLot()  # the sender, while nothing is pending
        self._send_since = math.inf  # when the message being sent started (inf: none is)
        self._phase = CONNECTING
        self._hold = FIRST_HOLD_BYTES
        self._opened = False  # the current attempt got as far as a session
        self._stalled = False  # ... which then stopped moving (counts as a failure)
        self._opened_at = 0.0
        self._end_reason = ""
        self._malformed_seen = 0
        self._skipped_seen = 0
        self._overflow = _Throttled("STT audio buffer full, oldest audio dropped")
        self._malformed = _Throttled("malformed messages from the realtime STT skipped")
        self._reconnect = _Throttled("realtime STT session ended, reconnecting")
        self._unexpected = _Throttled("realtime STT session failed unexpectedly")
        self._skipped = _Throttled("a caller turn was never transcribed, skipped")
        self.sessions_opened = 0
        self.appends_sent = 0
        self.bytes_sent = 0
        self.bytes_dropped = 0

    @property
    def phase(self) -> str:
        """``connecting``, ``open``, ``gap`` (between sessions), ``lost`` or ``closed``."""
        return self._phase

    @property
    def pending(self) -> int:
        """Audio bytes held, not yet sent."""
        return len(self._pending)

    def send_audio(self, ulaw: bytes) -> None:
        """Queue caller audio for the STT, in order; never blocks (the per-frame path)."""
        if not self._hold:  # lost or closed
            self.bytes_dropped += len(ulaw)
            return
        pending = self._pending
        pending += ulaw
        over = len(pending) - self._hold
        if over > 0:
            del pending[:over]
            self.bytes_dropped += over
            self._overflow(f"{over} bytes while {self._phase}")
        if self._idle:
            self._idle.unpark()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Connect, pump, reconnect; returns only after giving up (cancel it to stop)."""
        task_status.started()
        failures = 0
        try:
            while True:
                self._opened = self._stalled = False
                try:
                    await self._session()
                    reason = self._end_reason
                except ConnectionRejected as exc:
                    reason = _rejected(exc.status_code)
                except Exception as exc:  # one attempt's failure, whatever it is, is contained
                    reason = _describe(exc)
                    if not _is_network(exc):  # a bug (on_event raised?): show where, once a minute
                        self._unexpected(reason, exc)
                lasted = trio.current_time() - self._opened_at >= STABLE_S
                if self._opened and lasted and not self._stalled:
                    failures = 0
                else:
                    failures += 1
                if failures >= self.max_retries:
                    log.warning("realtime transcription lost after %d failed attempt(s) in a "
                                "row: %s", failures, reason)
                    self._give_up()
                    return
                self._set_phase(GAP if self.sessions_opened else CONNECTING)
                delay = BACKOFF_S * 2 ** max(0, failures - 1)
                self._reconnect(f"{reason}; retrying in {delay:.1f} s")
                await trio.sleep(delay)
        finally:
            if self._phase is not LOST:
                self._set_phase(CLOSED)
                self._pending.clear()

    async def _session(self) -> None:
        """One connection: connect, send ``session.update``, pump until it ends."""
        self._end_reason = "closed"
        with trio.CancelScope(deadline=trio.current_time() + CONNECT_TIMEOUT_S) as connecting:
            async with self._connect(self.url, self._headers) as ws:
                await ws.send_message(self._update)
                connecting.deadline = math.inf
                self._opened = True
                self._opened_at = trio.current_time()
                self.sessions_opened += 1
                self._set_phase(OPEN)
                try:
                    await self._pump(ws)
                finally:
                    for event in self._decoder.new_session():
                        self._on_event(event)
        if connecting.cancelled_caught:
            self._end_reason = f"no session within {CONNECT_TIMEOUT_S:.0f} s"

    async def _pump(self, ws: RealtimeSocket) -> None:
        self._send_since = math.inf
        async with trio.open_nursery() as nursery:
            def until_end(loop: Callable[[RealtimeSocket], Awaitable[None]]
                          ) -> Callable[[], Awaitable[None]]:
                async def guarded() -> None:
                    try:
                        await loop(ws)
                    except ConnectionClosed as exc:
                        code = exc.reason.code if exc.reason is not None else None
                        self._end_reason = f"the server closed the session ({code})"
                    except trio.TooSlowError:
                        self._end_reason = "the session stalled"
                        self._stalled = True
                    nursery.cancel_scope.cancel()
                return guarded

            nursery.start_soon(until_end(self._receive))
            nursery.start_soon(until_end(self._send))
            nursery.start_soon(until_end(self._keepalive))

    async def _send(self, ws: RealtimeSocket) -> None:
        """The one task that sends audio. The per-message path: no scope, no allocation
        beyond the message; ``_keepalive`` watches ``_send_since`` for a stalled send."""
        pending, idle, send = self._pending, self._idle, ws.send_message
        while True:
            while not pending:
                await idle.park()
            if self._batch_s:
                await trio.sleep(self._batch_s)
            chunk = bytes(pending[:MAX_APPEND_BYTES])
            del pending[:MAX_APPEND_BYTES]
            self._send_since = trio.current_time()
            try:
                await send(append(chunk))
            except BaseException:
                pending[0:0] = chunk  # not known to be sent: it belongs to the gap
                raise
            self._send_since = math.inf
            self.appends_sent += 1
            self.bytes_sent += len(chunk)

    async def _receive(self, ws: RealtimeSocket) -> None:
        decoder = self._decoder
        while True:
            message = await ws.get_message()
            for event in decoder.receive(message):
                self._on_event(event)
            if decoder.malformed != self._malformed_seen:
                self._malformed_seen = decoder.malformed
                self._malformed(f"{decoder.malformed} so far")
            if decoder.skipped != self._skipped_seen:
                self._skipped_seen = decoder.skipped
                self._skipped(f"{decoder.skipped} so far")

    async def _keepalive(self, ws: RealtimeSocket) -> None:
        """Ping every ``PING_EVERY_S``; end the session (``TooSlowError``) on a missing pong
        or on a send in progress for ``SEND_STALL_S``. It looks at the sender at least every
        ``SEND_STALL_S`` and then sleeps until that send's deadline, so a stall is seen
        ``SEND_STALL_S`` to twice that after the send began."""
        next_ping = trio.current_time() + PING_EVERY_S
        while True:
            now = trio.current_time()
            stall_at = self._send_since + SEND_STALL_S
            if now >= stall_at:
                raise trio.TooSlowError
            if now >= next_ping:
                with trio.fail_after(PONG_TIMEOUT_S):
                    await ws.ping()
                next_ping = trio.current_time() + PING_EVERY_S
                continue
            await trio.sleep_until(min(next_ping, stall_at, now + SEND_STALL_S))

    def _set_phase(self, phase: str) -> None:
        self._phase = phase
        self._hold = _HOLD.get(phase, 0)
        over = len(self._pending) - self._hold
        if over > 0:
            del self._pending[:over]
            self.bytes_dropped += over

    def _give_up(self) -> None:
        self._set_phase(LOST)
        self._on_lost()


def _rejected(status: int) -> str:
    if status in (401, 403):
        return (f"HTTP {status}: the realtime server refused the API key "
                "(streaming.openaiApiKey / OPENAI_API_KEY)")
    return f"HTTP {status} on connect"


_NETWORK = (HandshakeError, ConnectionClosed, OSError, trio.TooSlowError,
            trio.BrokenResourceError, trio.ClosedResourceError)


def _is_network(exc: BaseException) -> bool:
    """Whether ``exc`` is the network's doing (else a bug worth a traceback)."""
    if isinstance(exc, BaseExceptionGroup):
        return all(_is_network(e) for e in exc.exceptions)
    return isinstance(exc, _NETWORK)


def _describe(exc: BaseException) -> str:
    """A failure for the log: its class and, for OS errors, the errno text (never headers)."""
    if isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        return _describe(exc.exceptions[0])
    cause = exc.__cause__
    if isinstance(exc, OSError) or isinstance(cause, OSError):
        err = exc if isinstance(exc, OSError) else cause
        assert isinstance(err, OSError)
        return f"{type(exc).__name__}: {err.strerror or err}"
    return type(exc).__name__
