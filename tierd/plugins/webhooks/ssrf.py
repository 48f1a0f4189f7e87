"""SSRF guard: webhooks go only to globally routable addresses.

Endpoint URLs are written by tenants, so a URL must not become a way into the
operator's network (loopback, private ranges, cloud metadata services, ...).
The check runs on the addresses actually dialled, after DNS resolution, on
every connection: a host that resolved to a public address at creation time
and to 127.0.0.1 later (DNS rebinding) is refused on that later attempt.

Two layers, both fed by one :class:`AddressPolicy`:

* :class:`GuardedResolver` filters what DNS returned and raises a clear
  :class:`DestinationRefused` naming the host when nothing is left;
* the connector's ``socket_factory`` checks the exact ``sockaddr`` before each
  ``connect()``, which also covers IP literals (aiohttp does not resolve them).

Operators open holes explicitly with ``webhooks.allow_destinations`` (CIDRs).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable

import aiohttp
from aiohttp.abc import AbstractResolver
from aiohttp.resolver import DefaultResolver

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Special-purpose ranges (IANA registries) that must never be dialled, with a
# name for the error message. ``ipaddress.is_global`` covers most of these,
# but not multicast and not every Python version agrees on the rest, so the
# list is explicit.
_BLOCKED: list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str]] = [
    (ipaddress.ip_network(net), why)
    for net, why in [
        ("0.0.0.0/8", "'this network'"),
        ("10.0.0.0/8", "private"),
        ("100.64.0.0/10", "shared address space (CGNAT)"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local (cloud metadata)"),
        ("172.16.0.0/12", "private"),
        ("192.0.0.0/24", "IETF protocol assignments"),
        ("192.0.2.0/24", "documentation"),
        ("192.88.99.0/24", "6to4 relay anycast"),
        ("192.168.0.0/16", "private"),
        ("198.18.0.0/15", "benchmarking"),
        ("198.51.100.0/24", "documentation"),
        ("203.0.113.0/24", "documentation"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved"),
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("::/96", "IPv4-compatible (deprecated)"),
        ("64:ff9b:1::/48", "local-use NAT64"),
        ("100::/64", "discard-only"),
        ("2001::/23", "IETF protocol assignments (Teredo, ...)"),
        ("2001:db8::/32", "documentation"),
        ("3fff::/20", "documentation"),
        ("fc00::/7", "unique local (private)"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "site-local"),
        ("ff00::/8", "multicast"),
    ]
]

_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class DestinationRefused(OSError):
    """A webhook URL points at an address the SSRF policy forbids."""


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address carried by an IPv4-mapped, NAT64 or 6to4 IPv6 address."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return ip.sixtofour
    return None


class AddressPolicy:
    """Which destination addresses webhooks may connect to.

    ``allow`` is a list of networks (``webhooks.allow_destinations``) that are
    allowed even though they are not globally routable.
    """

    def __init__(self, allow: Iterable = ()):
        self.allow = [ipaddress.ip_network(n, strict=False) if isinstance(n, str) else n for n in allow]

    def refusal(self, address: str | IPAddress) -> str | None:
        """Why ``address`` may not be dialled, or None when it may."""
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0] if isinstance(address, str) else address)
        except ValueError:
            return f"{address!r} is not an IP address"
        if self._allowed(ip):
            return None
        if isinstance(ip, ipaddress.IPv6Address):
            inner = _embedded_ipv4(ip)
            if inner is not None:
                why = self.refusal(inner)
                return None if why is None else f"{ip} embeds {inner}: {why}"
        for net, why in _BLOCKED:
            if ip.version == net.version and ip in net:
                return f"{ip} is {why} ({net})"
        if not ip.is_global:
            return f"{ip} is not globally routable"
        return None

    def _allowed(self, ip: IPAddress) -> bool:
        return any(ip.version == net.version and ip in net for net in self.allow)

    def check(self, address: str | IPAddress, host: str | None = None) -> None:
        """Raise :class:`DestinationRefused` unless ``address`` may be dialled."""
        why = self.refusal(address)
        if why is not None:
            prefix = f"destination {host} refused: " if host and host != str(address) else "destination refused: "
            raise DestinationRefused(prefix + why + " (see webhooks.allow_destinations)")


class GuardedResolver(AbstractResolver):
    """A resolver that returns only addresses the policy allows."""

    def __init__(self, policy: AddressPolicy, inner: AbstractResolver | None = None):
        self.policy = policy
        self.inner = inner or DefaultResolver()

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET):
        results = await self.inner.resolve(host, port, family)
        refusals = [self.policy.refusal(r["host"]) for r in results]
        allowed = [r for r, refusal in zip(results, refusals, strict=True) if refusal is None]
        if not allowed:
            reasons = "; ".join(sorted({refusal for refusal in refusals if refusal is not None}))
            raise DestinationRefused(f"destination {host} refused: {reasons} (see webhooks.allow_destinations)")
        return allowed

    async def close(self) -> None:
        await self.inner.close()


def guarded_socket_factory(policy: AddressPolicy):
    """A ``socket_factory`` for aiohttp that checks every address before connect()."""

    def factory(addr_info):
        family, type_, proto, _, sockaddr = addr_info
        policy.check(sockaddr[0])
        return socket.socket(family=family, type=type_, proto=proto)

    return factory


def make_connector(policy: AddressPolicy, limit: int) -> aiohttp.TCPConnector:
    """The connector for webhook deliveries: guarded resolver and sockets, TLS verified.

    The DNS cache is off so every new connection resolves again (and is
    checked again); keep-alive connections were checked when they were made.
    """
    return aiohttp.TCPConnector(
        resolver=GuardedResolver(policy),
        socket_factory=guarded_socket_factory(policy),
        use_dns_cache=False,
        limit=limit,
        ssl=True,  # verify certificates (the default, spelled out)
    )


def find_refusal(exc: BaseException) -> DestinationRefused | None:
    """The DestinationRefused inside an aiohttp connection error, if any."""
    seen = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, DestinationRefused):
            return current
        inner = getattr(current, "os_error", None)
        if isinstance(inner, DestinationRefused):
            return inner
        current = current.__cause__ or current.__context__
    return None
