"""Fetching a URL for someone who must not reach the private network: :class:`UrlFetcher`.

Each hop (the URL, then every redirect target, followed by hand) is checked by
:func:`~hubbub.net.urls.parse_url`, resolved once and judged by
:func:`~hubbub.net.resolve.resolve_checked`, and fetched over a fresh connection made to one
of the checked addresses (:class:`hubbub.http.HttpClient` with ``connect_address``: the host
name is only the ``Host`` header and the TLS server name, verified against the certificate).
So a name that answers differently the second time (DNS rebinding) never gets its second
answer used.

Bounds: one total deadline (``timeout``: resolution, connections, redirects and the body: a
server dripping one byte a second is cut there), the response head (``max_header_bytes``), the
body (``max_bytes``: reading stops past it and the page says it was truncated). Compression is
never asked for (``Accept-Encoding: identity``) and an encoded body is refused, so no
decompression bomb. Only text is read: ``text/*``, JSON and XML; HTML is reduced to its text.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import time
from collections.abc import Sequence
from urllib.parse import urldefrag, urljoin

import msgspec

from hubbub import __version__
from hubbub.http import (
    ConnectError,
    HttpClient,
    HttpError,
    ResponseTooLargeError,
    TLSError,
)
from hubbub.net.addresses import AddressPolicy, IPAddress
from hubbub.net.errors import FetchError, FetchFailed, FetchRefused
from hubbub.net.resolve import Resolver, SystemResolver, resolve_checked
from hubbub.net.text import decode_body, html_to_text, is_text_type, parse_content_type
from hubbub.net.urls import Target, parse_url, shown

__all__ = ["FetchLimits", "FetchedPage", "UrlFetcher"]

logger = logging.getLogger("hubbub.net")

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_ACCEPT = "text/html,application/xhtml+xml,application/json,application/xml;q=0.9,text/*;q=0.8"
_THREAD_BYTES = 64 * 1024
"""HTML bodies larger than this are reduced to text in a worker thread, off the event loop."""
_MAX_ADDRESSES_TRIED = 3
"""Checked addresses of one host tried in turn when connecting fails."""


class FetchLimits(msgspec.Struct, frozen=True, kw_only=True):
    """The bounds of one fetch."""

    max_bytes: int = 1_000_000
    """Most body bytes read; past them reading stops and the page is marked truncated."""
    timeout: float = 15.0
    """Seconds for the whole fetch: resolution, connections, every redirect and the body."""
    max_redirects: int = 5
    """Redirects followed (each target checked like the URL itself)."""
    max_header_bytes: int = 32 * 1024
    """Largest response head (status line and headers)."""
    ports: frozenset[int] = frozenset({80, 443})
    """Ports a URL or redirect may name."""
    max_url_length: int = 4096
    """Longest URL accepted."""


class FetchedPage(msgspec.Struct, kw_only=True):
    """What a fetch read."""

    url: str
    """The URL finally fetched (after redirects)."""
    status: int
    """Its HTTP status (2xx)."""
    content_type: str
    """The media type (``text/html``), without parameters."""
    title: str | None = None
    """An HTML page's title."""
    text: str
    """The body as text (HTML reduced to its readable text)."""
    truncated: bool = False
    """Whether the body was longer than the byte limit and cut there."""
    bytes_read: int = 0
    """Body bytes read."""
    redirects: int = 0
    """Redirects followed."""


class _Hop(msgspec.Struct):
    """One response, as far as the fetch reads it."""

    status: int
    """The status code."""
    location: str | None = None
    """A redirect's ``Location`` (only for redirect statuses)."""
    media: str = ""
    """The media type, lower-cased, without parameters."""
    charset: str | None = None
    """The ``charset`` parameter, when given."""
    body: bytes = b""
    """The body bytes read (at most the limit)."""
    truncated: bool = False
    """Whether the body went on past the limit."""


class UrlFetcher:
    """Fetches http and https URLs within an :class:`~hubbub.net.addresses.AddressPolicy`.

    ``resolver``: how host names are resolved (default :class:`SystemResolver`);
    ``ssl_context``: for https (default: a verifying :func:`ssl.create_default_context`).
    One fetcher serves any number of concurrent fetches; it keeps no connections.
    """

    def __init__(
        self,
        policy: AddressPolicy,
        *,
        limits: FetchLimits | None = None,
        resolver: Resolver | None = None,
        ssl_context: ssl.SSLContext | None = None,
        user_agent: str | None = None,
    ) -> None:
        self.policy = policy
        """Which addresses may be reached."""
        self.limits = limits or FetchLimits()
        """The default bounds."""
        self.resolver: Resolver = resolver or SystemResolver()
        """The resolver."""
        self._ssl = ssl_context
        self._agent = user_agent or f"hubbub-fetch/{__version__}"

    async def fetch(self, url: str, *, max_bytes: int | None = None) -> FetchedPage:
        """Fetch ``url`` and return its text.

        ``max_bytes`` lowers the body limit for this fetch (never raises it). Raises
        :class:`~hubbub.net.errors.FetchRefused` (policy) or
        :class:`~hubbub.net.errors.FetchFailed` (anything else), messages fit for the caller.
        """
        limits = self.limits
        limit = limits.max_bytes if max_bytes is None else max(1, min(max_bytes, limits.max_bytes))
        started = time.monotonic()
        try:
            async with asyncio.timeout(limits.timeout):
                return await self._follow(url, limit)
        except TimeoutError:
            raise FetchFailed(
                f"timed out: {shown(url)} was not fetched within {limits.timeout:g} s"
            ) from None
        finally:
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug(
                    "url fetch ended",
                    extra={"duration_ms": round((time.monotonic() - started) * 1000, 1)},
                )

    async def _follow(self, url: str, limit: int) -> FetchedPage:
        """Fetch ``url``, following redirects by hand, each hop checked anew."""
        limits = self.limits
        current = url
        previous: Target | None = None
        for hop in range(limits.max_redirects + 1):
            try:
                target = parse_url(current, ports=limits.ports, max_length=limits.max_url_length)
                addresses = await resolve_checked(
                    target.host, target.port, self.policy, self.resolver
                )
                response = await self._get(target, addresses, limit)
            except FetchError as exc:
                if previous is None:
                    raise
                raise type(exc)(
                    f"{exc} (redirected to {shown(current)} by {previous.origin})"
                ) from None
            if response.status in _REDIRECTS and response.location is not None:
                if hop == limits.max_redirects:
                    raise FetchFailed(
                        f"too many redirects (more than {limits.max_redirects}) from {shown(url)}"
                    )
                try:
                    current = urldefrag(urljoin(target.url, response.location)).url
                except ValueError:
                    raise FetchRefused(
                        f"refused: {target.origin} redirected to an invalid URL"
                        f" ({shown(response.location, 100)!r})"
                    ) from None
                previous = target
                continue
            if len(response.body) > _THREAD_BYTES:
                return await asyncio.to_thread(_page, target, response, hop)
            return _page(target, response, hop)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _get(self, target: Target, addresses: Sequence[IPAddress], limit: int) -> _Hop:
        """GET ``target`` over a fresh connection to the first of ``addresses`` that accepts
        one."""
        failure: HttpError | None = None
        for address in addresses[:_MAX_ADDRESSES_TRIED]:
            client = HttpClient(
                target.origin,
                connect_address=str(address),
                ssl_context=self._ssl_context() if target.scheme == "https" else None,
                max_connections=1,
                max_waiters=1,
                connect_timeout=None,  # the fetch's deadline bounds it
                read_timeout=None,
                keepalive_expiry=0,
                max_header_bytes=self.limits.max_header_bytes,
            )
            try:
                return await self._exchange(client, target, limit)
            except TLSError as exc:
                raise FetchFailed(f"cannot fetch {target.origin}: {_reason(exc)}") from None
            except ConnectError as exc:
                failure = exc
            except ResponseTooLargeError:
                raise FetchRefused(
                    f"refused: the response head from {target.origin} is larger than "
                    f"{self.limits.max_header_bytes} bytes"
                ) from None
            except HttpError as exc:
                raise FetchFailed(f"cannot fetch {target.origin}: {_reason(exc)}") from None
            finally:
                await client.aclose()
        reason = _reason(failure) if failure is not None else "no address"
        raise FetchFailed(f"cannot connect to {target.origin}: {reason}")

    async def _exchange(self, client: HttpClient, target: Target, limit: int) -> _Hop:
        headers = [("Accept", _ACCEPT), ("User-Agent", self._agent)]
        async with client.stream("GET", target.target, headers=headers, retry_stale=False) as resp:
            status = resp.status
            if status in _REDIRECTS:
                location = resp.headers.get("location")
                if location is not None:
                    return _Hop(status, location=location.strip())
            if status >= 300:
                raise FetchFailed(f"HTTP {status} from {shown(target.url)}")
            encoding = (resp.headers.get("content-encoding") or "identity").strip().lower()
            if encoding != "identity":
                raise FetchRefused(
                    f"refused: {target.origin} sent a {encoding[:32]}-encoded body (compressed"
                    " bodies are not accepted)"
                )
            media, charset = parse_content_type(resp.headers.get("content-type"))
            if not media:
                raise FetchRefused(f"refused: {shown(target.url)} has no Content-Type")
            if not is_text_type(media):
                raise FetchRefused(
                    f"refused: {shown(target.url)} is {media[:64]}; only text, HTML, JSON and"
                    " XML are fetched"
                )
            pieces: list[bytes] = []
            size = 0
            truncated = False
            async for piece in resp:
                room = limit - size
                if len(piece) >= room:
                    pieces.append(piece[:room])
                    size = limit
                    truncated = len(piece) > room or not resp.complete
                    if truncated:
                        break
                    continue
                pieces.append(piece)
                size += len(piece)
            return _Hop(
                status, media=media, charset=charset, body=b"".join(pieces), truncated=truncated
            )

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            context = ssl.create_default_context()
            context.set_alpn_protocols(["http/1.1"])
            self._ssl = context
        return self._ssl


def _page(target: Target, response: _Hop, redirects: int) -> FetchedPage:
    """The page a response makes: its body decoded, HTML reduced to text (linear time)."""
    text = decode_body(response.body, response.media, response.charset)
    title = None
    if "html" in response.media:
        title, text = html_to_text(text)
    return FetchedPage(
        url=target.url,
        status=response.status,
        content_type=response.media,
        title=title or None,
        text=text,
        truncated=response.truncated,
        bytes_read=len(response.body),
        redirects=redirects,
    )


def _reason(exc: HttpError) -> str:
    """An HTTP client error's reason in words that name no address: the request label (which
    names the host) is dropped, and a failed connection is described by its errno only (the
    operating system's message names the address connected to)."""
    cause = exc.__cause__
    if isinstance(exc, ConnectError) and not isinstance(exc, TLSError):
        if isinstance(cause, OSError) and cause.errno:
            return os.strerror(cause.errno).lower()
        return "connection failed"
    text = str(exc)
    prefix = f"{exc.request}: " if exc.request else ""
    return text[len(prefix) :] if prefix and text.startswith(prefix) else text
