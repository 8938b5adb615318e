"""The exception tree. Each error knows how it is shown to a JSON-RPC client.

::

    VoiceCallError                     -32000  generic application error
    ├── ConfigError                            bad config (key path in the message)
    ├── CallNotFound                   -32001  "Call not found"
    ├── CallNotConnected               -32002  call not connected or already ended
    ├── ConcurrencyLimit               -32003  "Maximum concurrent calls (N) reached"
    ├── CarrierError                   -32004  the carrier refused or failed
    ├── TranscriptTimeout              -32005  no final transcript in time
    └── InvalidInput                   -32006  e.g. a non-E.164 number

``providers.ProviderError`` (raised by carrier shells) is turned into ``CarrierError``
at the supervisor boundary.
"""

from __future__ import annotations


class VoiceCallError(Exception):
    rpc_code: int = -32000

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(VoiceCallError):
    pass


class CallNotFound(VoiceCallError):
    rpc_code = -32001

    def __init__(self, message: str = "Call not found") -> None:
        super().__init__(message)


class CallNotConnected(VoiceCallError):
    rpc_code = -32002


class ConcurrencyLimit(VoiceCallError):
    rpc_code = -32003


class CarrierError(VoiceCallError):
    rpc_code = -32004


class TranscriptTimeout(VoiceCallError):
    rpc_code = -32005


class InvalidInput(VoiceCallError):
    rpc_code = -32006
