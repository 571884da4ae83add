"""MkDocs hooks: fill generated content into pages, so it is always the code's current truth.

``<!-- config-reference -->`` becomes :func:`hubbub.config.reference.render_markdown` (with the
built-in plugins' settings); ``<!-- config-example -->`` becomes
:func:`hubbub.config.reference.render_example_toml` in a TOML code block, the same file
``hubbub config init`` writes (the built-in plugins' tables included);
``<!-- plugin-settings -->`` becomes :func:`hubbub.config.reference.render_plugin_settings` for
each built-in plugin that has settings.
"""

from __future__ import annotations

import functools
from typing import Any

import msgspec

from hubbub.config.reference import render_example_toml, render_markdown, render_plugin_settings
from hubbub.plugins import load_plugins
from hubbub.runtime.selection import settings_types


@functools.cache
def builtin_settings() -> dict[str, type[msgspec.Struct]]:
    """The settings struct of each built-in plugin that declares one, by plugin name (plugins
    installed besides hubbub are left out: the site documents hubbub)."""
    plugins = load_plugins(env={})
    builtin = {name for name, info in plugins.info.items() if info.source == "built-in"}
    declared = settings_types(plugins.registries())
    return {name: settings for name, settings in declared.items() if name in builtin}


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    """Replace the markers of a page with what they stand for."""
    if "<!-- config-reference -->" in markdown:
        reference = render_markdown(builtin_settings())
        markdown = markdown.replace("<!-- config-reference -->", reference)
    if "<!-- config-example -->" in markdown:
        example = f"```toml\n{render_example_toml(builtin_settings())}```"
        markdown = markdown.replace("<!-- config-example -->", example)
    if "<!-- plugin-settings -->" in markdown:
        settings = builtin_settings()
        tables = "\n".join(
            render_plugin_settings(name, settings[name]) for name in sorted(settings)
        )
        markdown = markdown.replace("<!-- plugin-settings -->", tables)
    return markdown
