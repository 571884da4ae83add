"""Guarded resolution: a host name resolved once, every address checked, one address to pin.

The resolver is a :class:`Resolver` (a Protocol) so tests can answer what they like (a name
that changes its answer between two look-ups: DNS rebinding); :class:`SystemResolver` asks the
operating system through ``loop.getaddrinfo``. :func:`resolve_checked` is the only place an
address is judged: the caller then connects to one of the addresses it returned, never to the
name again, so an answer that changes after the check is never used.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence
from typing import Protocol

from hubbub.net.addresses import AddressPolicy, IPAddress, parse_ip_host
from hubbub.net.errors import FetchFailed, FetchRefused

__all__ = ["Resolver", "SystemResolver", "resolve_checked"]

MAX_ADDRESSES = 16
"""Addresses kept from one answer (each is checked; the first ones are tried)."""


class Resolver(Protocol):
    """Resolves a host name to IP addresses (as strings, IPv6 ones possibly with ``%zone``)."""

    async def resolve(self, host: str, port: int) -> Sequence[str]:
        """The addresses of ``host`` (an IDNA-encoded name, never an IP literal), in the order
        to try them; raises :class:`OSError` when the name does not resolve."""
        ...


class SystemResolver:
    """The operating system's resolver (``getaddrinfo``, run off the event loop)."""

    async def resolve(self, host: str, port: int) -> Sequence[str]:
        """The TCP addresses of ``host``, duplicates removed, in the resolver's order."""
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )
        return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def resolve_checked(
    host: str, port: int, policy: AddressPolicy, resolver: Resolver
) -> list[IPAddress]:
    """The addresses to connect to for ``host`` (normalised: see
    :func:`~hubbub.net.addresses.normalise_host`), every one allowed by ``policy``.

    An IP literal is judged as it is (unless allow-listed as a host); an allow-listed host
    name is resolved and not judged;
    any other name is resolved once and refused if ANY of its addresses is refused (an
    attacker's name that answers one public and one private address must not get a chance at
    the private one). Errors name the host, never the addresses a name resolved to.

    Raises :class:`~hubbub.net.errors.FetchRefused` or :class:`~hubbub.net.errors.FetchFailed`
    (the name does not resolve).
    """
    try:
        literal = parse_ip_host(host)
    except ValueError as exc:
        raise FetchRefused(f"refused: {host}: {exc}") from None
    if literal is not None:
        why = None if policy.host_allowed(host) else policy.check(literal)
        if why is not None:
            raise FetchRefused(f"refused: {host} is {why}")
        return [literal]
    try:
        answers = await resolver.resolve(host, port)
    except OSError as exc:
        reason = exc.strerror if isinstance(exc, socket.gaierror) and exc.strerror else "error"
        raise FetchFailed(f"cannot resolve {host}: {reason}") from None
    addresses: list[IPAddress] = []
    for answer in list(answers)[:MAX_ADDRESSES]:
        try:
            addresses.append(ipaddress.ip_address(answer))
        except ValueError:
            raise FetchFailed(
                f"cannot resolve {host}: the resolver gave an invalid address"
            ) from None
    if not addresses:
        raise FetchFailed(f"cannot resolve {host}: no address")
    if policy.host_allowed(host):
        return addresses
    for address in addresses:
        why = policy.check(address)
        if why is not None:
            raise FetchRefused(f"refused: {host} resolves to {why}")
    return addresses
