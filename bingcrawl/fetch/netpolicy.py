"""Network policy: which addresses the image downloader may connect to (the SSRF guard).

Image URLs come from search results, i.e. from strangers, so every fetch is a potential
server-side request forgery: ``http://169.254.169.254/`` (cloud metadata), ``http://10.0.0.1/``,
``http://[::ffff:127.0.0.1]/``, a public name whose DNS answer is ``127.0.0.1``, or a public
page that redirects to any of these. By default only globally routable unicast addresses are
allowed; ``--allow-network CIDR`` permits more (``127.0.0.1/32`` for the local emulator).

The guard works in three layers, each enough on its own for what it covers:

1. :func:`url_refusal` / :func:`check_url` judge a URL before any request, and every redirect
   hop: scheme, userinfo, and IP literals in every written form (``2130706433``,
   ``0177.0.0.1``, ``0x7f.1``, ``127.1``, ``[::ffff:127.0.0.1]``, trailing dots).
2. :class:`PolicyResolver` drops refused addresses from DNS answers, so a name resolving to a
   mix of public and private addresses only ever connects to the public ones.
3. The connector's ``socket_factory`` (see :func:`guarded_socket_factory`) judges the address
   actually connected, just before ``connect()``. It sees IP literals, which aiohttp never
   passes to the resolver, and any address a resolver returned, so DNS rebinding and redirect
   tricks cannot get around it. It is the layer that makes the guard sound; 1 and 2 give
   early, precise errors.

A refusal surfaces as :class:`BlockedAddressError` (an ``OSError``, so aiohttp wraps it in its
connector errors with the original as ``os_error`` / ``__cause__``); the downloader maps it to
``ErrorClass.BLOCKED_ADDRESS``.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

import aiohttp
from aiohappyeyeballs import AddrInfoType, SocketFactoryType
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from bingcrawl.errors import BlockedAddressError, ConfigError
from bingcrawl.records import ErrorClass

__all__ = [
    "BlockedAddressError",
    "GuardedConnector",
    "IPAddress",
    "IPNetwork",
    "NetworkPolicy",
    "PolicyResolver",
    "Refusal",
    "StaticResolver",
    "check_url",
    "guarded_socket_factory",
    "make_connector",
    "parse_ipv4_literal",
    "parse_resolve",
    "url_refusal",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network

#: IPv4 ranges refused by default (IANA special-purpose registry entries that are not globally
#: reachable, plus multicast, reserved and broadcast), with the reason given in errors.
_IPV4_REFUSED: tuple[tuple[ipaddress.IPv4Network, str], ...] = (
    (_V4("0.0.0.0/8"), "'this network' / unspecified (0.0.0.0/8)"),
    (_V4("10.0.0.0/8"), "private (RFC 1918)"),
    (_V4("100.64.0.0/10"), "shared address space / CGNAT (RFC 6598)"),
    (_V4("127.0.0.0/8"), "loopback"),
    (_V4("169.254.0.0/16"), "link-local (incl. cloud metadata 169.254.169.254)"),
    (_V4("172.16.0.0/12"), "private (RFC 1918)"),
    (_V4("192.0.0.0/24"), "IETF protocol assignments"),
    (_V4("192.0.2.0/24"), "documentation (TEST-NET-1)"),
    (_V4("192.88.99.0/24"), "deprecated 6to4 relay anycast"),
    (_V4("192.168.0.0/16"), "private (RFC 1918)"),
    (_V4("198.18.0.0/15"), "benchmarking (RFC 2544)"),
    (_V4("198.51.100.0/24"), "documentation (TEST-NET-2)"),
    (_V4("203.0.113.0/24"), "documentation (TEST-NET-3)"),
    (_V4("224.0.0.0/4"), "multicast"),
    (_V4("255.255.255.255/32"), "limited broadcast"),
    (_V4("240.0.0.0/4"), "reserved (class E)"),
)

#: Only this block is allocated as global unicast; everything outside it is refused.
_IPV6_GLOBAL_UNICAST = _V6("2000::/3")

#: IPv6 ranges refused inside or around 2000::/3, with reasons. The order matters: specific
#: entries come before the blocks that contain them.
_IPV6_REFUSED: tuple[tuple[ipaddress.IPv6Network, str], ...] = (
    (_V6("2001::/32"), "Teredo tunnel"),
    (_V6("2001:db8::/32"), "documentation"),
    (_V6("2001::/23"), "IETF protocol assignments (incl. benchmarking 2001:2::/48, ORCHID)"),
    (_V6("3fff::/20"), "documentation"),
    (_V6("fc00::/7"), "unique local (ULA)"),
    (_V6("fe80::/10"), "link-local"),
    (_V6("fec0::/10"), "site-local (deprecated)"),
    (_V6("ff00::/8"), "multicast"),
    (_V6("64:ff9b:1::/48"), "local-use NAT64 (RFC 8215)"),
    (_V6("100::/64"), "discard-only"),
)

_NAT64 = _V6("64:ff9b::/96")
_IPV4_COMPATIBLE = _V6("::/96")

#: Host names as they reach the URL check (after yarl's IDNA encoding): LDH labels, plus
#: underscores, which some CDNs use. Anything else (spaces, percent signs) is a bad URL.
_HOSTNAME_RE = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*")
_NUMERIC_LABEL_RE = re.compile(r"(?:0[xX][0-9a-fA-F]*|[0-9]+)")


def _ip(value: IPAddress | str) -> IPAddress:
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return value
    return ipaddress.ip_address(value)


@dataclass(frozen=True, slots=True)
class NetworkPolicy:
    """Which IP addresses may be connected to.

    By default only globally routable unicast addresses; ``allow`` lists extra networks that
    are always permitted (``--allow-network``). IPv6 forms that embed an IPv4 address
    (IPv4-mapped ``::ffff:a.b.c.d``, NAT64 ``64:ff9b::a.b.c.d``, 6to4 ``2002:AABB:CCDD::``)
    are judged by the IPv4 address they carry. Teredo and the deprecated IPv4-compatible form
    ``::a.b.c.d`` are always refused (unless allowed explicitly).
    """

    allow: tuple[IPNetwork, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.allow, tuple):
            raise ConfigError("--allow-network", "allow must be a tuple of networks")
        for net in self.allow:
            if not isinstance(net, ipaddress.IPv4Network | ipaddress.IPv6Network):
                raise ConfigError("--allow-network", f"{net!r} is not an IP network")

    @classmethod
    def from_cidrs(cls, cidrs: Iterable[str]) -> NetworkPolicy:
        """Build a policy from ``--allow-network`` values such as ``127.0.0.1/32``.

        A bare address means a single host. Raises :class:`ConfigError` naming
        ``--allow-network`` for anything that is not a network with its host bits clear.
        """
        nets: list[IPNetwork] = []
        for cidr in cidrs:
            if not isinstance(cidr, str):
                raise ConfigError("--allow-network", f"{cidr!r} is not a string")
            try:
                nets.append(ipaddress.ip_network(cidr.strip(), strict=True))
            except ValueError as exc:
                raise ConfigError("--allow-network", f"invalid CIDR {cidr!r}: {exc}") from exc
        return cls(allow=tuple(nets))

    def blocked_reason(self, ip: IPAddress | str) -> str | None:
        """Why ``ip`` is refused, or ``None`` when it may be connected to.

        Raises ``ValueError`` if ``ip`` is a string that is not an IP address.
        """
        addr = _ip(ip)
        if any(addr in net for net in self.allow):
            return None
        if isinstance(addr, ipaddress.IPv4Address):
            return _ipv4_reason(addr)
        return self._ipv6_reason(addr)

    def is_allowed(self, ip: IPAddress | str) -> bool:
        """Whether the policy lets us connect to ``ip`` (see :meth:`blocked_reason`)."""
        return self.blocked_reason(ip) is None

    def _ipv6_reason(self, addr: ipaddress.IPv6Address) -> str | None:
        if addr.scope_id:
            return "scoped (zone-qualified) address"
        embedded = _embedded_ipv4(addr)
        if embedded is not None:
            form, v4 = embedded
            reason = self.blocked_reason(v4)
            return None if reason is None else f"{form} form of {v4}: {reason}"
        if addr in _IPV4_COMPATIBLE:
            if addr == ipaddress.IPv6Address("::"):
                return "unspecified"
            if addr == ipaddress.IPv6Address("::1"):
                return "loopback"
            return "deprecated IPv4-compatible form"
        for net, reason in _IPV6_REFUSED:
            if addr in net:
                return reason
        if addr not in _IPV6_GLOBAL_UNICAST:
            return "not global unicast (outside 2000::/3)"
        return None


def _ipv4_reason(addr: ipaddress.IPv4Address) -> str | None:
    for net, reason in _IPV4_REFUSED:
        if addr in net:
            return reason
    return None


def _embedded_ipv4(addr: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address] | None:
    """The IPv4 address an IPv6 address stands for, when connecting to it reaches that IPv4."""
    if addr.ipv4_mapped is not None:
        return "IPv4-mapped", addr.ipv4_mapped
    if addr in _NAT64:
        return "NAT64", ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    if addr.sixtofour is not None:
        return "6to4", addr.sixtofour
    return None


# --------------------------------------------------------------------------- URL-level check


class Refusal(NamedTuple):
    """Why a URL is refused: an :class:`ErrorClass` value and a human-readable detail."""

    error_class: str
    detail: str


def parse_ipv4_literal(host: str) -> ipaddress.IPv4Address | None:
    """Parse ``host`` the way ``inet_aton`` and the WHATWG URL standard read IPv4 hosts.

    Accepts one to four dot-separated parts, each decimal, octal (leading ``0``) or hex
    (``0x``), the last part filling the remaining bytes, and one trailing dot: ``2130706433``,
    ``0177.0.0.1``, ``0x7f.1`` and ``127.1`` all mean ``127.0.0.1``. Returns ``None`` when
    ``host`` is not such a literal (including when a part overflows).
    """
    parts = host.split(".")
    if parts and parts[-1] == "":
        parts.pop()
    if not 1 <= len(parts) <= 4:
        return None
    values: list[int] = []
    for part in parts:
        if not _NUMERIC_LABEL_RE.fullmatch(part):
            return None
        if part[:2].lower() == "0x":
            values.append(int(part[2:] or "0", 16))
        elif len(part) > 1 and part[0] == "0":
            if any(c in "89" for c in part):
                return None
            values.append(int(part, 8))
        else:
            values.append(int(part))
    *head, last = values
    if any(v > 255 for v in head) or last >= 256 ** (5 - len(values)):
        return None
    number = last
    for i, v in enumerate(head):
        number += v << (8 * (3 - i))
    return ipaddress.IPv4Address(number)


def _ends_in_number(name: str) -> bool:
    """WHATWG's test for a host that must parse as IPv4 (``name`` has no trailing dot)."""
    return bool(_NUMERIC_LABEL_RE.fullmatch(name.rsplit(".", 1)[-1]))


def url_refusal(url: str | URL, policy: NetworkPolicy | None = None) -> Refusal | None:
    """Judge a URL before requesting it; ``None`` means it may be requested.

    Refused as ``bad_url``: unparseable URLs, schemes other than http/https, a missing or
    malformed host, any userinfo (``user:pass@``, even empty), and numeric IPv4 hosts in
    legacy forms (``127.1``) even when the address is allowed, since aiohttp refuses them.
    Refused as ``blocked_address``: IP literals, in any written form, that ``policy`` (the
    default policy when ``None``) refuses. Host *names* pass: the connect-time check judges
    what they resolve to.
    """
    policy = policy if policy is not None else NetworkPolicy()
    bad = ErrorClass.BAD_URL.value
    try:
        parsed = url if isinstance(url, URL) else URL(url)
    except (ValueError, TypeError) as exc:
        return Refusal(bad, f"unparseable URL: {exc}")
    if parsed.scheme not in ("http", "https"):
        return Refusal(bad, f"scheme {parsed.scheme!r} is not http or https")
    authority = parsed.raw_authority
    if "@" in authority:
        return Refusal(bad, "userinfo (user:password@) in URL")
    host = parsed.raw_host
    if not host:
        return Refusal(bad, "URL has no host")
    if ":" in host:  # yarl only lets IPv6 literals through with a colon
        return _judge_ipv6_literal(host, policy)
    name = host.lower().rstrip(".")
    if not name:
        return Refusal(bad, f"invalid host {host!r}")
    if _ends_in_number(name):
        v4 = parse_ipv4_literal(name)
        if v4 is None:
            return Refusal(bad, f"host {host!r} ends in a number but is not an IPv4 address")
        reason = policy.blocked_reason(v4)
        if reason is not None:
            written = str(v4) if name == str(v4) else f"{host} is {v4}"
            return Refusal(ErrorClass.BLOCKED_ADDRESS.value, f"{written}: {reason}")
        if name != str(v4):
            return Refusal(bad, f"non-canonical IPv4 literal {host!r} (means {v4})")
        return None
    if not _HOSTNAME_RE.fullmatch(name):
        return Refusal(bad, f"invalid host name {host!r}")
    return None


def _judge_ipv6_literal(host: str, policy: NetworkPolicy) -> Refusal | None:
    literal = host.replace("%25", "%")
    try:
        addr = ipaddress.IPv6Address(literal)
    except ValueError:
        return Refusal(ErrorClass.BAD_URL.value, f"invalid IPv6 literal {host!r}")
    reason = policy.blocked_reason(addr)
    if reason is not None:
        return Refusal(ErrorClass.BLOCKED_ADDRESS.value, f"[{addr}]: {reason}")
    return None


def check_url(url: str | URL, policy: NetworkPolicy | None = None) -> str | None:
    """The :class:`ErrorClass` value refusing ``url``, or ``None`` (see :func:`url_refusal`)."""
    refusal = url_refusal(url, policy)
    return None if refusal is None else refusal.error_class


# --------------------------------------------------------------------------- connect-time check


def guarded_socket_factory(policy: NetworkPolicy) -> SocketFactoryType:
    """A ``TCPConnector(socket_factory=...)`` hook that refuses blocked addresses.

    aiohttp calls it with the addrinfo of every address it is about to connect to (IP
    literals included, which bypass the resolver), so no socket to a refused address is ever
    created. Raises :class:`BlockedAddressError`.
    """

    def factory(addr_info: AddrInfoType) -> socket.socket:
        family, type_, proto, _, sockaddr = addr_info
        host = str(sockaddr[0])
        try:
            addr = ipaddress.ip_address(host)
        except ValueError as exc:
            raise BlockedAddressError(host, "not an IP address") from exc
        reason = policy.blocked_reason(addr)
        if reason is None and len(sockaddr) == 4 and sockaddr[3]:
            reason = "scoped (zone-qualified) address"
        if reason is not None:
            raise BlockedAddressError(host, reason)
        return socket.socket(family=family, type=type_, proto=proto)

    return factory


class PolicyResolver(AbstractResolver):
    """Wrap a resolver and drop the addresses ``policy`` refuses from its answers.

    If nothing is left, raise :class:`BlockedAddressError` so the failure is reported as a
    blocked address rather than a DNS error. ``owns_inner`` says whether :meth:`close`
    closes the wrapped resolver too.
    """

    def __init__(
        self, inner: AbstractResolver, policy: NetworkPolicy, *, owns_inner: bool = False
    ) -> None:
        self._inner = inner
        self._policy = policy
        self._owns_inner = owns_inner

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """Resolve ``host`` with the wrapped resolver, keeping only permitted addresses."""
        answers = await self._inner.resolve(host, port, family)
        kept: list[ResolveResult] = []
        reasons: list[str] = []
        for answer in answers:
            try:
                reason = self._policy.blocked_reason(answer["host"])
            except ValueError:
                reason = "not an IP address"
            if reason is None:
                kept.append(answer)
            else:
                reasons.append(f"{answer['host']} ({reason})")
        if not answers:
            # aiohttp expects a resolver to raise rather than answer nothing.
            raise OSError(f"no addresses found for {host!r}")
        if not kept:
            refused = ", ".join(reasons)
            raise BlockedAddressError(host, f"resolves only to refused addresses: {refused}")
        return kept

    async def close(self) -> None:
        """Close the wrapped resolver if this object owns it."""
        if self._owns_inner and self._inner is not None:
            await self._inner.close()


def parse_resolve(values: Iterable[str]) -> tuple[tuple[str, str], ...]:
    """``--resolve`` values (``HOST:ADDRESS``, ``*.DOMAIN:ADDRESS``) as (pattern, address).

    As curl's ``--resolve`` without the port: the name ``HOST`` (or any name under
    ``DOMAIN``) connects to ``ADDRESS`` without asking DNS. An IPv6 address may be written in
    brackets. Names are compared lowercased, without a trailing dot. Raises
    :class:`ConfigError` naming ``--resolve``.
    """
    pairs: list[tuple[str, str]] = []
    for value in values:
        if not isinstance(value, str) or ":" not in value:
            raise ConfigError("--resolve", f"expected HOST:ADDRESS, got {value!r}")
        name, _, address = value.partition(":")
        name = name.strip().lower().rstrip(".")
        label = name[2:] if name.startswith("*.") else name
        if not label or not all(_HOST_LABEL.fullmatch(part) for part in label.split(".")):
            raise ConfigError("--resolve", f"{name!r} in {value!r} is not a host name")
        address = address.strip().removeprefix("[").removesuffix("]")
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            raise ConfigError(
                "--resolve", f"{address!r} in {value!r} is not an IP address"
            ) from None
        pairs.append((name, str(ip)))
    return tuple(pairs)


_HOST_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?")


class StaticResolver(AbstractResolver):
    """Answer the names of ``--resolve`` from its map; ask ``inner`` for the others (a name
    outside the map is an ``OSError`` without one).

    ``pairs`` come from :func:`parse_resolve`: an exact name wins over a ``*.`` pattern, a
    longer pattern over a shorter one. The answers still go through the network policy
    (:class:`PolicyResolver` wraps this resolver, and the socket factory judges the connect),
    so mapping a name to ``127.0.0.1`` needs ``--allow-network`` like any loopback address.
    """

    def __init__(
        self,
        pairs: Iterable[tuple[str, str]],
        inner: AbstractResolver | None = None,
        *,
        owns_inner: bool = True,
    ) -> None:
        self._owns_inner = owns_inner
        self._exact: dict[str, str] = {}
        self._suffixes: list[tuple[str, str]] = []
        for name, address in pairs:
            if name.startswith("*."):
                self._suffixes.append((name[1:], address))  # ".domain"
            else:
                self._exact.setdefault(name, address)
        self._suffixes.sort(key=lambda pair: -len(pair[0]))
        self._inner = inner

    def lookup(self, host: str) -> str | None:
        """The mapped address of ``host``, or ``None`` when DNS decides."""
        name = host.lower().rstrip(".")
        found = self._exact.get(name)
        if found is not None:
            return found
        return next((ip for suffix, ip in self._suffixes if name.endswith(suffix)), None)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """The mapped address (whatever ``family`` asks), else the inner resolver's answer."""
        address = self.lookup(host)
        if address is None:
            if self._inner is None:
                raise OSError(f"{host!r} is not in the --resolve map")
            return await self._inner.resolve(host, port, family)
        ip = ipaddress.ip_address(address)
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ip.version == 6 else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
        ]

    async def close(self) -> None:
        """Close the inner resolver if this object owns it."""
        if self._owns_inner and self._inner is not None:
            await self._inner.close()


class GuardedConnector(aiohttp.TCPConnector):
    """A ``TCPConnector`` that closes the :class:`PolicyResolver` it was built with.

    aiohttp does not close a resolver passed in by the caller; this subclass does, so the
    connector stays the single owner of its resources.
    """

    def __init__(self, *, policy_resolver: PolicyResolver, **kwargs: Any) -> None:
        super().__init__(resolver=policy_resolver, **kwargs)
        self._policy_resolver = policy_resolver

    async def close(self, *, abort_ssl: bool = False) -> None:
        """Close the connections, then the resolver."""
        try:
            await super().close(abort_ssl=abort_ssl)
        finally:
            await self._policy_resolver.close()


def make_connector(
    policy: NetworkPolicy,
    *,
    limit: int,
    limit_per_host: int,
    resolver: AbstractResolver | None = None,
    use_dns_cache: bool = True,
    resolve: Iterable[tuple[str, str]] = (),
) -> aiohttp.TCPConnector:
    """Build the image session's connector with the network policy enforced at connect time.

    DNS answers are filtered by a :class:`PolicyResolver` around ``resolver`` (aiohttp's
    default resolver when ``None``) and every socket goes through
    :func:`guarded_socket_factory`. ``resolve`` pairs (:func:`parse_resolve`) answer their
    names before DNS (:class:`StaticResolver`). Must be called with an event loop running. The
    caller keeps ownership of a ``resolver`` it passes in.
    """
    owns = resolver is None
    inner: AbstractResolver = aiohttp.DefaultResolver() if resolver is None else resolver
    pairs = tuple(resolve)
    if pairs:
        inner = StaticResolver(pairs, inner, owns_inner=owns)
    guard = PolicyResolver(inner, policy, owns_inner=owns)
    return GuardedConnector(
        policy_resolver=guard,
        limit=limit,
        limit_per_host=limit_per_host,
        use_dns_cache=use_dns_cache,
        socket_factory=guarded_socket_factory(policy),
    )
