"""MkDocs hooks: fill generated content into pages, so it is always the code's current truth.

``<!-- config-reference -->`` becomes :func:`hubbub.config.reference.render_markdown`;
``<!-- config-example -->`` becomes :func:`hubbub.config.reference.render_example_toml` in a TOML
code block.
"""

from __future__ import annotations

from typing import Any

from hubbub.config.reference import render_example_toml, render_markdown


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    if "<!-- config-reference -->" in markdown:
        markdown = markdown.replace("<!-- config-reference -->", render_markdown())
    if "<!-- config-example -->" in markdown:
        example = f"```toml\n{render_example_toml()}```"
        markdown = markdown.replace("<!-- config-example -->", example)
    return markdown
