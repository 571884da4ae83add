"""A fetched body as text: which content types are text, which charset decodes them, and HTML
reduced to its readable text (no scripts, styles or markup).

Everything here works on bytes already bounded by the fetch, in time linear in their length
(a hostile page must not cost more than a plain one).
"""

from __future__ import annotations

import codecs
import html
import re

__all__ = ["decode_body", "html_to_text", "is_text_type", "parse_content_type"]

_SKIPPED = ("script", "style", "noscript", "template", "svg", "math", "iframe", "object")
"""Elements whose content is not readable text."""

_BLOCKS = frozenset(
    {
        "address", "article", "aside", "blockquote", "br", "dd", "details", "div", "dl", "dt",
        "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header",
        "hr", "li", "main", "nav", "ol", "p", "pre", "section", "summary", "table", "td", "th",
        "tr", "ul", "title",
    }
)  # fmt: skip
"""Elements that start a new line of text."""

_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.I)
_SPACES = re.compile(r"[ \t\f\v\r\u00a0]+")
_BLANK_LINES = re.compile(r"\n{3,}")


def parse_content_type(value: str | None) -> tuple[str, str | None]:
    """``(media type lower-cased, charset or None)`` of a ``Content-Type`` header value
    (``("", None)`` when there is none)."""
    if not value:
        return "", None
    media, _, params = value.partition(";")
    charset = None
    for param in params.split(";"):
        key, _, val = param.partition("=")
        if key.strip().lower() == "charset":
            charset = val.strip().strip("\"'") or None
    return media.strip().lower(), charset


def is_text_type(media: str) -> bool:
    """Whether a media type is text a model can read: ``text/*``, JSON and XML (``+json`` and
    ``+xml`` suffixes included)."""
    if media.startswith("text/"):
        return True
    if media in ("application/json", "application/xml", "application/javascript"):
        return True
    return media.startswith("application/") and media.endswith(("+json", "+xml"))


def _codec(name: str | None) -> str | None:
    """The Python text codec for a charset label, or ``None`` (unknown, or not a text
    encoding: ``bytes.decode`` refuses ``base64`` and the like)."""
    if not name:
        return None
    try:
        info = codecs.lookup(name)
    except LookupError:
        return None
    if not getattr(info, "_is_text_encoding", True):
        return None
    return "utf-8-sig" if info.name == "utf-8" else info.name


def decode_body(body: bytes, media: str, charset: str | None) -> str:
    """The body as text: the header's charset, else (HTML) a ``<meta charset>`` in its first
    kilobytes, else a byte-order mark, else UTF-8; undecodable bytes replaced with U+FFFD."""
    codec = _codec(charset)
    if codec is None and "html" in media:
        found = _META_CHARSET.search(body[:4096])
        if found:
            codec = _codec(found.group(1).decode("ascii"))
    if codec is None:
        if body.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            codec = "utf-16"
        else:
            codec = "utf-8-sig"
    try:
        return body.decode(codec, errors="replace")
    except LookupError:  # pragma: no cover - _codec returned only known text codecs
        return body.decode("utf-8", errors="replace")


_TOKEN = re.compile(r"<!--|<(/?)([A-Za-z][A-Za-z0-9:-]*)([^<>]*)>|<[!?/][^<>]*>")
"""What the scanner stops at: a comment's start, a start or end tag (name, then anything up to
the next ``>`` that is not ``<``), a declaration or processing instruction. Every alternative
stops at the next ``<``, so scanning a document is linear in its length, whatever it holds."""

_CLOSERS: dict[str, re.Pattern[str]] = {
    tag: re.compile(rf"</{tag}[\s/>]", re.I) for tag in (*_SKIPPED, "title")
}
"""The end tag of each element whose content is skipped (or is the title)."""


def html_to_text(markup: str) -> tuple[str, str]:
    """``(title, text)`` of an HTML document: the text outside scripts, styles and other
    non-text elements, one line per block, runs of spaces and blank lines collapsed,
    character references decoded.

    A small scanner of its own, linear in the document's length whatever it holds (the
    standard library's :class:`html.parser.HTMLParser` takes minutes over a megabyte of
    unclosed comments on the Python versions hubbub supports): an unclosed comment or skipped
    element ends the text, as it ends the document in a browser.
    """
    parts: list[str] = []
    title = ""
    pos = 0
    end = len(markup)
    while pos < end:
        found = _TOKEN.search(markup, pos)
        if found is None:
            parts.append(markup[pos:])
            break
        if found.start() > pos:
            parts.append(markup[pos : found.start()])
        token = found.group(0)
        pos = found.end()
        if token == "<!--":
            close = markup.find("-->", pos)
            if close < 0:
                break
            pos = close + 3
            continue
        name = (found.group(2) or "").lower()
        if not name:
            continue  # a declaration, processing instruction or stray end tag
        closing = found.group(1) == "/"
        self_closing = (found.group(3) or "").rstrip().endswith("/")
        if not closing and not self_closing and name in _CLOSERS:
            closer = _CLOSERS[name].search(markup, pos)
            inner_end = closer.start() if closer is not None else end
            if name == "title":
                title = title or html.unescape(markup[pos:inner_end])
            else:
                parts.append(" ")
            pos = inner_end
            continue
        if name in _BLOCKS:
            parts.append("\n")
    title = " ".join(title.split())
    text = _SPACES.sub(" ", html.unescape("".join(parts)))
    lines = (line.strip() for line in text.split("\n"))
    text = _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()
    return title, text
