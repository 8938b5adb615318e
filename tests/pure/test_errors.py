"""The error tree's values: codes, statuses and public texts (pure)."""

from __future__ import annotations

import subprocess
import sys

from voicecall_trio import errors
from voicecall_trio.providers import rejected
from voicecall_trio.rpc.client import DaemonUnreachable
from voicecall_trio.rpc.protocol import RpcError


def test_rpc_codes_are_the_documented_ones() -> None:
    codes = {cls.__name__: cls.rpc_code for cls in (
        errors.VoiceCallError, errors.CallNotFound, errors.CallNotConnected,
        errors.ConcurrencyLimit, errors.CarrierError, errors.TranscriptTimeout,
        errors.InvalidInput)}
    assert codes == {"VoiceCallError": -32000, "CallNotFound": -32001,
                     "CallNotConnected": -32002, "ConcurrencyLimit": -32003,
                     "CarrierError": -32004, "TranscriptTimeout": -32005,
                     "InvalidInput": -32006}
    assert errors.CallNotFound().message == "Call not found"


def test_carrier_error_is_the_one_boundary() -> None:
    failure = errors.carrier_error(errors.ProviderError("Twilio 21215: geo", status=400))
    assert isinstance(failure, errors.CarrierError) and failure.message == "Twilio 21215: geo"


def test_rejections_carry_status_and_public_text_only() -> None:
    parse = errors.WebhookParseError("missing CallSid")
    assert isinstance(parse, ValueError)
    assert rejected(parse).status == 400 and rejected(parse).body == b"bad request: missing CallSid"
    telnyx = errors.TelnyxParseError("not a Telnyx webhook: empty event_type or id")
    assert (rejected(telnyx).status, rejected(telnyx).body) == (400, b"bad request")
    signature = errors.SignatureRejected("signature does not match")
    assert (rejected(signature).status, rejected(signature).body) == (401, b"invalid signature")
    assert errors.BodyTooLarge().status == 413


def test_public_names_are_the_tree_s_classes() -> None:
    assert DaemonUnreachable is errors.DaemonUnreachable
    assert RpcError is errors.RpcError


def test_errors_module_imports_only_the_standard_library() -> None:
    code = ("import sys; import voicecall_trio.errors; "
            "print(sorted(m for m in ('trio', 'quart', 'httpx', 'msgspec') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=30)
    assert out.stdout.strip() == "[]"
