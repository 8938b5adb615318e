"""``FakeRealtimeSTT``: a local OpenAI Realtime transcription server that "recognises" a script.

It speaks the GA protocol as the vectors show it, as strictly as a test needs: the upgrade must
carry ``Authorization: Bearer <api_key>`` (else HTTP 401) and ``intent=transcription`` in its
query (else HTTP 400); the first message must be ``session.update`` (else an ``error`` event
and close 1008). Every connection is recorded (``connections``; the accepted ones in
``sessions``): its path, query, headers, the session updates and the audio it received, decoded,
so a test can compare it byte for byte with what the caller said.

Recognition is driven by the audio, not by a clock, so it works on real loopback and on
``MockClock`` alike. ``script`` is a list of ``(text, after_ms, duration_ms)``: once a session
has received ``after_ms`` of audio (8 bytes a millisecond), the next utterance starts
(``speech_started`` with ``audio_start_ms``); ``duration_ms`` later come ``speech_stopped``,
``committed`` (``previous_item_id`` chained within the session), a few deltas and
``completed``. Each utterance is recognised once; one cut short by a dropped connection is
heard again on the next session, counted from that session's start.

Knobs: ``drop()`` closes the current connection abruptly (no close frame), ``close_current()``
closes it properly, ``refuse_next(n, status)`` refuses upgrades, ``send_error()`` /
``send_event()`` / ``send_raw()`` push server messages. ``async with FakeRealtimeSTT(...) as
stt`` listens on 127.0.0.1 (``stt.url``); ``stt.connector`` reaches the same server through
memory streams, for tests on the autojump clock (``listen=False`` skips the socket).
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import re
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, NamedTuple, Self
from urllib.parse import parse_qsl, urlsplit

import trio
import trio.testing
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    wrap_client_stream,
    wrap_server_stream,
)

FAKE_API_KEY = "sk-test-fake-realtime"
PATH = "/v1/realtime"
HANDSHAKE_TIMEOUT_S = 10.0
CLOSE_TIMEOUT_S = 2.0
BYTES_PER_MS = 8  # 8 kHz mu-law


class ScriptedUtterance(NamedTuple):
    """What the fake "hears": ``text``, starting after ``after_ms`` of a session's audio."""

    text: str
    after_ms: int
    duration_ms: int


@dataclass
class FakeSttSession:
    """One connection as the fake saw it (``status`` 101 if accepted, else the refusal)."""

    path: str
    query: dict[str, str]
    headers: dict[str, str]  # names in lower case
    status: int = 101
    updates: list[dict[str, Any]] = field(default_factory=list)
    audio: bytearray = field(default_factory=bytearray)
    appends: int = 0
    received: list[dict[str, Any]] = field(default_factory=list)  # other client messages
    sent: list[dict[str, Any]] = field(default_factory=list)  # server events, in order
    items: list[str] = field(default_factory=list)  # item ids committed, in order
    closed: bool = False
    _speaking: tuple[ScriptedUtterance, str] | None = None

    @property
    def audio_ms(self) -> int:
        return len(self.audio) // BYTES_PER_MS


@dataclass
class _Live:
    session: FakeSttSession
    ws: WebSocketConnection
    scope: trio.CancelScope


class FakeRealtimeSTT:
    """A local Realtime transcription server (see the module docstring)."""

    def __init__(self, script: Iterable[tuple[str, int, int]] = (), *,
                 api_key: str = FAKE_API_KEY, listen: bool = True, deltas: int = 3,
                 host: str = "127.0.0.1") -> None:
        self.api_key = api_key
        self.deltas = max(1, deltas)
        self._script: deque[ScriptedUtterance] = deque(
            ScriptedUtterance(*u) for u in script)
        self._listen = listen
        self._host = host
        self.url = ""
        self.connections: list[FakeSttSession] = []
        self._live: _Live | None = None
        self._refuse: list[int] = []
        self._ids = itertools.count(1)  # event ids
        self._item_ids = itertools.count(1)
        self._changed = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._stack: AsyncExitStack | None = None
        self._outer: trio.Nursery | None = None

    @property
    def sessions(self) -> list[FakeSttSession]:
        """The accepted connections, oldest first."""
        return [c for c in self.connections if c.status == 101]

    @property
    def current(self) -> FakeSttSession | None:
        """The session that is open now, if any."""
        return self._live.session if self._live is not None else None

    def add_script(self, *utterances: tuple[str, int, int]) -> None:
        """More utterances to recognise, after those already scripted."""
        self._script.extend(ScriptedUtterance(*u) for u in utterances)

    def refuse_next(self, n: int = 1, status: int = 503) -> None:
        """Refuse the next ``n`` upgrades with HTTP ``status``."""
        self._refuse.extend([status] * n)

    def drop(self) -> None:
        """Cut the current connection abruptly: the client sees the TCP stream end (1006)."""
        if self._live is not None:
            self._live.scope.cancel()

    async def close_current(self, code: int = 1011, reason: str = "") -> None:
        """Close the current connection with a close frame."""
        if self._live is not None:
            with trio.move_on_after(CLOSE_TIMEOUT_S):
                await self._live.ws.aclose(code, reason)

    async def send_event(self, event: dict[str, Any]) -> None:
        """Send ``event`` (a server event) on the current connection."""
        if self._live is not None:
            await self._send(self._live.session, self._live.ws, event)

    async def send_error(self, message: str = "The server had an error.", *,
                         code: str | None = None, type: str = "server_error") -> None:
        """Send an ``error`` event on the current connection."""
        await self.send_event({"type": "error", "error": {
            "type": type, "code": code, "message": message, "param": None}})

    async def send_raw(self, text: str | bytes) -> None:
        """Send ``text`` as it is (malformed or hostile messages)."""
        if self._live is not None:
            try:
                await self._live.ws.send_message(text)
            except ConnectionClosed:
                pass

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Return once ``predicate()`` holds (checked after every change)."""
        while not predicate():
            await self._changed.wait()

    async def wait_sessions(self, n: int) -> FakeSttSession:
        """Wait for the ``n``-th accepted session to have its ``session.update``."""
        await self.wait_for(lambda: len(self.sessions) >= n and bool(self.sessions[n - 1].updates))
        return self.sessions[n - 1]

    @property
    def connector(self) -> Callable[[str, dict[str, str]],
                                    AbstractAsyncContextManager[WebSocketConnection]]:
        """A ``stt.pump.Connector`` reaching this server through memory streams."""
        return self._connect_in_memory

    async def run(self, *, task_status: trio.TaskStatus[Self] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Serve until cancelled; reports the fake once it accepts connections."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            if self._listen:
                listeners = await trio.open_tcp_listeners(0, host=self._host)
                port = listeners[0].socket.getsockname()[1]
                self.url = f"ws://{self._host}:{port}{PATH}"
                nursery.start_soon(trio.serve_listeners, self._handle, listeners)
            else:
                self.url = f"ws://fake-realtime.invalid{PATH}"
            task_status.started(self)
            await trio.sleep_forever()

    async def __aenter__(self) -> Self:
        stack = AsyncExitStack()
        outer = await stack.enter_async_context(trio.open_nursery())
        await outer.start(self.run)
        self._stack, self._outer = stack, outer
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> bool | None:
        assert self._stack is not None and self._outer is not None
        self._outer.cancel_scope.cancel()
        return await self._stack.__aexit__(exc_type, exc, tb)

    @asynccontextmanager
    async def _connect_in_memory(self, url: str, headers: dict[str, str]
                                 ) -> AsyncIterator[WebSocketConnection]:
        assert self._nursery is not None, "the fake is not running"
        client, server = trio.testing.memory_stream_pair()
        self._nursery.start_soon(self._handle, server)
        parts = urlsplit(url)
        resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            async with trio.open_nursery() as nursery:
                ws = await wrap_client_stream(
                    nursery, client, parts.netloc, resource,  # type: ignore[arg-type]
                    extra_headers=[(k.encode(), v.encode()) for k, v in headers.items()])
                try:
                    yield ws
                finally:
                    with trio.move_on_after(CLOSE_TIMEOUT_S):
                        await ws.aclose()
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:  # as trio-websocket's own connector: no groups
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise

    async def _handle(self, stream: trio.abc.Stream) -> None:
        try:
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:
                    with trio.fail_after(HANDSHAKE_TIMEOUT_S):
                        request = await wrap_server_stream(nursery, stream)
                    session = self._record(request)
                    if session.status != 101:
                        await request.reject(session.status, body=b"refused by the fake")
                    else:
                        ws = await request.accept()
                        self._live = _Live(session, ws, scope)
                        try:
                            await self._converse(session, ws)
                        finally:
                            self._end(session)
                    nursery.cancel_scope.cancel()
        except* (trio.TooSlowError, ConnectionClosed, trio.BrokenResourceError):
            pass  # (raised in the nursery's body, so they come grouped)
        finally:
            await trio.aclose_forcefully(stream)

    def _record(self, request: WebSocketRequest) -> FakeSttSession:
        parts = urlsplit(request.path)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in request.headers}
        session = FakeSttSession(path=parts.path, query=dict(parse_qsl(parts.query)),
                                 headers=headers)
        if self._refuse:
            session.status = self._refuse.pop(0)
        elif headers.get("authorization") != f"Bearer {self.api_key}":
            session.status = 401
        elif session.query.get("intent") != "transcription":
            session.status = 400
        self.connections.append(session)
        self._notify()
        return session

    def _end(self, session: FakeSttSession) -> None:
        session.closed = True
        if session._speaking is not None:  # cut short: heard again next session
            self._script.appendleft(session._speaking[0])
            session._speaking = None
        if self._live is not None and self._live.session is session:
            self._live = None
        self._notify()

    async def _converse(self, session: FakeSttSession, ws: WebSocketConnection) -> None:
        await self._send(session, ws, {"type": "session.created",
                                       "session": {"type": "transcription"}})
        while True:
            try:
                message = await ws.get_message()
            except ConnectionClosed:
                return
            try:
                event = json.loads(message)
                kind = event["type"]
            except (ValueError, TypeError, KeyError):
                await self._send_error(session, ws, "invalid_json", "could not parse the event")
                continue
            if not session.updates and kind not in (
                    "session.update", "transcription_session.update"):
                await self._send_error(session, ws, "session_update_expected",
                                       f"{kind} before session.update")
                await ws.aclose(1008, "session.update expected first")
                return
            if kind in ("session.update", "transcription_session.update"):
                session.updates.append(event)
                await self._send(session, ws, {"type": kind.replace("update", "updated"),
                                               "session": event.get("session")})
            elif kind == "input_audio_buffer.append":
                try:
                    session.audio += base64.b64decode(event["audio"], validate=True)
                except (binascii.Error, KeyError, TypeError, ValueError):
                    await self._send_error(session, ws, "invalid_value", "bad audio")
                    continue
                session.appends += 1
                await self._recognise(session, ws)
            else:
                session.received.append(event)
            self._notify()

    async def _recognise(self, session: FakeSttSession, ws: WebSocketConnection) -> None:
        while True:
            if session._speaking is None:
                if not self._script or session.audio_ms < self._script[0].after_ms:
                    return
                utterance = self._script.popleft()
                item = f"item_{next(self._item_ids)}"
                session._speaking = (utterance, item)
                await self._send(session, ws, {
                    "type": "input_audio_buffer.speech_started",
                    "audio_start_ms": utterance.after_ms, "item_id": item})
            utterance, item = session._speaking
            end_ms = utterance.after_ms + utterance.duration_ms
            if session.audio_ms < end_ms:
                return
            previous = session.items[-1] if session.items else None
            session._speaking = None
            session.items.append(item)
            await self._send(session, ws, {"type": "input_audio_buffer.speech_stopped",
                                           "audio_end_ms": end_ms, "item_id": item})
            await self._send(session, ws, {"type": "input_audio_buffer.committed",
                                           "item_id": item, "previous_item_id": previous})
            for piece in _pieces(utterance.text, self.deltas):
                await self._send(session, ws, {
                    "type": "conversation.item.input_audio_transcription.delta",
                    "item_id": item, "content_index": 0, "delta": piece})
            await self._send(session, ws, {
                "type": "conversation.item.input_audio_transcription.completed",
                "item_id": item, "content_index": 0, "transcript": utterance.text})

    async def _send_error(self, session: FakeSttSession, ws: WebSocketConnection,
                          code: str, message: str) -> None:
        await self._send(session, ws, {"type": "error", "error": {
            "type": "invalid_request_error", "code": code, "message": message,
            "param": None}})

    async def _send(self, session: FakeSttSession, ws: WebSocketConnection,
                    event: dict[str, Any]) -> None:
        event = {"type": event["type"], "event_id": f"event_{next(self._ids)}",
                 **{k: v for k, v in event.items() if k != "type"}}
        session.sent.append(event)
        self._notify()
        try:
            await ws.send_message(json.dumps(event))
        except ConnectionClosed:
            pass

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()


def _pieces(text: str, n: int) -> list[str]:
    """``text`` cut at word boundaries into at most ``n`` deltas that join back to it."""
    words = re.findall(r"\S+\s*|\s+", text)
    if not words:
        return []
    size = -(-len(words) // n)
    return ["".join(words[i:i + size]) for i in range(0, len(words), size)]
