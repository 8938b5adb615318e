"""Twilio webhook signatures (``X-Twilio-Signature``) and the URL they were computed over.

Pure: no trio, no httpx. Two halves:

* ``compute_signature`` / ``validate`` do exactly what twilio-python's ``RequestValidator``
  does (checked against ``shared/vectors/twilio_signature.json``): the signed string is the
  URL followed by every sorted key with its sorted values; the URL is tried both without
  its port and with the scheme's default port, because Twilio signs whichever form it was
  given; JSON bodies are covered by a ``bodySHA256`` query parameter instead of params.
* ``reconstruct_urls`` decides *which* URL Twilio signed, since behind a tunnel or proxy
  our server never sees it. The configured ``publicUrl`` wins over the request's Host;
  forwarding headers are believed only from sources the operator trusts, and the host
  they name must be allowed; a local tunnel agent, which relays whatever the client
  wrote, may name only the tunnel's own host. None of this can turn a bad signature into
  a good one: it only picks candidate URLs, each of which must still match the HMAC; the
  host rules stop a request signed for *another* host from being replayed here.

The result (``SignatureCheck``) names the URLs tried so logs and ``doctor`` can show what
was checked; the auth token never appears in it.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal
from urllib.parse import parse_qs, urlsplit

from ..forms import form_pairs

if TYPE_CHECKING:
    from ...config import VoiceCallConfig
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


# -- the HMAC, as twilio-python computes it --------------------------------------------


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


def _split_netloc(url: str) -> tuple[str, str, str, str] | None:
    """(scheme, netloc, host-without-port, rest) with ``rest`` verbatim, or None."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        return None
    if not parts.scheme or not parts.netloc:
        return None
    prefix = f"{parts.scheme}://{parts.netloc}"
    if not url.startswith(prefix):
        return None
    netloc = parts.netloc
    userinfo, _, hostport = netloc.rpartition("@")
    if hostport.startswith("["):
        host = hostport[: hostport.find("]") + 1]
    else:
        host = hostport.split(":", 1)[0]
    bare = f"{userinfo}@{host}" if userinfo else host
    return parts.scheme, netloc, bare, url[len(prefix) :]


def port_variants(url: str) -> tuple[str, ...]:
    """The URL without any port, then with the scheme's default port (Twilio's two tries).

    A URL that already has a port keeps it for the second try, as twilio-python does.
    """
    base, mark, query = url.partition("?")  # only the origin varies; the query rides along
    return tuple(variant + mark + query for variant in _base_variants(base))


@functools.lru_cache(maxsize=64)
def _base_variants(url: str) -> tuple[str, ...]:
    split = _split_netloc(url)
    if split is None:
        return (url,)
    scheme, netloc, bare, rest = split
    without = f"{scheme}://{bare}{rest}"
    if netloc != bare:  # has a port
        with_port = url
    else:
        with_port = f"{scheme}://{netloc}:{443 if scheme == 'https' else 80}{rest}"
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


# -- which URL did Twilio sign? -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UrlPolicy:
    """The operator's answers to "whom do I believe about the public URL?"."""

    public_url: str | None = None
    allowed_hosts: tuple[str, ...] = ()
    trust_forwarding_headers: bool = False
    trusted_proxy_ips: tuple[str, ...] = ()
    ngrok_loopback: bool = False  # an ngrok agent on this host may vouch for X-Forwarded-*

    @classmethod
    def from_config(cls, config: VoiceCallConfig, public_url: str | None = None) -> UrlPolicy:
        sec = config.webhook_security
        return cls(
            public_url=public_url or config.public_url,
            allowed_hosts=tuple(h.strip().lower() for h in sec.allowed_hosts if h.strip()),
            trust_forwarding_headers=sec.trust_forwarding_headers,
            trusted_proxy_ips=tuple(sec.trusted_proxy_i_ps),
            ngrok_loopback=(
                config.tunnel.provider == "ngrok" and config.tunnel.allow_ngrok_free_tier
            ),
        )


@dataclass(frozen=True, slots=True)
class Reconstruction:
    """Candidate signed URLs (before port variants), where they came from, or why none."""

    urls: tuple[str, ...]
    source: str  # "forwarded" | "publicUrl" | "host"
    error: str | None = None


def _ip(addr: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    addr = addr.strip()
    for candidate in (addr, addr.rsplit(":", 1)[0], addr.strip("[]"), addr.split("]")[0][1:]):
        try:
            return ipaddress.ip_address(candidate)
        except ValueError:
            continue
    return None


def _in_networks(addr: str, networks: Iterable[str]) -> bool:
    ip = _ip(addr)
    if ip is None:
        return False
    for net in networks:
        try:
            if ip in ipaddress.ip_network(net.strip(), strict=False):
                return True
        except ValueError:
            continue
    return False


ForwardingTrust = Literal["proxy", "tunnel"]


def forwarding_trust(policy: UrlPolicy, remote_addr: str) -> ForwardingTrust | None:
    """Whose forwarded headers these are: a proxy the operator trusts, a local tunnel agent
    (ngrok on loopback), or nobody's (``None``: they are not read)."""
    if policy.trust_forwarding_headers:
        return "proxy"
    if policy.trusted_proxy_ips and _in_networks(remote_addr, policy.trusted_proxy_ips):
        return "proxy"
    if not policy.ngrok_loopback:
        return None
    ip = _ip(remote_addr)
    return "tunnel" if ip is not None and ip.is_loopback else None


def trusts_forwarding(policy: UrlPolicy, remote_addr: str) -> bool:
    """Forwarded headers count only from a trusted proxy (or a local ngrok agent)."""
    return forwarding_trust(policy, remote_addr) is not None


def _bare_host(host: str) -> str:
    host = host.strip().lower()
    return host[: host.find("]") + 1] if host.startswith("[") else host.split(":", 1)[0]


def tunnel_vouches_for(policy: UrlPolicy, host: str) -> bool:
    """A forwarded host a tunnel agent may name: the tunnel's own host (that of the public
    URL in force, which the tunnel reported) or one listed in ``allowedHosts``.

    Anyone on the internet can put ``X-Forwarded-Host`` on a request that the tunnel then
    relays from loopback, so with no known public URL and no list, no host is believed:
    otherwise a request signed for another host could be replayed here by naming that host.
    """
    if policy.allowed_hosts and host_allowed(policy, host):
        return True
    if not policy.public_url:
        return False
    split = _split_netloc(policy.public_url)
    return split is not None and _bare_host(split[2].rpartition("@")[2]) == _bare_host(host)


def host_allowed(policy: UrlPolicy, host: str) -> bool:
    """True when ``allowedHosts`` is empty or names this host (port optional, ``*.`` ok)."""
    if not policy.allowed_hosts:
        return True
    host = host.strip().lower()
    bare = _bare_host(host)
    for entry in policy.allowed_hosts:
        if entry in (host, bare):
            return True
        if entry.startswith("*.") and bare.endswith(entry[1:]):
            return True
    return False


def _first(value: str | None) -> str:
    return (value or "").split(",")[0].strip()


def _forwarded_pair(headers: Mapping[str, str]) -> tuple[str, str]:
    """(proto, host) from X-Forwarded-*, X-Original-Host or RFC 7239 ``Forwarded``."""
    proto = _first(headers.get("x-forwarded-proto"))
    host = _first(headers.get("x-forwarded-host")) or _first(headers.get("x-original-host"))
    for item in _first(headers.get("forwarded")).split(";"):
        key, _, value = item.strip().partition("=")
        value = value.strip().strip('"')
        if key.lower() == "proto" and not proto:
            proto = value
        elif key.lower() == "host" and not host:
            host = value
    port = _first(headers.get("x-forwarded-port"))
    default_port = "443" if (proto or "https") == "https" else "80"
    if host and port.isdigit() and port != default_port and ":" not in host.rsplit("]", 1)[-1]:
        host = f"{host}:{port}"
    return proto.lower(), host


def _with_query(base: str, query_string: str) -> str:
    return f"{base}?{query_string}" if query_string else base


def reconstruct_urls(
    policy: UrlPolicy,
    *,
    path: str,
    query_string: str,
    headers: Mapping[str, str],
    scheme: str,
    host: str,
    remote_addr: str,
) -> Reconstruction:
    """The URL(s) Twilio may have signed for this request; the query is kept verbatim.

    Order of belief: trusted forwarding headers, then ``publicUrl`` (its scheme and host,
    the request's path; its own path too when a proxy rewrote the path), then the request's
    own Host header and scheme. A host that did not come from ``publicUrl`` must be in
    ``allowedHosts`` when that list is set. Headers relayed by a tunnel agent (``tunnel``
    trust, not a proxy the operator named) name a host only when ``tunnel_vouches_for`` it;
    any other forwarded host is ignored, as if the header were absent.
    """
    trust = forwarding_trust(policy, remote_addr)
    if trust is not None:
        f_proto, f_host = _forwarded_pair(headers)
        if trust == "tunnel":
            # a tunnel relays whatever the client wrote: believe its proto (it only picks
            # http or https), and a host only if it is the tunnel's own (or listed)
            if f_proto in ("http", "https"):
                scheme = f_proto
            if f_host and tunnel_vouches_for(policy, f_host):
                return Reconstruction((_with_query(f"{scheme}://{f_host}{path}",
                                                   query_string),), "forwarded")
        elif f_proto or f_host:
            f_host = f_host or host
            if not host_allowed(policy, f_host):
                return Reconstruction((), "forwarded", f"forwarded host not allowed: {f_host}")
            proto = f_proto if f_proto in ("http", "https") else scheme
            return Reconstruction((_with_query(f"{proto}://{f_host}{path}", query_string),),
                                  "forwarded")
    if policy.public_url:
        split = _split_netloc(policy.public_url)
        if split is None:
            return Reconstruction((), "publicUrl", "publicUrl is not an absolute URL")
        p_scheme, p_netloc, _, _ = split
        origin = f"{p_scheme}://{p_netloc}"
        urls = [_with_query(origin + path, query_string)]
        p_path = urlsplit(policy.public_url).path
        if p_path not in ("", "/", path):
            urls.append(_with_query(origin + p_path, query_string))
        return Reconstruction(tuple(urls), "publicUrl")
    if not host:
        return Reconstruction((), "host", "request has no Host header")
    if not host_allowed(policy, host):
        return Reconstruction((), "host", f"host not allowed: {host}")
    return Reconstruction((_with_query(f"{scheme}://{host}{path}", query_string),), "host")


def reconstruct_for(policy: UrlPolicy, request: WebhookRequest) -> Reconstruction:
    return reconstruct_urls(
        policy,
        path=request.path,
        query_string=request.query_string,
        headers=request.headers,
        scheme=request.scheme,
        host=request.host or request.headers.get("host", ""),
        remote_addr=request.remote_addr,
    )


def _is_json(headers: Mapping[str, str]) -> bool:
    return "json" in headers.get("content-type", "").lower()


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
