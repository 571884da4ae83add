"""Headers: the case-insensitive view of a response's headers, and the checked encoding of a
request's headers.

Request headers are checked on every request (cheaply: validated names are remembered): a name
must be an HTTP token, a value must be text without line breaks or NUL (a line break would let a
value inject headers), both must be Latin-1, and the headers the client manages itself
(``Host``, ``Content-Length``, ``Transfer-Encoding``, ``Connection``, ``Accept-Encoding``, ...)
cannot be given. Errors name the header, never its value.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from typing import overload

__all__ = ["MANAGED_HEADERS", "Headers", "RequestHeaders", "encode_request_headers"]

RequestHeaders = Sequence[tuple[str, str]] | Mapping[str, str]
"""A request's headers: ``(name, value)`` pairs (a name may repeat) or a mapping."""

MANAGED_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "proxy-connection",
        "upgrade",
        "te",
        "trailer",
        "accept-encoding",
        "expect",
    }
)
"""Lower-case names of the headers the client sets (or refuses) itself: a caller giving one of
them gets a :class:`ValueError`. ``User-Agent`` is not among them: the caller's replaces the
default."""

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
"""An HTTP token (RFC 9110, 5.6.2): what a header name may be made of."""

_MAX_NAMES = 1024
"""How many validated header names :data:`_names` remembers before it starts over."""

_names: dict[str, str] = {}
"""Header names already validated, and their lower-case form (shared by every client: names
are a handful of constants in practice)."""


def _check_name(name: object) -> str:
    """The lower-case form of a header name the caller may send; :class:`ValueError` or
    :class:`TypeError` for any other."""
    if not isinstance(name, str):
        raise TypeError(f"a header name must be a str, not {type(name).__name__}")
    if not _TOKEN.fullmatch(name):
        raise ValueError(f"invalid header name {name[:64]!r}: not an HTTP token")
    lower = name.lower()
    if lower in MANAGED_HEADERS:
        raise ValueError(f"header {name!r} is set by the HTTP client; do not pass it")
    if len(_names) >= _MAX_NAMES:
        _names.clear()
    _names[name] = lower
    return lower


def _bad_value(pairs: Sequence[tuple[str, str]] | list[tuple[str, str]]) -> ValueError | TypeError:
    """The error for the first header whose value cannot be sent (the slow path, after the
    fast checks of :func:`encode_request_headers` failed)."""
    for name, value in pairs:
        if not isinstance(value, str):
            kind = type(value).__name__
            return TypeError(f"header {name!r}: the value must be a str, not {kind}")
        if "\r" in value or "\n" in value or "\0" in value:
            return ValueError(f"header {name!r}: the value contains a line break or NUL")
        try:
            value.encode("latin-1")
        except UnicodeEncodeError:
            return ValueError(f"header {name!r}: the value is not Latin-1 text")
    return ValueError("a header value cannot be sent")  # pragma: no cover - caller checked


def encode_request_headers(headers: RequestHeaders) -> tuple[bytes, bool]:
    """``headers`` as header lines (each ending with CRLF), and whether they include a
    ``User-Agent``.

    Raises :class:`ValueError` (or :class:`TypeError`) naming the header, never showing its
    value, for a name that is not a token or that the client manages (:data:`MANAGED_HEADERS`),
    or a value with a line break or NUL or outside Latin-1.
    """
    pairs: Sequence[tuple[str, str]] | list[tuple[str, str]]
    pairs = list(headers.items()) if isinstance(headers, Mapping) else headers
    if not pairs:
        return b"", False
    names = _names
    has_agent = False
    parts: list[str] = []
    for name, value in pairs:
        lower = names.get(name)
        if lower is None:
            lower = _check_name(name)
        if lower == "user-agent":
            has_agent = True
        if type(value) is not str:
            raise _bad_value(pairs)
        parts.append(f"{name}: {value}\r\n")
    text = "".join(parts)
    count = len(parts)
    if text.count("\n") != count or text.count("\r") != count or "\0" in text:
        raise _bad_value(pairs)
    try:
        return text.encode("latin-1"), has_agent
    except UnicodeEncodeError:
        raise _bad_value(pairs) from None


class Headers:
    """A response's headers: case-insensitive lookups over the ``(name, value)`` pairs in the
    order they arrived (a name may repeat).

    Values are decoded as Latin-1 (HTTP's historical charset: every byte maps to one character).
    ``repr()`` shows the names only, so a logged response never shows a value.
    """

    __slots__ = ("_raw",)

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self._raw = raw
        """The pairs as received, names lower-cased."""

    @property
    def raw(self) -> list[tuple[bytes, bytes]]:
        """The pairs as received: lower-case names and values, as bytes."""
        return self._raw

    @overload
    def get(self, name: str) -> str | None: ...

    @overload
    def get(self, name: str, default: str) -> str: ...

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of header ``name`` (any case), or ``default``."""
        key = name.lower().encode("latin-1", "replace")
        for k, v in self._raw:
            if k == key:
                return v.decode("latin-1")
        return default

    def getall(self, name: str) -> list[str]:
        """Every value of header ``name`` (any case), in order; empty if it is absent."""
        key = name.lower().encode("latin-1", "replace")
        return [v.decode("latin-1") for k, v in self._raw if k == key]

    def items(self) -> list[tuple[str, str]]:
        """Every ``(name, value)`` pair as text, names in lower case, in order."""
        return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in self._raw]

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = name.lower().encode("latin-1", "replace")
        return any(k == key for k, _ in self._raw)

    def __iter__(self) -> Iterator[str]:
        """The names (lower case), once each, in the order they first arrived."""
        return iter(dict.fromkeys(k.decode("latin-1") for k, _ in self._raw))

    def __len__(self) -> int:
        """How many ``(name, value)`` pairs there are."""
        return len(self._raw)

    def __repr__(self) -> str:
        return f"Headers(names={list(self)!r})"
