"""Twilio webhook signatures (``X-Twilio-Signature``) and the URL they were computed over.

Pure: no trio, no httpx. Two halves, the second in ``signed_url``:

* ``compute_signature`` / ``validate`` do exactly what twilio-python's ``RequestValidator``
  does (checked against ``shared/vectors/twilio_signature.json``): the signed string is the
  URL followed by every sorted key with its sorted values; the URL is tried both without
  its port and with the scheme's default port, because Twilio signs whichever form it was
  given; JSON bodies are covered by a ``bodySHA256`` query parameter instead of params.
* ``signed_url.reconstruct_urls`` decides *which* URL Twilio signed, since behind a tunnel
  or proxy our server never sees it; ``verify_request`` checks every candidate it gives.

The result (``SignatureCheck``) names the URLs tried so logs and ``doctor`` can show what
was checked; the auth token never appears in it.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal
from urllib.parse import parse_qs, urlsplit

from ...errors import SignatureRejected
from ..forms import form_pairs
from .signed_url import UrlPolicy, reconstruct_for, reconstruct_urls, split_netloc

if TYPE_CHECKING:
    from .. import WebhookRequest

Algorithm = Literal["HMAC_SHA1", "HMAC_SHA256"]
Params = Mapping[str, str | Sequence[str]] | Iterable[tuple[str, str]]

SIGNATURE_HEADER = "x-twilio-signature"
SETTINGS_HEADER = "x-twilio-webhooks-signature-settings"
_DIGESTS = {"HMAC_SHA1": hashlib.sha1, "HMAC_SHA256": hashlib.sha256}


@dataclass(frozen=True, slots=True)
class SignatureCheck:
    """Outcome of one verification; ``url`` is the candidate that matched (or the first)."""

    ok: bool
    reason: str
    tried_urls: tuple[str, ...] = ()
    url: str | None = None
    algorithm: str = "HMAC_SHA1"

    def rejection(self) -> SignatureRejected:
        """The rejection of a failed check: 401, "missing signature" or "invalid signature"."""
        return SignatureRejected(self.reason, public="missing signature"
                                 if self.reason == "missing signature" else "invalid signature")


def _grouped(params: Params) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    items: Iterable[tuple[str, str | Sequence[str]]]
    items = params.items() if isinstance(params, Mapping) else params
    for key, value in items:
        values = [value] if isinstance(value, str) else list(value)
        out.setdefault(key, []).extend(values)
    return out


def _params_string(params: Params) -> str:
    """Each key (sorted) followed by each of its distinct values (sorted)."""
    if isinstance(params, list | tuple):  # decoded form pairs: sorting the pairs is the same
        return "".join(key + value for key, value in sorted(set(params)))
    grouped = _grouped(params)
    return "".join(key + value for key in sorted(grouped) for value in sorted(set(grouped[key])))


def signed_string(url: str, params: Params) -> str:
    """URL + each key (sorted) followed by each of its distinct values (sorted)."""
    return url + _params_string(params)


def _sign(auth_token: str, text: str, algorithm: Algorithm) -> str:
    # "surrogatepass": a lone surrogate (only from a caller's own str, never from the wire,
    # which is decoded as latin-1 / UTF-8) must give "no match", not a UnicodeEncodeError
    data = text.encode("utf-8", "surrogatepass")
    digest = hmac.digest(auth_token.encode(), data, _DIGESTS[algorithm])
    return base64.b64encode(digest).decode("ascii")


def compute_signature(
    auth_token: str, url: str, params: Params, algorithm: Algorithm = "HMAC_SHA1"
) -> str:
    return _sign(auth_token, signed_string(url, params), algorithm)


def body_sha256(body: bytes | str) -> str:
    raw = body.encode("utf-8") if isinstance(body, str) else body
    return hashlib.sha256(raw).hexdigest()


def _same(a: str, b: str) -> bool:
    """Constant-time, and safe for non-ASCII input (``compare_digest`` on str is not)."""
    return hmac.compare_digest(a.encode("utf-8", "replace"), b.encode("utf-8", "replace"))


def port_variants(url: str) -> tuple[str, ...]:
    """The URL without any port, then with the scheme's default port (Twilio's two tries).

    A URL that already has a port keeps it for the second try, as twilio-python does.
    """
    base, mark, query = url.partition("?")  # only the origin varies; the query rides along
    return tuple(variant + mark + query for variant in _base_variants(base))


@functools.lru_cache(maxsize=64)
def _base_variants(url: str) -> tuple[str, ...]:
    split = split_netloc(url)
    if split is None:
        return (url,)
    scheme, netloc, bare, rest = split
    without = f"{scheme}://{bare}{rest}"
    if netloc != bare:  # has a port
        with_port = url
    else:
        default = 443 if scheme in ("https", "wss") else 80  # wss: the media stream's URL
        with_port = f"{scheme}://{netloc}:{default}{rest}"
    return (without,) if without == with_port else (without, with_port)


def validate(
    auth_token: str,
    url: str,
    params: Params,
    signature: str,
    *,
    algorithm: Algorithm = "HMAC_SHA1",
    body: bytes | str | None = None,
) -> SignatureCheck:
    """``RequestValidator.validate``: ``body`` is the raw body of a JSON-body request."""
    hash_ok = True
    if body is not None and (expected_hash := _body_hash_param(urlsplit(url).query)):
        hash_ok = _same(body_sha256(body), expected_hash)
        params = ()
    tried = port_variants(url)
    suffix = _params_string(params)  # the same for every candidate URL
    matched = None
    # the URL as rebuilt is the likeliest to match, so it goes first (one HMAC, not two)
    for candidate in sorted(tried, key=lambda u: u != url):
        if _same(signature, _sign(auth_token, candidate + suffix, algorithm)):
            matched = candidate
            break
    if not hash_ok:
        return SignatureCheck(False, "body hash mismatch", tried, matched, algorithm)
    if matched is None:
        return SignatureCheck(False, "invalid signature", tried, tried[0], algorithm)
    return SignatureCheck(True, "ok", tried, matched, algorithm)


def _body_hash_param(query: str) -> str | None:
    """The query's first non-blank ``bodySHA256``, as twilio-python's ``parse_qs`` finds it.

    ``parse_qs`` only runs when the name could be there (plainly or percent-encoded): most
    webhooks have neither, and this runs on every one.
    """
    if "bodySHA256" not in query and "%" not in query:
        return None
    values = parse_qs(query).get("bodySHA256")
    return values[0] if values else None


def algorithm_of(headers: Mapping[str, str]) -> Algorithm | None:
    """HMAC-SHA256 when the settings header says so; None for an algorithm we don't know."""
    settings = headers.get(SETTINGS_HEADER, "")
    for item in settings.replace(";", ",").split(","):
        key, _, value = item.partition("=")
        if key.strip().lower() == "algorithm":
            name = value.strip().upper().replace("-", "_")
            if name in _DIGESTS:
                return "HMAC_SHA256" if name == "HMAC_SHA256" else "HMAC_SHA1"
            return None
    return "HMAC_SHA1"


def form_params(body: bytes) -> list[tuple[str, str]]:
    """Form pairs as a web framework would decode them (lenient; empty values kept)."""
    return form_pairs(body.decode("utf-8", "replace"))


def _is_json(headers: Mapping[str, str]) -> bool:
    return "json" in headers.get("content-type", "").lower()


_WS_SCHEMES = {"https": "wss", "http": "ws"}


def verify_upgrade(
    auth_token: str | None, policy: UrlPolicy, request: WebhookRequest,
    stream_url: str | None = None,
) -> SignatureCheck:
    """Verify a media-stream upgrade: the signature is over the ``wss://`` stream URL as the
    TwiML gave it (``stream_url``, first), without parameters and without a body.

    The other candidates are rebuilt as for a webhook (``publicUrl``, trusted forwarding
    headers, Host; port variants), with the request's query dropped (Twilio signs the URL
    it was given, which has none) and the scheme mapped https -> wss, http -> ws.
    """
    signature = request.headers.get(SIGNATURE_HEADER, "").strip()
    if not signature:
        return SignatureCheck(False, "missing signature")
    if not auth_token:
        return SignatureCheck(False, "no auth token configured (twilio.authToken)")
    algorithm = algorithm_of(request.headers)
    if algorithm is None:
        return SignatureCheck(False, "unsupported signature algorithm")
    rebuilt = reconstruct_urls(policy, path=request.path, query_string="",
                               headers=request.headers, scheme=request.scheme,
                               host=request.host or request.headers.get("host", ""),
                               remote_addr=request.remote_addr)
    candidates = [stream_url] if stream_url else []
    for url in rebuilt.urls:
        scheme, sep, rest = url.partition("://")
        mapped = f"{_WS_SCHEMES.get(scheme, scheme)}{sep}{rest}"
        if mapped not in candidates:
            candidates.append(mapped)
    if not candidates:
        return SignatureCheck(False, rebuilt.error or "no stream URL to check",
                              algorithm=algorithm)
    tried: list[str] = []
    for url in candidates:
        check = validate(auth_token, url, (), signature, algorithm=algorithm)
        tried.extend(u for u in check.tried_urls if u not in tried)
        if check.ok:
            return SignatureCheck(True, "ok", tuple(tried), check.url, algorithm)
    return SignatureCheck(False, "invalid signature", tuple(tried), tried[0], algorithm)


def verify_request(
    auth_token: str | None, policy: UrlPolicy, request: WebhookRequest,
    *, form: Sequence[tuple[str, str]] | None = None,
) -> SignatureCheck:
    """Verify a webhook as received: rebuild the URL, then ``validate`` every candidate.

    ``form`` is the body's form pairs when the caller has decoded them already.
    """
    signature = request.headers.get(SIGNATURE_HEADER, "").strip()
    if not signature:
        return SignatureCheck(False, "missing signature")
    if not auth_token:
        return SignatureCheck(False, "no auth token configured (twilio.authToken)")
    algorithm = algorithm_of(request.headers)
    if algorithm is None:
        return SignatureCheck(False, "unsupported signature algorithm")
    rebuilt = reconstruct_for(policy, request)
    if rebuilt.error:
        return SignatureCheck(False, rebuilt.error, algorithm=algorithm)
    has_hash = _body_hash_param(request.query_string) is not None
    if _is_json(request.headers) and not has_hash:
        return SignatureCheck(False, "JSON body without bodySHA256", algorithm=algorithm)
    params: Params = () if has_hash else form if form is not None else form_params(request.body)
    body = request.body if has_hash else None
    tried: list[str] = []
    last: SignatureCheck | None = None
    for url in rebuilt.urls:
        check = validate(auth_token, url, params, signature, algorithm=algorithm, body=body)
        tried.extend(u for u in check.tried_urls if u not in tried)
        if check.ok:
            return SignatureCheck(True, "ok", tuple(tried), check.url, algorithm)
        last = check
    reason = last.reason if last else "invalid signature"
    return SignatureCheck(False, reason, tuple(tried), tried[0] if tried else None, algorithm)
