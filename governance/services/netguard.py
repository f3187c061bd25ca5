"""The SSRF guard of portal-side discovery: which addresses the portal may connect to, and a transport
that connects only to the address that was checked.

A team admin chooses a server's URL, so a URL must not make the portal reach what only the portal
host can reach: loopback, private and unique-local ranges, link-local (where cloud metadata lives),
multicast, unspecified and reserved addresses, also written as IPv4-mapped or embedded IPv6. The
operator may allow networks (`MCPGOV_DISCOVERY_ALLOWED_NETWORKS`); cloud metadata addresses stay
refused even then. The host is resolved once; every address it resolves to must pass, and the
connection goes to the first one (Host header and TLS SNI keep the name), so a DNS answer that
changes between check and connect (rebinding) is never used. Redirects are not followed, and a
request for any other origin is refused.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx2
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Instance metadata services (AWS/GCP/Azure/OpenStack, AWS ECS, AWS IPv6, Alibaba, Oracle).
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200", "192.0.0.192")
)
NAT64 = ipaddress.ip_network("64:ff9b::/96")


class TargetRefused(Exception):
    """The URL points where the portal does not connect; nothing was sent."""


def allowed_networks() -> list[IPNetwork]:
    """The operator's exceptions (MCPGOV_DISCOVERY_ALLOWED_NETWORKS); a bad entry is a configuration error."""
    networks: list[IPNetwork] = []
    for item in getattr(settings, "MCPGOV_DISCOVERY_ALLOWED_NETWORKS", []) or []:
        try:
            networks.append(ipaddress.ip_network(str(item).strip(), strict=False))
        except ValueError as exc:
            raise ImproperlyConfigured(
                f"MCPGOV_DISCOVERY_ALLOWED_NETWORKS: {item!r} is not a network (CIDR such as 10.1.0.0/16)."
            ) from exc
    return networks


def _embedded_ipv4(addr: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, compatible, 6to4, Teredo, NAT64), if any."""
    if not isinstance(addr, ipaddress.IPv6Address):
        return None
    if addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    if addr.sixtofour is not None:
        return addr.sixtofour
    if addr.teredo is not None:
        return addr.teredo[1]
    if addr in NAT64:
        return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    if int(addr) >> 32 == 0 and int(addr) > 1:  # IPv4-compatible ::a.b.c.d (deprecated, still routed by some)
        return ipaddress.IPv4Address(int(addr))
    return None


def _kind(addr: IPAddress) -> str | None:
    if addr.is_unspecified:
        return "unspecified"
    if addr.is_loopback:
        return "loopback"
    if addr.is_link_local:
        return "link-local"
    if addr.is_multicast:
        return "multicast"
    if isinstance(addr, ipaddress.IPv6Address) and addr in ipaddress.ip_network("fc00::/7"):
        return "unique-local"
    if addr.is_private:
        return "private"
    if addr.is_reserved or not addr.is_global:
        return "not public"
    return None


def address_refusal(addr: IPAddress, allowed: list[IPNetwork] | None = None) -> str | None:
    """Why the portal does not connect to `addr` (None: it may)."""
    allowed = allowed_networks() if allowed is None else allowed
    embedded = _embedded_ipv4(addr)
    candidates = [a for a in (embedded, addr) if a is not None]  # the carried IPv4 address names the kind
    if any(a in METADATA_ADDRESSES for a in candidates):
        return "a cloud metadata address"
    if any(a in network for a in candidates for network in allowed if a.version == network.version):
        return None
    for candidate in candidates:
        kind = _kind(candidate)
        if kind is not None:
            return (
                f"a {kind} address" if candidate is addr else f"a {kind} address ({candidate} inside {addr})"
            )
    return None


@dataclass(frozen=True)
class CheckedTarget:
    """A URL whose host was resolved once and whose every address passed the guard."""

    url: str
    scheme: str
    host: str
    port: int
    address: str


def check_url(url: str) -> CheckedTarget:
    """Resolve `url`'s host once and check every address; raises TargetRefused."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise TargetRefused(f"{url}: only http:// and https:// URLs are discovered.")
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        raise TargetRefused(f"{url}: the URL has no host.")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError as exc:
        raise TargetRefused(f"{url}: the port is not a number between 0 and 65535.") from exc
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise TargetRefused(f"Cannot resolve {host}: {exc}") from exc
    addresses: list[IPAddress] = []
    for info in infos:
        addr = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if addr not in addresses:
            addresses.append(addr)
    if not addresses:
        raise TargetRefused(f"{host} resolves to no address.")
    allowed = allowed_networks()
    for addr in addresses:
        reason = address_refusal(addr, allowed)
        if reason is not None:
            shown = host if host == str(addr) else f"{host} ({addr})"
            raise TargetRefused(
                f"The portal does not connect to {shown}: {reason}. Discover this server from the "
                "enforcement side (mcpgov discover), or ask the operator to allow its network "
                "(MCPGOV_DISCOVERY_ALLOWED_NETWORKS)."
            )
    return CheckedTarget(url=url, scheme=scheme, host=host, port=port, address=str(addresses[0]))


class PinnedTransport(httpx2.AsyncBaseTransport):
    """Sends every request of one origin to the checked address; refuses any other origin."""

    def __init__(self, target: CheckedTarget, **transport_options) -> None:
        self.target = target
        self.inner = httpx2.AsyncHTTPTransport(**transport_options)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        t = self.target
        url = request.url
        port = url.port or (443 if url.scheme == "https" else 80)
        if (url.scheme, (url.host or "").rstrip(".").lower(), port) != (t.scheme, t.host, t.port):
            raise TargetRefused(
                f"Refused a request to {url.scheme}://{url.host}:{port}: not the checked origin."
            )
        # The Host header was set from the original URL when the request was built; SNI and the
        # certificate check use the name too, while the socket goes to the checked address.
        request.url = url.copy_with(host=t.address)
        request.extensions = {**request.extensions, "sni_hostname": t.host}
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def pinned_client(target: CheckedTarget, *, timeout: float, event_hooks=None) -> httpx2.AsyncClient:
    """An HTTP client bound to `target`: no proxies from the environment, no redirects."""
    return httpx2.AsyncClient(
        transport=PinnedTransport(target),
        timeout=httpx2.Timeout(timeout),
        follow_redirects=False,
        trust_env=False,
        event_hooks=event_hooks or {},
    )
