"""Which URL did Twilio sign? Behind a tunnel or a proxy our server never sees it.

Twilio's HMAC (``signature``) covers the full URL it requested, which the request as we
receive it does not carry. This module rebuilds the candidates from what the operator told
us (``UrlPolicy``: ``publicUrl``, ``webhookSecurity.*``, an ngrok tunnel) and from the request.
The configured ``publicUrl`` wins over the request's Host; forwarding headers are believed
only from sources the operator trusts, and the host they name must be allowed; a local tunnel
agent, which relays whatever the client wrote, may name only the tunnel's own host. None of
this can turn a bad signature into a good one: it only picks candidate URLs, each of which
must still match the HMAC; the host rules stop a request signed for *another* host from being
replayed here.

Pure: no trio, no httpx.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from ...config import VoiceCallConfig
    from .. import WebhookRequest


def split_netloc(url: str) -> tuple[str, str, str, str] | None:
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


@dataclass(frozen=True, slots=True)
class UrlPolicy:
    """The operator's answers to "whom do I believe about the public URL?"."""

    public_url: str | None = None
    allowed_hosts: tuple[str, ...] = ()
    trust_forwarding_headers: bool = False
    trusted_proxy_ips: tuple[str, ...] = ()
    ngrok_loopback: bool = False  # an ngrok agent on this host may vouch for X-Forwarded-*
    # ``public_url`` is the one a supervised tunnel reported: signatures are checked against
    # it only (no proxy's or allowedHosts' host is believed instead; see ``reconstruct_urls``)
    tunnel_url: bool = False

    @classmethod
    def from_config(cls, config: VoiceCallConfig, public_url: str | None = None) -> UrlPolicy:
        """``public_url``: the URL in force when it is not ``publicUrl`` (a tunnel's; the
        daemon starts no tunnel when ``publicUrl`` is set)."""
        sec = config.webhook_security
        return cls(
            public_url=public_url or config.public_url,
            tunnel_url=bool(public_url) and public_url != config.public_url,
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
    if policy.allowed_hosts and not policy.tunnel_url and host_allowed(policy, host):
        return True
    if not policy.public_url:
        return False
    split = split_netloc(policy.public_url)
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
    any other forwarded host is ignored, as if the header were absent. While a supervised
    tunnel's URL is in force (``tunnel_url``) every forwarder is held to that rule and
    ``allowedHosts`` vouches for no other host: the tunnel's URL is the only one signed.
    """
    trust = forwarding_trust(policy, remote_addr)
    if trust is not None and policy.tunnel_url:
        trust = "tunnel"
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
        split = split_netloc(policy.public_url)
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
