"""Telnyx Ed25519 webhook signatures against the SDK-made vectors, plus key forms."""

from __future__ import annotations

import base64
import json
import textwrap
from pathlib import Path
from typing import Any

import nacl.signing
import pytest

from voicecall_trio.providers.telnyx.signature import (
    ED25519_SPKI_PREFIX,
    ReplayCache,
    load_public_key,
    strict_b64decode,
    verify,
)

VECTORS = Path(__file__).resolve().parents[3] / "shared" / "vectors"
if not (VECTORS / "telnyx_signature.json").is_file():
    pytest.skip(f"Telnyx signature vectors not found in {VECTORS}", allow_module_level=True)

CASES: list[dict[str, Any]] = json.loads((VECTORS / "telnyx_signature.json").read_text("utf-8"))
KEYS: dict[str, str] = json.loads((VECTORS / "telnyx_test_key.json").read_text("utf-8"))
PUBLIC_B64 = KEYS["public_key_b64"]
SIGNER = nacl.signing.SigningKey(bytes.fromhex(KEYS["private_seed_hex_TEST_ONLY"]))
VALID = next(c for c in CASES if c["valid"] and c["timestamp"] == str(c["now"]))

# RFC 8410 section 10.1: an independent example of an Ed25519 SubjectPublicKeyInfo.
RFC8410_PEM = """-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=
-----END PUBLIC KEY-----
"""


def check(case: dict[str, Any], key: bytes | nacl.signing.VerifyKey, **override: Any) -> bool:
    args = {
        "raw_body": case["raw_body"].encode("utf-8"),
        "signature_header": case["signature_b64"],
        "timestamp_header": case["timestamp"],
        "now": case["now"],
        "key": key,
    }
    args.update(override)
    return verify(**args).ok


def der_of(raw: bytes) -> bytes:
    return ED25519_SPKI_PREFIX + raw


def pem_of(raw: bytes) -> str:
    body = "\n".join(textwrap.wrap(base64.b64encode(der_of(raw)).decode(), 64))
    return f"-----BEGIN PUBLIC KEY-----\n{body}\n-----END PUBLIC KEY-----\n"


def test_vectors_are_all_there() -> None:
    assert len(CASES) == 20
    assert {c["public_key_b64"] for c in CASES} == {PUBLIC_B64}


@pytest.mark.parametrize("case", CASES, ids=[f"{i:02d}" for i in range(len(CASES))])
def test_vector(case: dict[str, Any]) -> None:
    key = load_public_key(case["public_key_b64"])
    result = verify(
        case["raw_body"].encode("utf-8"),
        case["signature_b64"],
        case["timestamp"],
        case["now"],
        key,
    )
    assert result.ok is case["valid"], (case["note"], result.reason)
    assert result.ok is case["sdk_result"]["client_webhooks_unwrap"]


def test_rfc8410_pem_matches_our_der_prefix() -> None:
    der = base64.b64decode("".join(RFC8410_PEM.splitlines()[1:-1]))
    assert der.startswith(ED25519_SPKI_PREFIX)
    assert load_public_key(RFC8410_PEM) == der[len(ED25519_SPKI_PREFIX):]


def test_der_and_pem_forms_of_the_test_key_verify() -> None:
    raw = base64.b64decode(PUBLIC_B64)
    der_b64 = base64.b64encode(der_of(raw)).decode()
    assert len(der_of(raw)) == 44
    for text in (PUBLIC_B64, der_b64, pem_of(raw), "  " + pem_of(raw).replace("\n", "\r\n")):
        key = load_public_key(text)
        assert key == raw
        assert check(VALID, key)


def test_wrong_key_fails() -> None:
    wrong = load_public_key(KEYS["wrong_key_public_b64"])
    assert not check(VALID, wrong)


def test_verify_key_object_is_accepted() -> None:
    assert check(VALID, nacl.signing.VerifyKey(load_public_key(PUBLIC_B64)))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "not a key!",
        base64.b64encode(b"\x01" * 31).decode(),  # too short
        base64.b64encode(b"\x01" * 33).decode(),  # neither raw nor DER
        base64.urlsafe_b64encode(b"\xfb" * 32).decode(),  # url-safe alphabet
        base64.b64encode(b"\x01" * 32).decode().rstrip("="),  # unpadded
        base64.b64encode(b"\x30" * 12 + b"\x01" * 32).decode(),  # 44 bytes, not SPKI
        "-----BEGIN PUBLIC KEY-----\nnot*base64\n-----END PUBLIC KEY-----",
        "-----BEGIN PUBLIC KEY-----\nMCow\n",  # no END line
        "-----BEGIN RSA PUBLIC KEY-----\nAAAA\n-----END RSA PUBLIC KEY-----",
    ],
)
def test_bad_key_text_names_the_config_key(text: str) -> None:
    with pytest.raises(ValueError, match=r"telnyx\.publicKey"):
        load_public_key(text)


def test_missing_key_names_the_config_key() -> None:
    with pytest.raises(ValueError, match=r"telnyx\.publicKey"):
        load_public_key(None)


def sign(ts: str, body: bytes) -> str:
    return base64.b64encode(SIGNER.sign(ts.encode() + b"|" + body).signature).decode()


@pytest.mark.parametrize("ts", [" 1736850000", "+1736850000", "1736850000.0", "1_736_850_000",
                                "-1", "", "\uff11" * 10])
def test_timestamp_must_be_plain_integer(ts: str) -> None:
    body = VALID["raw_body"].encode()
    key = load_public_key(PUBLIC_B64)
    assert not verify(body, sign(ts, body), ts, VALID["now"], key).ok


def test_missing_headers_fail() -> None:
    key = load_public_key(PUBLIC_B64)
    assert not check(VALID, key, signature_header=None)
    assert not check(VALID, key, timestamp_header="")


def test_window_is_inclusive_at_300_seconds_both_ways() -> None:
    body = VALID["raw_body"].encode()
    key = load_public_key(PUBLIC_B64)
    now = VALID["now"]
    for delta, ok in ((300, True), (-300, True), (301, False), (-301, False), (400, False)):
        ts = str(now + delta)
        assert verify(body, sign(ts, body), ts, now, key).ok is ok, delta


def test_non_canonical_base64_is_refused() -> None:
    assert strict_b64decode("QQ==") == b"A"
    assert strict_b64decode("QR==") is None  # same bytes, non-zero padding bits
    assert strict_b64decode("QQ") is None
    assert strict_b64decode("Q-==") is None
    assert strict_b64decode("QQ==\n") is None


def test_replay_cache_remembers_until_the_window_passes() -> None:
    cache = ReplayCache(max_entries=3)
    now = 1_000_000.0
    assert not cache.seen(b"a", 1_000_000, now)
    assert cache.seen(b"a", 1_000_000, now + 10)
    assert cache.seen(b"a", 1_000_000, now + 300)
    assert not cache.seen(b"a", 1_000_000, now + 301)  # expired: the window refuses it anyway
    for sig in (b"b", b"c", b"d", b"e"):
        cache.seen(sig, 1_000_400, now + 400)
    assert len(cache) == 3  # bounded
