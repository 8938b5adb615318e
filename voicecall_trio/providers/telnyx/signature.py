"""Telnyx webhook signatures (Ed25519), verified fail-closed and without I/O.

Telnyx signs ``<telnyx-timestamp>|<raw body bytes>`` with Ed25519 and sends the base64
signature in ``telnyx-signature-ed25519``. We accept exactly what the official SDK accepts
(the vectors in ``shared/vectors/telnyx_signature.json``), and are stricter where being lax
buys nothing: base64 must be the standard alphabet, padded and canonical, so one signature
has one spelling and the replay cache cannot be dodged by re-encoding it.

The public key comes from the Telnyx portal as raw base64 (32 bytes); we also take base64
DER SubjectPublicKeyInfo and PEM, which is what other tools print for the same key.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections import OrderedDict
from dataclasses import dataclass

import nacl.exceptions
import nacl.signing

WINDOW_S = 300  # the SDK rejects only when |now - ts| > 300
SIGNATURE_HEADER = "telnyx-signature-ed25519"
TIMESTAMP_HEADER = "telnyx-timestamp"
# DER SubjectPublicKeyInfo for Ed25519 (OID 1.3.101.112) up to the 32 key bytes.
ED25519_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")
_KEY_NAME = "telnyx.publicKey"
_B64 = re.compile(r"\A(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?\Z")
_TIMESTAMP = re.compile(r"\A[0-9]{1,15}\Z")
_PEM = re.compile(
    r"-----BEGIN PUBLIC KEY-----(?P<body>[A-Za-z0-9+/=\s]*)-----END PUBLIC KEY-----"
)


@dataclass(frozen=True, slots=True)
class VerifyResult:
    ok: bool
    reason: str  # why it failed, safe to log (never contains key material)


def strict_b64decode(text: str) -> bytes | None:
    """Standard-alphabet, padded, canonical base64; anything else is ``None``."""
    if not _B64.match(text):
        return None
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    # Non-zero trailing bits decode too; only the canonical spelling is accepted.
    if base64.b64encode(raw).decode("ascii") != text:
        return None
    return raw


def load_public_key(text: str | None) -> bytes:
    """The 32-byte Ed25519 key from raw base64, base64 DER SPKI or PEM text."""
    if text is None or not text.strip():
        raise ValueError(f"{_KEY_NAME}: missing (the Ed25519 public key from the Telnyx portal)")
    value = text.strip()
    if value.startswith("-----BEGIN"):
        match = _PEM.search(value)
        if match is None:
            raise ValueError(f"{_KEY_NAME}: PEM text is not a '-----BEGIN PUBLIC KEY-----' block")
        der = strict_b64decode("".join(match.group("body").split()))
        if der is None:
            raise ValueError(f"{_KEY_NAME}: PEM body is not valid base64")
        return _from_der(der)
    raw = strict_b64decode(value)
    if raw is None:
        raise ValueError(f"{_KEY_NAME}: not valid base64 (standard alphabet, with padding)")
    if len(raw) == 32:
        return _checked(raw)
    if len(raw) == len(ED25519_SPKI_PREFIX) + 32:
        return _from_der(raw)
    raise ValueError(
        f"{_KEY_NAME}: decodes to {len(raw)} bytes; expected a 32-byte Ed25519 key "
        "(or 44-byte DER, or PEM)"
    )


def _from_der(der: bytes) -> bytes:
    if len(der) != len(ED25519_SPKI_PREFIX) + 32 or not der.startswith(ED25519_SPKI_PREFIX):
        raise ValueError(f"{_KEY_NAME}: DER key is not an Ed25519 SubjectPublicKeyInfo")
    return _checked(der[len(ED25519_SPKI_PREFIX) :])


def _checked(raw: bytes) -> bytes:
    try:
        nacl.signing.VerifyKey(raw)
    except (nacl.exceptions.CryptoError, ValueError, TypeError):
        raise ValueError(f"{_KEY_NAME}: not a usable Ed25519 public key") from None
    return raw


def parse_timestamp(value: str) -> int | None:
    """Whole seconds as plain ASCII digits; signs, fractions and spaces are refused."""
    return int(value) if _TIMESTAMP.match(value) else None


def decode_signature(value: str) -> bytes | None:
    raw = strict_b64decode(value)
    return raw if raw is not None and len(raw) == 64 else None


def verify(
    raw_body: bytes,
    signature_header: str | None,
    timestamp_header: str | None,
    now: float,
    key: bytes | nacl.signing.VerifyKey,
) -> VerifyResult:
    """Check one delivery: headers present, timestamp in window, signature over ``ts|body``."""
    if not signature_header or not timestamp_header:
        return VerifyResult(False, "missing telnyx-signature-ed25519 or telnyx-timestamp header")
    ts = parse_timestamp(timestamp_header)
    if ts is None:
        return VerifyResult(False, "telnyx-timestamp is not an integer")
    if abs(now - ts) > WINDOW_S:
        return VerifyResult(False, f"timestamp outside the {WINDOW_S} s window")
    signature = decode_signature(signature_header)
    if signature is None:
        return VerifyResult(False, "signature is not 64 bytes of standard base64")
    verify_key = key if isinstance(key, nacl.signing.VerifyKey) else nacl.signing.VerifyKey(key)
    try:
        verify_key.verify(timestamp_header.encode("ascii") + b"|" + raw_body, signature)
    except nacl.exceptions.BadSignatureError:
        return VerifyResult(False, "signature does not match")
    return VerifyResult(True, "ok")


class ReplayCache:
    """Remembers accepted signatures until their timestamp leaves the window.

    A verified delivery sent again byte for byte carries the same signature; it must not act
    twice. Entries expire once ``ts + WINDOW_S`` has passed (the timestamp check rejects the
    replay from then on); ``max_entries`` bounds memory under a flood, evicting oldest first.
    """

    def __init__(self, max_entries: int = 10_000) -> None:
        self._max = max(1, max_entries)
        self._expiry: OrderedDict[bytes, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._expiry)

    def seen(self, signature: bytes, timestamp: int, now: float) -> bool:
        """True when ``signature`` was already accepted; otherwise remember it, return False."""
        self._prune(now)
        if signature in self._expiry:
            return True
        self._expiry[signature] = timestamp + WINDOW_S
        while len(self._expiry) > self._max:
            self._expiry.popitem(last=False)
        return False

    def _prune(self, now: float) -> None:
        # Insertion order is close to expiry order; stop at the first live entry.
        while self._expiry:
            sig, expires = next(iter(self._expiry.items()))
            if expires >= now:
                break
            del self._expiry[sig]
