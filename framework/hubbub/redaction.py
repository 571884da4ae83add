"""Keeping credentials and the process's insides out of what hubbub shows to people.

* :func:`is_secret_name`: whether a key (a setting, an HTTP header, a query parameter) names a
  credential: ``api_key``, ``Authorization``, ``x-api-key``, ``client_secret``, ``cookie``...
* :func:`redact_urls`: text with the credentials of every URL in it replaced (the userinfo of
  ``https://user:password@host``, and query parameters such as ``?key=`` or ``&token=``).
* :func:`redact`: plain data (what ``hubbub config show`` prints) with every credential replaced,
  at any depth.
* :func:`public_message`: an exception's message fit for a client, a model or an event: one line,
  credentials redacted, no object addresses (``<ssl.SSLContext object at 0x7f...>``) and no
  file-system paths (``/srv/app/.venv/lib/.../tzdata/zoneinfo/Europe`` becomes ``Europe``);
  :func:`describe_error` puts the exception's class before it.
"""

from __future__ import annotations

import os
import re
from typing import Any
from urllib.parse import unquote

__all__ = [
    "REDACTED",
    "describe_error",
    "is_secret_name",
    "public_message",
    "redact",
    "redact_urls",
]

REDACTED = "********"
"""What a redacted value is shown as."""

_SECRET_WORDS = frozenset(
    {
        "authorization",
        "apikey",
        "bearer",
        "cookie",
        "credential",
        "credentials",
        "passphrase",
        "passwd",
        "password",
        "pwd",
        "secret",
        "signature",
        "token",
    }
)
"""A key whose last word is one of these names a credential (``access_token``,
``proxy-authorization``, ``set-cookie``); ``token_url`` or ``password_file`` do not."""
_SECRET_PAIRS = frozenset(
    {("api", "key"), ("access", "key"), ("auth", "key"), ("private", "key"), ("secret", "key")}
)
"""Two last words that name a credential: ``x-api-key``, ``aws_secret_access_key``."""
_QUERY_WORDS = frozenset({"key", "sig", "auth", "code"})
"""Query parameters that carry credentials besides the above (``?key=`` of many web APIs,
``sig`` of signed URLs, ``code`` of OAuth redirects)."""

_CAMEL = re.compile(r"([a-z0-9])([A-Z])")
_WORD_SPLIT = re.compile(r"[^a-z0-9]+")


def _words(name: str) -> list[str]:
    return [w for w in _WORD_SPLIT.split(_CAMEL.sub(r"\1_\2", name).lower()) if w]


def is_secret_name(name: str, *, query: bool = False) -> bool:
    """Whether ``name`` (a configuration key, a header name, or with ``query=True`` a URL query
    parameter) names a credential, judged by its last word or two."""
    words = _words(name)
    if not words:
        return False
    if words[-1] in _SECRET_WORDS or tuple(words[-2:]) in _SECRET_PAIRS:
        return True
    return query and words[-1] in _QUERY_WORDS


_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]+")
_USERINFO = re.compile(r"^(?P<scheme>[^:]+://)(?P<userinfo>[^/?#@]*)@")
_QUERY_PARAM = re.compile(r"(?P<lead>[?&;])(?P<name>[^=&#;]+)=(?P<value>[^&#;]*)")


def _redact_url(url: str) -> str:
    url = _USERINFO.sub(lambda m: f"{m.group('scheme')}{REDACTED}@", url, count=1)
    if "?" not in url:
        return url
    head, _, tail = url.partition("?")

    def param(match: re.Match[str]) -> str:
        if is_secret_name(unquote(match.group("name")), query=True) and match.group("value"):
            return f"{match.group('lead')}{match.group('name')}={REDACTED}"
        return match.group(0)

    return head + _QUERY_PARAM.sub(param, "?" + tail)


def redact_urls(text: str) -> str:
    """``text`` with the credentials of each URL in it replaced by ``********``: the userinfo
    (``user:password@``) and the values of credential query parameters."""
    if "://" not in text:
        return text
    return _URL.sub(lambda m: _redact_url(m.group(0)), text)


_SCHEME_TOKEN = re.compile(r"\b(?P<scheme>Bearer|Basic)\s+[A-Za-z0-9._~+/\-]{8,}=*", re.I)
"""A credential after its HTTP scheme (RFC 6750's ``b64token``; eight characters at least, so
that prose such as ``Bearer <key>`` stays)."""
_HEADER_LINE = re.compile(r"^(?P<name>[A-Za-z0-9\-_]+)\s*:\s*\S")


def _redact_text(text: str, *, header_lines: bool = True) -> str:
    if header_lines:  # a configured header as one string: "Authorization: Bearer ..."
        header = _HEADER_LINE.match(text)
        if header and is_secret_name(header.group("name")):
            return f"{header.group('name')}: {REDACTED}"
    text = redact_urls(text)
    return _SCHEME_TOKEN.sub(lambda m: f"{m.group('scheme')} {REDACTED}", text)


def redact(data: Any) -> Any:
    """A copy of plain data (dicts, lists, strings, numbers) with every credential replaced by
    ``********``: the values of keys that name one (:func:`is_secret_name`; an empty or unset
    value stays as it is, so that what is missing shows), the credentials of URLs, and
    ``Bearer``/``Basic`` tokens and ``Authorization: ...`` lines inside strings."""
    if isinstance(data, dict):
        return {
            key: REDACTED
            if isinstance(key, str) and is_secret_name(key) and data[key] not in (None, "")
            else redact(value)
            for key, value in data.items()
        }
    if isinstance(data, list | tuple):
        return [redact(item) for item in data]
    if isinstance(data, str):
        return _redact_text(data)
    return data


_OBJECT_REPR = re.compile(r"<[^<>]*(?:\bat 0x[0-9A-Fa-f]+|\x00)[^<>]*>")
_DROPPED = re.compile(r"\S*\x00")
_PATH = re.compile(r"(?<![\w:/.~\-])(?:/[^\s'\"/:,;()\[\]<>]+)+/(?P<last>[^\s'\"/:,;()\[\]<>]+)")
MAX_MESSAGE = 500
"""Longest message :func:`public_message` returns, in characters."""
_SCANNED = 8 * MAX_MESSAGE
"""How much of a message :func:`public_message` reads at all."""


def _shorten_path(match: re.Match[str]) -> str:
    """A file-system path's last part; a path whose top directory does not exist here
    (``/v1/chat/completions``, a URL path in the message) stays whole."""
    path = match.group(0)
    top = "/" + path.lstrip("/").split("/", 1)[0]
    try:
        local = os.path.isdir(top)
    except (OSError, ValueError):
        local = False
    return match.group("last") if local else path


def public_message(error: BaseException | str) -> str:
    """A one-line message for ``error`` fit to leave the process (an HTTP problem, an event, a
    tool result a model reads): credentials redacted, object representations with memory
    addresses dropped, absolute paths into this machine's file system shortened to their last
    part, at most :data:`MAX_MESSAGE` characters. An exception without a message gives its
    class name."""
    text = error if isinstance(error, str) else (str(error) or type(error).__name__)
    # Bounded first: what callers put in errors may be theirs (a 1 MB model name), and no
    # pattern below may cost more than a bounded text's worth. Far more is kept than is shown,
    # so what the replacements shorten cannot pull unredacted text into view.
    text = text[:_SCANNED]
    while True:  # innermost first: reprs nest (<bound method X of <Y object at 0x...>>)
        marked = _OBJECT_REPR.sub("\x00", text)
        if marked == text:
            break
        text = marked
    if "\x00" in text:
        text = _DROPPED.sub("", text)  # with what it is glued to (ssl:<...>)
    # (not header lines: "password: too short" is a message about a field, not a header)
    text = _PATH.sub(_shorten_path, _redact_text(text, header_lines=False))
    text = " ".join(text.split())
    if len(text) > MAX_MESSAGE:
        text = text[: MAX_MESSAGE - 1].rstrip() + "…"
    return text


def describe_error(error: BaseException) -> str:
    """``ClassName: message`` for ``error``, the message made public by
    :func:`public_message` (the class name alone when there is no message)."""
    name = type(error).__name__
    message = public_message(error)
    return name if message == name else f"{name}: {message}"
