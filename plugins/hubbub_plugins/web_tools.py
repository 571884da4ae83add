"""Tool provider ``web``: ``web.fetch``, a URL's text for the model, with SSRF protection.

The fetching is :class:`hubbub.net.UrlFetcher`'s: http and https only, no credentials in URLs,
every address of the host checked and the connection pinned to a checked one (no DNS
rebinding), loopback, private, link-local (cloud metadata), CGNAT, reserved and every
IPv4-in-IPv6 form of them refused, redirects followed by hand and checked hop by hop, limited
ports, one total deadline, bounded head and body, text only (HTML reduced to its text).
Exceptions for an intranet are the operator's, in ``[plugins.web_tools]``::

    [plugins.web_tools]
    allow_hosts = ["wiki.corp.example", "*.docs.corp.example"]  # addresses not checked
    allow_networks = ["10.20.0.0/16"]                            # reachable although private
    allow_ports = [8080]                                         # besides 80 and 443
    max_bytes = 1000000
    timeout = 15

A refused or failed fetch is a :class:`hubbub.errors.ToolError` whose message the model reads
(``error: refused: 127.0.0.1 is a loopback address``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Annotated
from urllib.parse import urlsplit

import msgspec

from hubbub import hookimpl
from hubbub.contracts import ToolContext
from hubbub.errors import ToolError
from hubbub.net import AddressPolicy, FetchedPage, FetchError, FetchLimits, UrlFetcher
from hubbub.tools import FunctionTool, StaticToolProvider

if TYPE_CHECKING:
    from hubbub.net import Resolver
    from hubbub.registry import ComponentContext, Registrar

__all__ = ["FetchArguments", "WebToolsSettings", "fetch_tool"]

DESCRIPTION = (
    "Fetch a web page or text document by URL (http or https) and return its text: HTML is"
    " reduced to its readable text, JSON and XML come as they are. Addresses on private or"
    " local networks are refused; long documents are cut (truncated is then true)."
)
"""What ``web.fetch`` says of itself to models."""


class WebToolsSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Settings of the ``web_tools`` plugin (``[plugins.web_tools]``)."""

    allow_hosts: list[str] = msgspec.field(default_factory=list)
    """Host names fetched whatever their addresses (``"wiki.corp.example"``;
    ``"*.corp.example"`` for every name under it). Their addresses are not checked: list only
    names whose DNS you control."""
    allow_networks: list[str] = msgspec.field(default_factory=list)
    """Networks (CIDRs, ``"10.20.0.0/16"``, ``"fd00:1::/48"``) reachable although private,
    loopback or otherwise refused."""
    allow_ports: list[Annotated[int, msgspec.Meta(ge=1, le=65535)]] = msgspec.field(
        default_factory=list
    )
    """Ports a URL may name besides 80 and 443."""
    max_bytes: Annotated[int, msgspec.Meta(ge=1, le=100_000_000)] = 1_000_000
    """Most body bytes read from one URL (1 to 100,000,000); past them reading stops and the
    result says ``truncated``. A call's ``max_bytes`` may lower it, never raise it."""
    timeout: Annotated[float, msgspec.Meta(gt=0, le=600)] = 15.0
    """Seconds one fetch may take in all: resolution, connections, redirects and the body
    (more than 0, at most 600). A server that drips its answer is cut there."""
    max_redirects: Annotated[int, msgspec.Meta(ge=0, le=20)] = 5
    """Redirects followed (0 to 20), each target checked like the URL itself."""
    max_header_bytes: Annotated[int, msgspec.Meta(ge=1024, le=1_048_576)] = 32_768
    """Largest response head accepted, in bytes (1024 to 1,048,576)."""
    concurrency: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 16
    """Fetches at once in one process (1 to 1000); more wait for a slot within their
    timeout."""

    def __post_init__(self) -> None:
        """Refuse malformed networks and host patterns when the configuration is loaded."""
        AddressPolicy(self.allow_networks, self.allow_hosts)


class FetchArguments(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The arguments of ``web.fetch``."""

    url: Annotated[
        str, msgspec.Meta(min_length=1, max_length=4096, description="The http or https URL.")
    ]
    """The URL to fetch (http or https)."""
    max_bytes: (
        Annotated[
            int,
            msgspec.Meta(
                ge=1, description="Read at most this many bytes of the body (default: all)."
            ),
        ]
        | None
    ) = None
    """Read at most this many bytes (never more than the configured ``max_bytes``)."""


def fetch_tool(
    settings: WebToolsSettings,
    *,
    resolver: Resolver | None = None,
    logger: logging.Logger | None = None,
) -> FunctionTool:
    """The ``fetch`` tool for ``settings`` (``resolver``: a stand-in resolver for tests)."""
    log = logger or logging.getLogger("hubbub_plugins.web_tools")
    fetcher = UrlFetcher(
        AddressPolicy(settings.allow_networks, settings.allow_hosts),
        limits=FetchLimits(
            max_bytes=settings.max_bytes,
            timeout=settings.timeout,
            max_redirects=settings.max_redirects,
            max_header_bytes=settings.max_header_bytes,
            ports=frozenset({80, 443, *settings.allow_ports}),
        ),
        resolver=resolver,
    )

    async def fetch(args: FetchArguments, context: ToolContext) -> FetchedPage:
        who = {
            "user": context.principal.id if context.principal else None,
            "conversation_id": context.conversation_id,
            "request_id": context.request_id,
        }
        try:
            page = await fetcher.fetch(args.url, max_bytes=args.max_bytes)
        except FetchError as exc:
            # the reason names the URL's host (never a resolved address); no path or query
            log.info("url fetch refused or failed: %s", exc, extra=who)
            raise ToolError(str(exc)) from None
        log.info(
            "url fetched",
            extra={
                **who,
                "origin": _origin(page.url),
                "status": page.status,
                "bytes": page.bytes_read,
                "truncated": page.truncated,
                "redirects": page.redirects,
            },
        )
        return page

    # a few seconds more than the fetch's own deadline, whose message says more
    return FunctionTool(
        fetch,
        description=DESCRIPTION,
        timeout=settings.timeout + 5,
        concurrency=settings.concurrency,
    )


def _origin(url: str) -> str:
    """``scheme://host[:port]`` of a fetched URL, for logs (paths and queries may hold
    secrets)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


@hookimpl
def register_tools(register: Registrar) -> None:
    """Register the ``web`` tool provider."""

    def build(context: ComponentContext[WebToolsSettings]) -> StaticToolProvider:
        return StaticToolProvider([fetch_tool(context.settings, logger=context.logger)])

    register(
        "web",
        build,
        settings=WebToolsSettings,
        description="fetch: a URL's text, private and local addresses refused",
    )
