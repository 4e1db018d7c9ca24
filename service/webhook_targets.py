"""Where a webhook may go: the rules a `notify_url` meets at submission (scheme, host on
`BOLAB_WEBHOOK_ALLOWED_HOSTS`, port on `BOLAB_WEBHOOK_ALLOWED_PORTS`, no private IP literal),
and the address rule checked at delivery: every address the host resolves to must be public
unless `BOLAB_WEBHOOK_ALLOW_PRIVATE`. The request then goes to the very address that was checked
(the URL's host replaced by it, `Host` header and TLS server name kept), so a name that resolves
differently a moment later (DNS rebinding) cannot steer the POST elsewhere.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from concurrent.futures import Executor
from dataclasses import dataclass, field
from urllib.parse import SplitResult, urlsplit

import httpx
from fastapi.exceptions import RequestValidationError

from jobmodel.settings import Settings

DEFAULT_PORTS = {"http": 80, "https": 443}
# NAT64 addresses carry an IPv4 address in their last 32 bits (RFC 6052).
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class Refused(Exception):
    """The webhook may not go where its URL points; retrying cannot change that."""


@dataclass(frozen=True)
class Target:
    """A checked destination: the URL with its host replaced by the checked address."""

    url: httpx.URL
    headers: dict[str, str]
    extensions: dict[str, str] = field(default_factory=dict)


def allowed_ports(spec: str) -> set[int]:
    return {int(p) for p in spec.split(",") if p.strip()}


def host_allowed(host: str, allowed: str) -> bool:
    host = host.lower().rstrip(".")
    for entry in (e.strip().lower() for e in allowed.split(",")):
        if entry.startswith("*.") and host.endswith(entry[1:]) and host != entry[2:]:
            return True
        if entry and host == entry:
            return True
    return False


def public(address: IPAddress) -> bool:
    """Routable on the internet: not private, loopback, link-local, multicast, reserved or
    unspecified, and no such IPv4 address inside an IPv6 one (mapped, 6to4, NAT64)."""
    inner: list[IPAddress] = [address]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped:
            inner.append(address.ipv4_mapped)
        if address.sixtofour:
            inner.append(address.sixtofour)
        if address in _NAT64:
            inner.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return all(a.is_global and not a.is_multicast for a in inner)


def _ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _split(url: str) -> SplitResult | None:
    try:
        parts = urlsplit(url)
        _ = parts.port  # parsed lazily: a bad port raises only here
    except ValueError:  # "http://[", "http://h:abc/"
        return None
    return parts


def url_problem(url: str, settings: Settings) -> str | None:
    """Why webhooks may not go to `url` under `settings`, or None when they may."""
    parts = _split(url)
    if not settings.webhook_secret:
        return "webhooks are off: the deployment has no BOLAB_WEBHOOK_SECRET"
    if parts is None:
        return "notify_url is not a valid URL (host or port)"
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        return "notify_url must be an absolute http(s) URL"
    if parts.username or parts.password:
        return "notify_url must not carry credentials"
    if not host_allowed(parts.hostname, settings.webhook_allowed_hosts):
        return f"host {parts.hostname!r} is not on BOLAB_WEBHOOK_ALLOWED_HOSTS"
    port = parts.port or DEFAULT_PORTS[parts.scheme]
    if port not in allowed_ports(settings.webhook_allowed_ports):
        return f"port {port} is not on BOLAB_WEBHOOK_ALLOWED_PORTS"
    literal = _ip_literal(parts.hostname)
    if literal is not None and not settings.webhook_allow_private and not public(literal):
        return f"address {literal} is not public (BOLAB_WEBHOOK_ALLOW_PRIVATE is off)"
    return None


def check_url(url: str, settings: Settings) -> str:
    """The URL if webhooks may go there, else a 422 naming `notify_url` and the reason."""
    reason = url_problem(url, settings)
    if reason is None:
        return url
    raise RequestValidationError(
        [{"type": "value_error", "loc": ["query", "notify_url"], "msg": reason, "input": url}]
    )


def receiver(url: str) -> str:
    """The receiver a URL names, `scheme://host:port`: deliveries in flight are counted per
    receiver."""
    parts = _split(url)
    if parts is None or not parts.hostname:
        return url
    port = parts.port or DEFAULT_PORTS.get(parts.scheme, 0)
    return f"{parts.scheme}://{parts.hostname.lower()}:{port}"


async def resolve(url: str, settings: Settings, executor: Executor) -> Target:
    """Check `url` again, resolve its host (in `executor`: a slow resolver holds none of the
    event loop's threads) and check every address; raise Refused when a rule forbids it."""
    reason = url_problem(url, settings)
    if reason is not None:
        raise Refused(reason)
    parsed = httpx.URL(url)
    host = parsed.raw_host.decode("ascii")  # IDNA names in their ASCII form
    port = parsed.port or DEFAULT_PORTS[parsed.scheme]
    infos = await asyncio.get_running_loop().run_in_executor(
        executor, lambda: socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    )
    addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    if not settings.webhook_allow_private:
        hidden = [a for a in addresses if not public(a)]
        if hidden:
            raise Refused(f"host {host!r} resolves to {hidden[0]}, not a public address")
    pinned = parsed.copy_with(host=str(addresses[0]))
    extensions = {"sni_hostname": host} if parsed.scheme == "https" else {}
    return Target(pinned, {"Host": parsed.netloc.decode("ascii")}, extensions)
