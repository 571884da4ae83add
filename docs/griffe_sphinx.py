"""A griffe extension that turns the reST bits of hubbub's Sphinx-style docstrings into Markdown.

mkdocstrings parses the ``:param:`` fields itself; this handles what it would print verbatim:
cross-reference roles (``:class:`Runtime```), ``.. versionadded::`` directives, and the ``::`` that
introduces a literal block. Cross-references become optional autorefs: a link when the target is
documented on the site, plain code otherwise.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?P<role>class|func|meth|attr|data|mod|exc|obj):`(?P<target>[^`]+)`")
_VERSION = re.compile(
    r"^[ \t]*\.\. version(?P<kind>added|changed):: *(?P<version>\S+)[ \t]*\n?", re.M
)
_FIELD = re.compile(r"^:(param|type|raises?|returns?|rtype|var|ivar|cvar)\b", re.M)


def _reference(obj: griffe.Object, match: re.Match[str]) -> str:
    target = match["target"].lstrip("~.")
    try:
        path = obj.resolve(target)
    except griffe.NameResolutionError:
        path = target
    title = target.rsplit(".", 1)[-1] + ("()" if match["role"] in ("func", "meth") else "")
    return f'<autoref identifier="{path}" optional><code>{title}</code></autoref>'


class SphinxToMarkdown(griffe.Extension):
    """Rewrite every docstring once the object tree is complete."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is None:
            return
        text = obj.docstring.value
        notes = [
            f"*{'Added' if m['kind'] == 'added' else 'Changed'} in version {m['version']}.*"
            for m in _VERSION.finditer(text)
        ]
        text = _VERSION.sub("", text).rstrip()
        if notes:  # before the fields, or the parser would glue them to the last parameter
            field = _FIELD.search(text)
            at = field.start() if field else len(text)
            text = f"{text[:at].rstrip()}\n\n{' '.join(notes)}\n\n{text[at:]}".rstrip()
        text = re.sub(r"::$", ":", text, flags=re.M)
        obj.docstring.value = _ROLE.sub(lambda m: _reference(obj, m), text)
