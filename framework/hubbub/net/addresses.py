"""Which IP addresses an outgoing request may reach, and how host names are read.

:func:`refusal` says why an address is not a public unicast one (``"a loopback address"``) or
``None``. IPv6 addresses that carry an IPv4 address (IPv4-mapped ``::ffff:a.b.c.d`` in any
spelling, IPv4-compatible ``::a.b.c.d``, NAT64 ``64:ff9b::/96``, 6to4 ``2002::/16``, Teredo
``2001::/32``) are judged by the IPv4 address they carry: reaching ``::ffff:127.0.0.1`` is
reaching ``127.0.0.1`` on a dual-stack host.

:func:`parse_ip_host` reads a URL's host the way resolvers do (``inet_aton``): ``2130706433``,
``0x7f.1``, ``0177.0.0.1`` and ``127.1`` all mean ``127.0.0.1``. A host whose last label is a
number is an IPv4 address or nothing (the WHATWG URL rule), so no spelling reaches the resolver
unread.

:class:`AddressPolicy` adds the operator's exceptions: networks (CIDRs) and host names that may
be reached although private.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

__all__ = [
    "AddressPolicy",
    "IPAddress",
    "embedded_ipv4",
    "normalise_host",
    "parse_ip_host",
    "refusal",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
"""An IPv4 or IPv6 address."""

_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network

_IPV4_CLASSES: tuple[tuple[ipaddress.IPv4Network, str], ...] = (
    (_V4("0.0.0.0/8"), "an unspecified address"),
    (_V4("10.0.0.0/8"), "a private address"),
    (_V4("100.64.0.0/10"), "a shared (CGNAT) address"),
    (_V4("127.0.0.0/8"), "a loopback address"),
    (_V4("169.254.0.0/16"), "a link-local address (cloud metadata lives there)"),
    (_V4("172.16.0.0/12"), "a private address"),
    (_V4("192.0.0.0/24"), "a reserved address"),
    (_V4("192.0.2.0/24"), "a documentation address"),
    (_V4("192.88.99.0/24"), "a reserved address"),
    (_V4("192.168.0.0/16"), "a private address"),
    (_V4("198.18.0.0/15"), "a benchmarking address"),
    (_V4("198.51.100.0/24"), "a documentation address"),
    (_V4("203.0.113.0/24"), "a documentation address"),
    (_V4("224.0.0.0/4"), "a multicast address"),
    (_V4("240.0.0.0/4"), "a reserved address"),
)
"""IPv4 special-purpose blocks (RFC 6890 and successors) and how an error names them."""

_IPV6_CLASSES: tuple[tuple[ipaddress.IPv6Network, str], ...] = (
    (_V6("::/128"), "an unspecified address"),
    (_V6("::1/128"), "a loopback address"),
    (_V6("64:ff9b:1::/48"), "a private address"),
    (_V6("100::/64"), "a reserved address"),
    (_V6("2001:2::/48"), "a benchmarking address"),
    (_V6("2001:db8::/32"), "a documentation address"),
    (_V6("3fff::/20"), "a documentation address"),
    (_V6("2001::/23"), "a reserved address"),
    (_V6("fc00::/7"), "a private address"),
    (_V6("fe80::/10"), "a link-local address"),
    (_V6("fec0::/10"), "a private address"),
    (_V6("ff00::/8"), "a multicast address"),
)
"""IPv6 special-purpose blocks; anything outside global unicast ``2000::/3`` is refused too."""

_GLOBAL_UNICAST = _V6("2000::/3")
_MAPPED = _V6("::ffff:0:0/96")
_COMPATIBLE = _V6("::/96")
_NAT64 = _V6("64:ff9b::/96")
_SIXTOFOUR = _V6("2002::/16")
_TEREDO = _V6("2001::/32")

_NUMBER = re.compile(r"(?:0[xX][0-9A-Fa-f]*|[0-9]+)")
"""A label ``inet_aton`` reads as a number: decimal, octal (leading 0) or hexadecimal."""

_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
"""One label of a host name, after IDNA encoding and lower-casing."""


def embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries (mapped, compatible, NAT64, 6to4, Teredo
    server and client), or ``[]``."""
    value = int(address)
    if address in _MAPPED or address in _NAT64:
        return [ipaddress.IPv4Address(value & 0xFFFFFFFF)]
    if address in _COMPATIBLE and value > 1:  # ``::`` and ``::1`` are themselves
        return [ipaddress.IPv4Address(value & 0xFFFFFFFF)]
    if address in _SIXTOFOUR:
        return [ipaddress.IPv4Address((value >> 80) & 0xFFFFFFFF)]
    if address in _TEREDO:
        server = ipaddress.IPv4Address((value >> 64) & 0xFFFFFFFF)
        client = ipaddress.IPv4Address(~value & 0xFFFFFFFF)
        return [server, client]
    return []


def refusal(address: IPAddress) -> str | None:
    """Why ``address`` is not a public unicast address (``"a private address"``), or ``None``
    when it is. An IPv6 address carrying IPv4 addresses is refused when any of them is."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id:
            address = ipaddress.IPv6Address(address.compressed.split("%", 1)[0])
        carried = embedded_ipv4(address)
        if carried:
            for inner in carried:
                why = refusal(inner)
                if why is not None:
                    return why
            return None
        for network, why in _IPV6_CLASSES:
            if address in network:
                return why
        if address not in _GLOBAL_UNICAST:
            return "a reserved address"
        return None
    for network4, why in _IPV4_CLASSES:
        if address in network4:
            return why
    if address == ipaddress.IPv4Address("255.255.255.255"):  # pragma: no cover - in 240/4
        return "a broadcast address"
    return None


def _inet_aton(text: str) -> ipaddress.IPv4Address | None:
    """``text`` read as ``inet_aton`` does (1 to 4 numeric parts, decimal, octal or hex; the
    last part fills the remaining bytes), or ``None`` when it is not such a spelling."""
    parts = text.split(".")
    if not 1 <= len(parts) <= 4 or not all(_NUMBER.fullmatch(part) for part in parts):
        return None
    numbers: list[int] = []
    for part in parts:
        if part[:2].lower() == "0x":
            numbers.append(int(part[2:] or "0", 16))
        elif len(part) > 1 and part[0] == "0":
            if not set(part) <= set("01234567"):
                return None
            numbers.append(int(part, 8))
        else:
            numbers.append(int(part))
    *leading, last = numbers
    if any(n > 255 for n in leading) or last >= 256 ** (5 - len(numbers)):
        return None
    value = 0
    for n in leading:
        value = value << 8 | n
    value = value << 8 * (5 - len(numbers)) | last
    return ipaddress.IPv4Address(value)


def parse_ip_host(host: str) -> IPAddress | None:
    """The address a URL host (as :func:`urllib.parse.urlsplit` gives it: no brackets,
    lower-case, at most one trailing dot stripped by :func:`normalise_host`) spells, or ``None``
    for a host name.

    Raises :class:`ValueError` for a host that looks numeric without being a valid IPv4
    spelling (``1.2.3.4.5``, ``256.1.1.1``, ``08.1.1.1``) and for IPv6 zone identifiers.
    """
    if ":" in host:
        if "%" in host:
            raise ValueError("IPv6 zone identifiers are not allowed")
        try:
            return ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError("not a valid IPv6 address") from None
    last = host.rsplit(".", 1)[-1]
    if not _NUMBER.fullmatch(last):
        return None
    address = _inet_aton(host)
    if address is None:
        raise ValueError("a numeric host that is not a valid IPv4 address")
    return address


def normalise_host(host: str) -> str:
    """A URL host name in the form it is compared and resolved in: lower-case, IDNA-encoded
    (ASCII), one trailing dot removed. IP literals (without brackets) are returned as they are.

    Raises :class:`ValueError` for an empty or malformed host name.
    """
    if not host:
        raise ValueError("the URL names no host")
    if ":" in host:
        return host.lower()
    name = host[:-1] if host.endswith(".") else host
    try:
        name = name.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise ValueError("not a valid host name") from None
    if not name or len(name) > 253 or not all(_LABEL.fullmatch(p) for p in name.split(".")):
        raise ValueError("not a valid host name")
    return name


class AddressPolicy:
    """The addresses a request may reach: public unicast ones, plus the operator's exceptions.

    ``allow_networks``: CIDRs (``"10.1.0.0/16"``, ``"fd00::/8"``) reachable although refused
    by :func:`refusal` (an IPv6 address carrying an IPv4 one is allowed when the IPv4 one is in
    them). ``allow_hosts``: host names (``"wiki.internal"``; ``"*.corp.example"`` for every
    name under it) whose addresses are not checked at all.

    Raises :class:`ValueError` for a malformed network or host pattern.
    """

    def __init__(self, allow_networks: Iterable[str] = (), allow_hosts: Iterable[str] = ()):
        networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for cidr in allow_networks:
            try:
                networks.append(ipaddress.ip_network(cidr, strict=False))
            except ValueError as exc:
                raise ValueError(f"allow_networks: {cidr!r} is not a network: {exc}") from None
        self.networks = tuple(networks)
        """The allowed networks."""
        exact: set[str] = set()
        suffixes: list[str] = []
        for pattern in allow_hosts:
            wildcard = pattern.startswith("*.")
            try:
                name = normalise_host(pattern[2:] if wildcard else pattern)
            except ValueError:
                raise ValueError(f"allow_hosts: {pattern!r} is not a host name") from None
            if wildcard:
                suffixes.append("." + name)
            else:
                exact.add(name)
        self.hosts = frozenset(exact)
        """Host names allowed exactly (normalised)."""
        self.host_suffixes = tuple(suffixes)
        """Suffixes (``.corp.example``) of allowed host names."""

    def host_allowed(self, host: str) -> bool:
        """Whether the normalised host name ``host`` is allow-listed (its addresses are then
        not checked)."""
        return host in self.hosts or any(host.endswith(s) for s in self.host_suffixes)

    def check(self, address: IPAddress) -> str | None:
        """Why ``address`` may not be reached (see :func:`refusal`), or ``None`` when it is
        public or in an allowed network."""
        why = refusal(address)
        if why is None or not self.networks:
            return why
        candidates: list[IPAddress] = [address]
        if isinstance(address, ipaddress.IPv6Address):
            if address.scope_id:
                return why  # a zone-scoped address is never allow-listed by a CIDR
            candidates.extend(embedded_ipv4(address))
        for candidate in candidates:
            for network in self.networks:
                if candidate.version == network.version and candidate in network:
                    return None
        return why
