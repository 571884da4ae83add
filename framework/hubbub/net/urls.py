"""URLs a fetch may follow: parsed once, strictly, into the parts the connection uses.

Only ``http`` and ``https``; no credentials (``http://example.com@127.0.0.1/`` is refused, not
guessed at); no spaces, control characters or backslashes (parsers disagree about them); the
host normalised (:func:`~hubbub.net.addresses.normalise_host`) and, when it spells an IP
address in any form, replaced by the address in canonical form; ports limited to a set.
"""

from __future__ import annotations

from collections.abc import Collection
from urllib.parse import quote, urlsplit

import msgspec

from hubbub.net.addresses import normalise_host, parse_ip_host
from hubbub.net.errors import FetchRefused

__all__ = ["Target", "parse_url", "shown"]

_PATH_SAFE = "/%:@!$&'()*+,;=-._~?"
"""Characters kept as they are when the path and query are percent-encoded (the reserved ones
and ``%``, so an already encoded URL is unchanged)."""


def shown(url: str, limit: int = 200) -> str:
    """``url`` for a message or a log: its query replaced by ``?...`` (queries carry tokens),
    shortened to ``limit`` characters."""
    base, mark, _ = url.partition("?")
    text = base + "?..." if mark else base
    return text if len(text) <= limit else text[:limit] + "..."


class Target(msgspec.Struct, frozen=True):
    """A URL checked by :func:`parse_url`."""

    url: str
    """The URL as it is reported (normalised host, no fragment)."""
    scheme: str
    """``http`` or ``https``."""
    host: str
    """The normalised host name, or the canonical IP address (no brackets)."""
    port: int
    """The port (the scheme's default when the URL gives none)."""
    target: str
    """Path and query, percent-encoded ASCII (``/`` at least)."""
    is_ip: bool
    """Whether :attr:`host` is an IP address."""

    @property
    def origin(self) -> str:
        """``scheme://host[:port]`` (IPv6 addresses in brackets)."""
        named = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return (
            f"{self.scheme}://{named}"
            if self.port == default
            else f"{self.scheme}://{named}:{self.port}"
        )


def parse_url(url: str, *, ports: Collection[int], max_length: int = 4096) -> Target:
    """Check and take apart ``url``.

    Raises :class:`~hubbub.net.errors.FetchRefused` with the reason (``"refused: only http and
    https URLs are fetched, not file:"``).
    """
    if len(url) > max_length:
        raise FetchRefused(f"refused: the URL is longer than {max_length} characters")
    if any(ch <= " " or ch == "\x7f" or ch == "\\" for ch in url):
        raise FetchRefused(
            "refused: the URL contains spaces, control characters or backslashes"
            " (percent-encode them)"
        )
    try:
        parts = urlsplit(url)
    except ValueError:
        raise FetchRefused(f"refused: {shown(url)!r} is not a valid URL") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        if not scheme:
            raise FetchRefused(f"refused: {shown(url)!r} is not an absolute http or https URL")
        raise FetchRefused(f"refused: only http and https URLs are fetched, not {scheme}:")
    if "@" in parts.netloc:
        raise FetchRefused("refused: credentials in URLs are not allowed")
    raw_host = parts.hostname or ""
    try:
        host = normalise_host(raw_host)
        address = parse_ip_host(host)
    except ValueError as exc:
        raise FetchRefused(f"refused: host {shown(raw_host, 80)!r}: {exc}") from None
    if address is not None:
        host = str(address)
    try:
        port = parts.port
    except ValueError:
        raise FetchRefused("refused: the URL's port is not a valid port number") from None
    if port is None:
        port = 443 if scheme == "https" else 80
    if port not in ports:
        allowed = ", ".join(str(p) for p in sorted(ports))
        raise FetchRefused(f"refused: port {port} is not allowed (allowed: {allowed})")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    path = quote(path, safe=_PATH_SAFE)
    named = f"[{host}]" if ":" in host else host
    default = 443 if scheme == "https" else 80
    authority = named if port == default else f"{named}:{port}"
    return Target(
        url=f"{scheme}://{authority}{path}",
        scheme=scheme,
        host=host,
        port=port,
        target=path,
        is_ip=address is not None,
    )
