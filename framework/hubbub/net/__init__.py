"""``hubbub.net``: reaching URLs on behalf of someone who must not reach the private network.

* :mod:`.addresses`: which IP addresses are public (every IPv4-in-IPv6 form judged by the IPv4
  address it carries), numeric host spellings read as resolvers read them, and the operator's
  exceptions (:class:`AddressPolicy`);
* :mod:`.urls`: strict URL checks (http/https, no credentials, limited ports);
* :mod:`.resolve`: a host resolved once, every address judged (:func:`resolve_checked`), the
  resolver injectable (:class:`Resolver`);
* :mod:`.fetch`: :class:`UrlFetcher`, which connects to a checked address only (pinned), follows
  redirects by hand checking each hop, and bounds time, head and body;
* :mod:`.text`: content types, charsets, HTML reduced to text.

.. code-block:: python

    fetcher = UrlFetcher(AddressPolicy(allow_networks=["10.1.0.0/16"]))
    page = await fetcher.fetch("https://example.com/")   # FetchedPage, or FetchError
"""

from __future__ import annotations

from hubbub.net.addresses import (
    AddressPolicy,
    IPAddress,
    embedded_ipv4,
    normalise_host,
    parse_ip_host,
    refusal,
)
from hubbub.net.errors import FetchError, FetchFailed, FetchRefused
from hubbub.net.fetch import FetchedPage, FetchLimits, UrlFetcher
from hubbub.net.resolve import Resolver, SystemResolver, resolve_checked
from hubbub.net.text import decode_body, html_to_text, is_text_type, parse_content_type
from hubbub.net.urls import Target, parse_url

__all__ = [
    "AddressPolicy",
    "FetchError",
    "FetchFailed",
    "FetchLimits",
    "FetchRefused",
    "FetchedPage",
    "IPAddress",
    "Resolver",
    "SystemResolver",
    "Target",
    "UrlFetcher",
    "decode_body",
    "embedded_ipv4",
    "html_to_text",
    "is_text_type",
    "normalise_host",
    "parse_content_type",
    "parse_ip_host",
    "parse_url",
    "refusal",
    "resolve_checked",
]
