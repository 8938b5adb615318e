"""Every exception the daemon, its clients and its CLI raise, in one tree.

Why one module: a reader (or a gateway author) finds here what can go wrong, where, and how it
reaches them: as a JSON-RPC error code, an HTTP status, or a CLI exit code. It imports only the
standard library, so the CLI and the RPC clients can import it without pulling in trio, httpx,
quart or msgspec.

::

    Exception
    ├── VoiceCallError                 rpc -32000  application error a handler raises
    │   ├── ConfigError                rpc -32000  a bad config; the message names the key path
    │   ├── DaemonStartError           exit 1      the daemon cannot start (config, lock, port)
    │   │   └── TunnelError            exit 1      the tunnel could not start, or died
    │   ├── CallNotFound               rpc -32001  "Call not found"
    │   ├── CallNotConnected           rpc -32002  the call is not connected, or has ended
    │   ├── ConcurrencyLimit           rpc -32003  "Maximum concurrent calls (N) reached"
    │   ├── CarrierError               rpc -32004  the carrier refused or failed a request
    │   ├── SpeechError                rpc -32004  the TTS provider failed before any audio
    │   ├── TranscriptTimeout          rpc -32005  no final transcript in time
    │   └── InvalidInput               rpc -32006  e.g. a non-E.164 number, an empty message
    ├── ProviderError                  -> CarrierError (rpc -32004), see ``carrier_error``
    ├── WebhookRejected                http 4xx    a carrier request we will not act on
    │   ├── SignatureRejected          http 401    signature missing, unverifiable or wrong
    │   ├── WebhookParseError          http 400    not a Twilio voice webhook (also ValueError)
    │   ├── TelnyxParseError           http 400    not a Telnyx webhook envelope (also ValueError)
    │   └── BodyTooLarge               http 413    a webhook body over the size cap, while read
    ├── NotSimple                      -           the fast HTTP path hands the request over
    ├── LineTooLong                    rpc -32600  a JSON-RPC line over 1 MiB (a value, not raised)
    ├── RpcError                       rpc <code>  an error reply, raised by clients and handlers
    ├── DaemonUnreachable              exit 3      no daemon answers on the control socket
    ├── SocketInUse                    -> DaemonStartError: another daemon owns the socket
    ├── UsageError                     exit 2      a command's arguments make no sense together
    ├── Failed                         exit 1      a command's operation failed
    ├── JournalError (OSError)         -> VoiceCallError (rpc -32000) "...; the call was not placed"
    ├── PeerClosed                     -           the fast front's peer stopped or ran late
    └── ChatError                      -           a built-in reply failed (status, refused, time)
        └── ChatStreamError            -           a malformed, oversized or truncated reply stream

Where each is raised:

- ``VoiceCallError`` and its subclasses: by the supervisor and the RPC method handlers; the
  RPC server turns one into an error object with ``rpc_code`` and ``message``.
- ``SpeechError``: by the speech clients (``tts/``) when the provider answers an error status,
  times out or cannot be reached before the first audio byte (the message names the provider
  and the failure, never a key), and by ``media.player.Player.enqueue`` when its queue is full.
- ``TunnelError``: by ``tunnel/`` when the ngrok agent or ``tailscale`` fails (missing binary,
  an error line, an exit, no URL in time); before the first URL it stops ``serve`` (exit 1),
  later the tunnel supervisor logs it and restarts the tunnel. The message names the config
  key and the cause, never a secret.
- ``ProviderError``: by the carrier shells and the REST executor (``status`` is the carrier's
  HTTP status, ``code`` its error code). It never reaches a client as is: ``carrier_error`` is
  the one place it becomes a ``CarrierError``.
- ``WebhookRejected``: by the sans-IO webhook parsers (``WebhookParseError``,
  ``TelnyxParseError``) and signature checks (``SignatureRejected``: Telnyx's shell raises it,
  Twilio's ``SignatureCheck.rejection()`` makes it); ``status`` is the HTTP status to answer and
  ``public`` the text a carrier may see (the message itself is for the log). Only
  ``providers.rejected`` renders one: the carrier shells at their ``handle_webhook`` boundary
  and the web gate for one that escapes a carrier module.
- ``BodyTooLarge``: by the web endpoint's body reader; answered 413.
- ``NotSimple``: by ``http1.parse_head`` for bytes outside the fast path's subset; ``declined``
  is (method, path, headers) when only one header was left to the full server.
- ``LineTooLong``: yielded (not raised) by ``rpc.protocol.LineSplitter``; the peer answers
  -32600 ("line exceeds 1 MiB") and the connection goes on.
- ``RpcError``: by RPC clients for an error reply, and by handlers for protocol-level errors.
- ``DaemonUnreachable``: by the RPC clients when the socket is missing, refused or lost.
- ``SocketInUse``: by ``rpc.unix.open_unix_listener`` when a live daemon already listens.
- ``UsageError`` / ``Failed``: by CLI commands; ``cli.outcome.guard`` maps them to exit codes.
- ``JournalError``: by the journal writer (``journal.py``) when a record cannot be written;
  an ``initiate`` whose first record fails is refused before any dial.
- ``ChatError``: by the built-in reply client (``agent/client.py``): ``status`` is the LLM
  server's HTTP status (None: refused, timed out), ``code`` its ``error.code``, ``retryable``
  whether one retry may help (429 other than ``insufficient_quota``, 5xx). ``ChatStreamError``
  by the sans-IO SSE and chunk decoders. Neither reaches a client: ``replies.py`` logs one line
  (never the key) and speaks a fallback.
- ``PeerClosed``: by the fast front's connection (``front_connection.py``) when a peer stops
  sending or reading within the request timeout; the connection is dropped.
"""

from __future__ import annotations

from os import PathLike
from typing import Any

# JSON-RPC 2.0 standard code used as the fallback of an unreadable error reply
_INTERNAL_ERROR = -32603


class VoiceCallError(Exception):
    """An application error a JSON-RPC client sees as ``{code: rpc_code, message}``."""

    rpc_code: int = -32000

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(VoiceCallError):
    """Raised when the config cannot be loaded; the message names the key path."""


class DaemonStartError(VoiceCallError):
    """Raised when the daemon cannot start (config, lock, port); the message says why."""


class TunnelError(DaemonStartError):
    """Raised when a tunnel cannot start or dies; the message names the cause."""


class CallNotFound(VoiceCallError):
    """Raised when no call, live or journaled, has the id asked for."""

    rpc_code = -32001

    def __init__(self, message: str = "Call not found") -> None:
        super().__init__(message)


class CallNotConnected(VoiceCallError):
    """Raised when the call is not connected yet, has ended, or is busy with a continue."""

    rpc_code = -32002


class ConcurrencyLimit(VoiceCallError):
    """Raised when ``maxConcurrentCalls`` calls are already live."""

    rpc_code = -32003


class CarrierError(VoiceCallError):
    """Raised when the carrier refused or failed a request (made by ``carrier_error``)."""

    rpc_code = -32004


class SpeechError(VoiceCallError):
    """Raised when speech could not be made: the TTS provider refused (status), timed out or
    was unreachable before its first audio byte, or the call's speech queue is full."""

    rpc_code = -32004


class TranscriptTimeout(VoiceCallError):
    """Raised when a continue got no final transcript within ``transcriptTimeoutMs``."""

    rpc_code = -32005


class InvalidInput(VoiceCallError):
    """Raised for input the daemon refuses: a non-E.164 number, an empty message."""

    rpc_code = -32006


class ProviderError(Exception):
    """The carrier refused or failed a request; ``message`` is safe to show a user."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.code = code


def carrier_error(exc: ProviderError) -> CarrierError:
    """The boundary between carriers and clients: the RPC error a carrier failure becomes."""
    return CarrierError(str(exc))


class WebhookRejected(Exception):
    """A carrier request we will not act on: answered ``status`` with the text ``public``.

    The message (``reason``) is for the log; ``public`` is all the sender is told.
    ``providers.rejected`` is the one renderer of a rejection as a response.
    """

    status: int = 400
    public: str = "bad request"

    def __init__(self, reason: str, *, status: int | None = None,
                 public: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        if status is not None:
            self.status = status
        if public is not None:
            self.public = public


class SignatureRejected(WebhookRejected):
    """Raised when a webhook's signature is missing, unverifiable or wrong (401)."""

    status = 401
    public = "invalid signature"


class WebhookParseError(WebhookRejected, ValueError):
    """The request is not a Twilio voice webhook we can read (400, with the reason)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, public=f"bad request: {reason}")


class TelnyxParseError(WebhookRejected, ValueError):
    """The body is not a Telnyx webhook envelope (400)."""


class BodyTooLarge(WebhookRejected):
    """A webhook body grew over ``webhookSecurity.maxBodyBytes`` while it was read (413)."""

    status = 413
    public = "request body too large"

    def __init__(self, reason: str = "body over the size cap") -> None:
        super().__init__(reason)


class NotSimple(Exception):
    """The bytes are not in the fast path's subset; let the full HTTP server have them.

    ``declined`` is (method, path, headers) when the head itself was plain and only one of its
    headers (``Transfer-Encoding``, say) is left to the full server: enough for the caller to
    refuse a request before that server would tell the client to go on (``100 Continue``).
    """

    def __init__(self, reason: str,
                 declined: tuple[str, str, dict[str, str]] | None = None) -> None:
        super().__init__(reason)
        self.declined = declined


class LineTooLong(Exception):
    """A JSON-RPC line over the limit; the splitter yields it in place of the line."""


class RpcError(Exception):
    """An error reply, raised by clients and by method handlers."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    @classmethod
    def from_reply(cls, error: dict[str, Any]) -> RpcError:
        return cls(int(error.get("code", _INTERNAL_ERROR)), str(error.get("message", "")),
                   error.get("data"))


class DaemonUnreachable(Exception):
    """No daemon answers on the control socket; the message says which and how to start it."""

    def __init__(self, path: str | PathLike[str], reason: str) -> None:
        super().__init__(
            f"voicecall daemon is not reachable at {path} ({reason}). "
            "Start it with `voicecall serve` (or pass --socket / set VOICECALL_SOCKET)."
        )
        self.path = path


class SocketInUse(Exception):
    """Another live daemon already listens on the control socket."""


class UsageError(Exception):
    """Raised by a command when its arguments make no sense together (exit 2)."""


class Failed(Exception):
    """Raised by a command when the operation failed; the message is shown as is (exit 1)."""


__all__ = [
    "BodyTooLarge",
    "CallNotConnected",
    "CallNotFound",
    "CarrierError",
    "ChatError",
    "ChatStreamError",
    "ConcurrencyLimit",
    "ConfigError",
    "DaemonStartError",
    "DaemonUnreachable",
    "Failed",
    "InvalidInput",
    "LineTooLong",
    "NotSimple",
    "ProviderError",
    "RpcError",
    "SignatureRejected",
    "SocketInUse",
    "SpeechError",
    "TelnyxParseError",
    "TranscriptTimeout",
    "TunnelError",
    "UsageError",
    "VoiceCallError",
    "WebhookParseError",
    "WebhookRejected",
    "carrier_error",
]


class JournalError(OSError):
    """The journal could not be written (disk full, I/O error); the message says why."""


class PeerClosed(Exception):
    """The fast front's peer went away or stalled: drop the connection."""


class ChatError(Exception):
    """A built-in reply failed: the LLM server's status and ``error.code``, if it answered."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None,
                 retryable: bool = False, retry_after: float | None = None,
                 tools_refused: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.retryable = retryable
        self.tools_refused = tools_refused  # a 400 about tools: the model takes none
        self.retry_after = retry_after  # seconds the server asked us to wait, if it did


class ChatStreamError(ChatError):
    """A reply stream that cannot be read: bad JSON, an error event, oversized, or cut short."""
