"""One end of a JSON-RPC connection, as a sans-IO state machine (bytes in, actions out).

The daemon's connections, the trio client and the blocking client all keep the same books:
which ids they have issued, which requests still wait for a reply, and what each line that
arrives asks of them. ``Peer`` keeps those books once, in the manner of h11's ``Connection``:
it does no I/O and knows no event loop. The shell encodes what it sends through the peer
(``send_request``, ``send_result``, ``send_error``, ``send_notification``), writes the bytes
itself, feeds what it reads to ``receive_data`` (or ``feed`` and ``next_action``, one at a
time), and does what each action says:

- ``Request``: dispatch it and answer with ``send_result`` / ``send_error``;
- ``Notification``: dispatch it (a server) or hand it on (a client); never answered;
- ``Reply``: the response to the request the shell recorded as ``waiter``;
- ``Unmatched``: a response no one waits for (late, or for a request given up); drop it;
- ``Refuse``: a line that could not be understood; ``error.reply()`` is the answer a server
  sends, ``too_long`` says it was over the line limit.

Theory of a reply with a null id. A peer that cannot read a line answers with ``id: null``
(it cannot know the id), so such a reply names no waiter. Our own encoders only write lines
the other end can parse, except one kind: a line over the other end's line limit (assumed to
be ours, ``MAX_LINE_BYTES``), which it refuses whole. So every line the peer encodes over the
limit is queued as an expected refusal, in the order it was encoded (the order it is sent:
shells send under one lock, with no checkpoint after encoding), and a null-id reply takes the
oldest: if that line was a request still waiting, the reply is its answer; if it was a reply
or notification of ours, or a request given up, no one waits for it. A null-id reply that
was not expected is a refusal we did not foresee: with one request pending it is that one's
answer; with several, every pending request gets it, since one of them will never be
answered and we cannot tell which (failing them is recoverable, waiting for ever is not).
"""

from __future__ import annotations

import itertools
from collections import deque
from typing import Any, Generic, NamedTuple, TypeVar

from ..errors import LineTooLong
from .protocol import (
    INVALID_REQUEST,
    MAX_LINE_BYTES,
    LineSplitter,
    Notification,
    ProtocolError,
    Request,
    Response,
    encode_error,
    encode_notification,
    encode_request,
    encode_result,
    parse_line,
)

W = TypeVar("W")

# Expected refusals remembered at once. Each stands for a line over the limit that we sent,
# so the queue only grows when a peer that never answers such lines keeps receiving them;
# the bound keeps even that case small.
MAX_EXPECTED_REFUSALS = 64

TOO_LONG = ProtocolError(None, INVALID_REQUEST, "Invalid Request: line exceeds 1 MiB")


class Reply(NamedTuple, Generic[W]):
    """The response to request ``id``, which the shell recorded with ``waiter``; a refusal
    with a null id that was matched to it keeps ``response.id`` None."""

    id: int | str
    waiter: W
    response: Response


class Unmatched(NamedTuple):
    """A response no pending request waits for."""

    response: Response


class Refuse(NamedTuple):
    """A line that could not be understood; ``error.reply()`` is the answer to send."""

    error: ProtocolError
    too_long: bool = False


Action = Request | Notification | Reply[W] | Unmatched | Refuse


class Peer(Generic[W]):
    """Issues ids (``1, 2, …``, or ``f"{id_prefix}{n}"`` strings), records pending requests
    with the shell's waiter for each, and turns incoming bytes into actions. ``max_line``
    limits incoming lines and is taken as the other end's limit for outgoing ones."""

    def __init__(self, *, id_prefix: str | None = None,
                 max_line: int = MAX_LINE_BYTES) -> None:
        self._prefix = id_prefix
        self._max_line = max_line
        self._counter = itertools.count(1)
        self._splitter = LineSplitter(max_line)
        self._lines: deque[bytes | LineTooLong] = deque()
        self._pending: dict[int | str, W] = {}
        # the line each expected refusal answers: a request's id, or None for anything else
        self._refusals: deque[int | str | None] = deque(maxlen=MAX_EXPECTED_REFUSALS)
        self._ready: deque[Action[W]] = deque()  # decided, not yet handed out

    # -- what we send --------------------------------------------------------------------

    def send_request(self, method: str, params: dict[str, Any] | None,
                     waiter: W) -> tuple[int | str, bytes]:
        """A new id and the request's line; the request is pending until ``forget`` or a
        reply. Raises ``RpcError`` (-32602) for invalid text, recording nothing."""
        n = next(self._counter)
        msg_id: int | str = n if self._prefix is None else f"{self._prefix}{n}"
        line = encode_request(msg_id, method, params)
        self._pending[msg_id] = waiter
        self._sent(line, msg_id)
        return msg_id, line

    def send_result(self, msg_id: int | str | None, result: Any) -> bytes:
        """Strict: text that cannot be encoded raises ``UnicodeEncodeError``."""
        return self._sent(encode_result(msg_id, result), None)

    def send_error(self, msg_id: int | str | None, code: int, message: str,
                   data: Any = None) -> bytes:
        """Never fails on text (see ``encode_error``)."""
        return self._sent(encode_error(msg_id, code, message, data), None)

    def send_notification(self, method: str, params: dict[str, Any]) -> bytes:
        return self._sent(encode_notification(method, params), None)

    def _sent(self, line: bytes, what: int | str | None) -> bytes:
        if len(line) - 1 > self._max_line:  # the newline is not part of the line
            self._refusals.append(what)
        return line

    def forget(self, msg_id: int | str) -> None:
        """The shell stopped waiting for ``msg_id`` (answered, cancelled, timed out)."""
        self._pending.pop(msg_id, None)
        if self._ready:
            self._ready = deque(a for a in self._ready
                                if not (isinstance(a, Reply) and a.id == msg_id))

    def close(self) -> list[W]:
        """No reply will come any more: the waiters still pending, now forgotten."""
        waiters = [*self._pending.values(),
                   *(a.waiter for a in self._ready if isinstance(a, Reply))]
        self._pending.clear()
        self._refusals.clear()
        self._ready = deque(a for a in self._ready if not isinstance(a, Reply))
        return waiters

    @property
    def pending(self) -> int:
        return len(self._pending)

    # -- what we receive -----------------------------------------------------------------

    def feed(self, data: bytes | bytearray) -> None:
        self._lines.extend(self._splitter.feed(data))

    def next_action(self) -> Action[W] | None:
        """The action for the next complete line fed; None when more bytes are needed."""
        if self._ready:
            return self._ready.popleft()
        if not self._lines:
            return None
        item = self._lines.popleft()
        if isinstance(item, LineTooLong):
            return Refuse(TOO_LONG, too_long=True)
        message = parse_line(item)
        if isinstance(message, ProtocolError):
            return Refuse(message)
        if not isinstance(message, Response):
            return message
        if message.id is None:
            return self._refused(message)
        if message.id not in self._pending:
            return Unmatched(message)
        return Reply(message.id, self._pending.pop(message.id), message)

    def _refused(self, message: Response) -> Action[W]:
        """A null-id reply: see the module docstring for whose answer it is."""
        if self._refusals:
            msg_id = self._refusals.popleft()
            if msg_id is None or msg_id not in self._pending:
                return Unmatched(message)
            return Reply(msg_id, self._pending.pop(msg_id), message)
        if not self._pending:
            return Unmatched(message)
        # unforeseen: every pending request gets it, the first now, the others next
        replies = [Reply(msg_id, waiter, message) for msg_id, waiter in self._pending.items()]
        self._pending.clear()
        self._ready.extend(replies[1:])
        return replies[0]

    def receive_data(self, data: bytes | bytearray) -> list[Action[W]]:
        """``feed`` and every action it completes, in order."""
        self.feed(data)
        actions: list[Action[W]] = []
        while (action := self.next_action()) is not None:
            actions.append(action)
        return actions
