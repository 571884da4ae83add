"""The configuration reference and the example ``hubbub.toml``, generated from the config structs.

Both are made from :mod:`hubbub.config` itself (field types and defaults through
:mod:`msgspec.inspect`, descriptions from the attribute docstrings under each field), so they
cannot drift from the code. :func:`render_markdown` is the documentation site's configuration page;
:func:`render_example_toml` is what ``hubbub config init`` writes; :func:`render_plugin_settings`
documents one plugin's ``[plugins.<name>]`` table. Defaults are shown as TOML values, whatever
the struct declares them with (``msgspec.field(default_factory=list)`` is ``[]``).
"""

from __future__ import annotations

import ast
import functools
import inspect
import itertools
import re
import textwrap
from collections.abc import Mapping
from typing import Any

import msgspec
import msgspec.inspect as mi

from hubbub.config.schema import Config, PluginsConfig, Secret
from hubbub.config.toml import toml_value

__all__ = ["field_docs", "render_example_toml", "render_markdown", "render_plugin_settings"]

_SKIPPED = {(PluginsConfig, "settings"), (Config, "origin")}
"""Fields not written as keys: ``[plugins] settings`` holds the ``[plugins.<name>]`` tables, and
``origin`` records where the configuration came from."""


@functools.cache
def _own_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings written in ``cls``'s own body."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    body = next(n for n in ast.parse(source).body if isinstance(n, ast.ClassDef)).body
    docs = {}
    for node, after in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[node.target.id] = inspect.cleandoc(after.value.value)
    return docs


def field_docs(struct_type: type[msgspec.Struct]) -> dict[str, str]:
    """The attribute docstring of each documented field of ``struct_type`` (inherited ones
    included), by field name."""
    docs: dict[str, str] = {}
    for cls in reversed(struct_type.__mro__):
        docs.update(_own_docs(cls))
    return {name: docs[name] for name in struct_type.__struct_fields__ if name in docs}


# -- shared helpers ----------------------------------------------------------------------------


def _fields(struct_type: type[msgspec.Struct]) -> list[mi.Field]:
    info = mi.type_info(struct_type)
    assert isinstance(info, mi.StructType)
    return [f for f in info.fields if (struct_type, f.name) not in _SKIPPED]


def _sections() -> tuple[list[mi.Field], list[tuple[str, type[msgspec.Struct]]]]:
    """Config's top-level keys, and its tables as ``(name, struct)``."""
    keys, tables = [], []
    for field in _fields(Config):
        if isinstance(field.type, mi.StructType):
            tables.append((field.name, field.type.cls))
        else:
            keys.append(field)
    return keys, tables


def _subtable(field: mi.Field) -> type[msgspec.Struct] | None:
    """The struct of an optional table inside a section (``[budgets.user]``), else ``None``."""
    t = field.type
    if isinstance(t, mi.UnionType):
        members = [m for m in t.types if not isinstance(m, mi.NoneType)]
        t = members[0] if len(members) == 1 else t
    return t.cls if isinstance(t, mi.StructType) else None


def _item_struct(t: mi.Type) -> type[msgspec.Struct] | None:
    """The struct of each entry when ``t`` is an array of tables (``list[SomeStruct]``)."""
    if isinstance(t, mi.ListType | mi.VarTupleType) and isinstance(t.item_type, mi.StructType):
        return t.item_type.cls
    return None


def _named_struct(t: mi.Type) -> type[msgspec.Struct] | None:
    """The struct of each value when ``t`` is a table of tables by name (``dict[str,
    SomeStruct]``)."""
    if isinstance(t, mi.DictType) and isinstance(t.value_type, mi.StructType):
        return t.value_type.cls
    return None


def _nested(path: str, struct_type: type[msgspec.Struct], level: int) -> list[str]:
    """The tables inside ``struct_type`` (at TOML ``path``), each with a heading of ``level``
    and its keys, and theirs in turn: an optional table (``[budgets.user]``), an array of
    tables (``[[mcp.servers]]``) or tables by name (``[tools.users.<name>]``)."""
    out: list[str] = []
    docs = field_docs(struct_type)
    for field in _fields(struct_type):
        key = f"{path}.{field.encode_name}"
        if (inner := _subtable(field)) is not None:
            heading, inner_path = f"[{key}]", key
        elif (inner := _item_struct(field.type)) is not None:
            heading, inner_path = f"[[{key}]]", key
        elif (inner := _named_struct(field.type)) is not None:
            heading, inner_path = f"[{key}.<name>]", f"{key}.<name>"
        else:
            continue
        out += [f"{'#' * level} `{heading}`", "", _text(docs.get(field.name, "")), ""]
        out += [*_table(inner, _fields(inner)), ""]
        out += _nested(inner_path, inner, level + 1)
    return out


def _default(field: mi.Field) -> Any:
    if field.default_factory is not msgspec.NODEFAULT:
        return field.default_factory()
    return None if field.default is msgspec.NODEFAULT else field.default


def _text(doc: str) -> str:
    """Rewrite reST literals (double backticks) and roles (``:class:`X```) as Markdown code."""
    return re.sub(r"(?::[a-z]+:)?``?([^`]+)``?", r"`\1`", doc)


def _type_name(t: mi.Type) -> str:
    """A TOML-flavoured name for a field type."""
    if isinstance(t, mi.UnionType):
        named = [_type_name(m) for m in t.types if not isinstance(m, mi.NoneType)]
        return " or ".join(named) + (" (optional)" if t.includes_none else "")
    if isinstance(t, mi.LiteralType):
        return "one of " + ", ".join(toml_value(v) for v in t.values)
    if isinstance(t, mi.ListType | mi.SetType | mi.FrozenSetType | mi.VarTupleType):
        if isinstance(t.item_type, mi.StructType):
            return "array of tables"
        return f"array of {_type_name(t.item_type)}"
    if isinstance(t, mi.CustomType) and t.cls is Secret:
        return "secret"
    simple = {
        mi.StrType: "string",
        mi.IntType: "integer",
        mi.FloatType: "float",
        mi.BoolType: "boolean",
        mi.DictType: "table",
        mi.StructType: "table",
    }
    name = simple.get(type(t), "any")
    limits = _limits(t)
    return f"{name} ({limits})" if limits else name


def _number(value: float) -> str:
    return f"{value:,}".replace(",", "\u2009") if isinstance(value, int) else f"{value:g}"


def _limits(t: mi.Type) -> str:
    """The range a number (``1 to 256``, ``> 0, ≤ 3600``) or a string (``not empty``) must be
    in, from the field's ``msgspec.Meta``; empty when unconstrained."""
    if isinstance(t, mi.StrType):
        return "not empty" if t.min_length else ""
    if not isinstance(t, mi.IntType | mi.FloatType):
        return ""
    if t.ge is not None and t.le is not None:
        return f"{_number(t.ge)} to {_number(t.le)}"
    bounds = [
        f"{symbol} {_number(value)}"
        for symbol, value in ((">", t.gt), ("≥", t.ge), ("<", t.lt), ("≤", t.le))
        if value is not None
    ]
    return ", ".join(bounds)


def _placeholder(t: mi.Type) -> str:
    """An illustrative value for a key whose default is unset."""
    if isinstance(t, mi.UnionType):
        t = next(m for m in t.types if not isinstance(m, mi.NoneType))
    if isinstance(t, mi.LiteralType):
        return toml_value(t.values[0])
    if isinstance(t, mi.ListType | mi.SetType | mi.FrozenSetType | mi.VarTupleType):
        return f"[{_placeholder(t.item_type)}]"
    return {mi.IntType: "0", mi.FloatType: "0.0", mi.BoolType: "false"}.get(type(t), '"..."')


# -- Markdown ----------------------------------------------------------------------------------

_INTRO = """\
Hubbub reads one TOML file. Values come from, later ones winning:

1. the defaults listed below (`hubbub serve` with no file runs on them);
2. the file: `--config FILE`, else `$HUBBUB_CONFIG`, else `./hubbub.toml` when it exists;
3. environment variables `HUBBUB_<SECTION>__<KEY>` (two underscores between levels). A value is
   read as a TOML literal when it parses as one (`8080`, `true`, `["log"]`), else as a string:
   `HUBBUB_LLM__DEFAULT_MODEL=offline/tools`, `HUBBUB_SERVER__PORT=8080`,
   `HUBBUB_PLUGINS__SQLITE_STORE__PATH=/data/hubbub.db`. `$HUBBUB_HOME` sets `home`.

Unknown keys are errors, reported with the TOML path and line and the valid keys
(`hubbub.toml:3: cache.fallback: ...`), as are numbers out of their range and a `home` that cannot
be a directory. `hubbub config check` validates a file, then runs what `hubbub serve` checks before
it listens (it starts and stops the components once, without serving: a default model no provider
serves is reported with its line), and `hubbub config show` prints the effective configuration
with secrets (keys, passwords, credentials in URLs and in header-like keys) redacted.

**Secrets** (API keys, passwords, signing keys) are never written in clear. A secret setting takes
`{ env = "NAME" }` (read from an environment variable) or `{ file = "/run/secrets/name" }` (read
from a file, surrounding whitespace stripped); a literal string works too, for development.
`hubbub config show` prints secrets as `********`.

**Plugin settings** live in a `[plugins.<name>]` table per plugin, named as `hubbub plugins` lists
it. The table is decoded into the settings struct the plugin declared when it registered its
components, so a misspelled key or a wrong type is an error naming `plugins.<name>.<key>` at
startup. Each plugin documents its own keys.
"""


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _table(struct_type: type[msgspec.Struct], fields: list[mi.Field]) -> list[str]:
    docs = field_docs(struct_type)
    lines = ["| Key | Type | Default | Description |", "| --- | --- | --- | --- |"]
    for field in fields:
        if _subtable(field) is not None:
            continue  # a table of its own, after this one
        value = _default(field)
        default = "unset" if value is None else f"`{toml_value(value)}`"
        description = _cell(_text(docs.get(field.name, "")))
        lines.append(
            f"| `{field.encode_name}` | {_type_name(field.type)} | {_cell(default)} | "
            f"{description} |"
        )
    return lines


def render_plugin_settings(name: str, settings: type[msgspec.Struct], level: int = 3) -> str:
    """The reference of plugin ``name``'s settings as Markdown: a heading (of ``level``), the
    struct's docstring and a table of its keys with their TOML defaults, then the same for the
    entries of each array of tables it holds (``[[plugins.<name>.<key>]]``)."""
    heading = "#" * level
    out = [f"{heading} `[plugins.{name}]`", "", _text(inspect.getdoc(settings) or ""), ""]
    out += [*_table(settings, _fields(settings)), ""]
    for field in _fields(settings):
        item = _item_struct(field.type)
        if item is not None:
            out += [f"{heading}# `[[plugins.{name}.{field.name}]]`", ""]
            out += [_text(inspect.getdoc(item) or ""), "", *_table(item, _fields(item)), ""]
    out += [f"Environment: `HUBBUB_PLUGINS__{name.upper()}__<KEY>`.", ""]
    return "\n".join(out)


def render_markdown(plugin_settings: Mapping[str, type[msgspec.Struct]] | None = None) -> str:
    """The configuration reference, as Markdown (level-2 headings and below), with the settings
    of each plugin in ``plugin_settings`` (plugin name to settings struct)."""
    keys, tables = _sections()
    out = [_INTRO, "## Top-level keys", "", *_table(Config, keys), ""]
    for name, struct_type in tables:
        out += [f"## `[{name}]`", "", _text(inspect.getdoc(struct_type) or ""), ""]
        out += [*_table(struct_type, _fields(struct_type)), ""]
        out += _nested(name, struct_type, 3)
        out += [f"Environment: `HUBBUB_{name.upper()}__<KEY>`.", ""]
        if struct_type is PluginsConfig:
            out += [
                "### `[plugins.<name>]`",
                "",
                "One table per plugin that takes settings, decoded into the struct the plugin",
                "declared (see *Plugin settings* above). Environment:",
                "`HUBBUB_PLUGINS__<NAME>__<KEY>`.",
                "",
                "```toml",
                "[plugins.example]",
                'api_key = { env = "EXAMPLE_API_KEY" }',
                "```",
                "",
            ]
            for plugin, settings in sorted((plugin_settings or {}).items()):
                out.append(render_plugin_settings(plugin, settings))
    return "\n".join(out)


# -- example TOML ------------------------------------------------------------------------------

_TOML_HEADER = """\
# hubbub.toml: the configuration of a hubbub instance (written by `hubbub config init`).
#
# Every key is shown with its default value; keys whose default is unset are commented out.
# Environment variables override the file: HUBBUB_<SECTION>__<KEY>=value, for instance
# HUBBUB_SERVER__PORT=8080. Secrets take { env = "NAME" } or { file = "/run/secrets/name" }.
"""

_TOML_PLUGINS = """\
# Each plugin's settings go in a table named after the plugin, decoded into the settings
# struct the plugin declares (unknown keys are errors). For example:
#
# [plugins.example]
# api_key = { env = "EXAMPLE_API_KEY" }
"""


def _comment(doc: str) -> list[str]:
    lines: list[str] = []
    for paragraph in _text(doc).split("\n\n"):
        if lines:
            lines.append("#")
        text = " ".join(paragraph.split())
        lines += textwrap.wrap(text, 98, initial_indent="# ", subsequent_indent="# ")
    return lines


def _keys(struct_type: type[msgspec.Struct], fields: list[mi.Field]) -> list[str]:
    docs = field_docs(struct_type)
    out: list[str] = []
    for field in fields:
        if _subtable(field) is not None:
            continue  # a table of its own, after these keys
        value = _default(field)
        out += ["", *_comment(docs.get(field.name, ""))]
        if value is None:
            out.append(f"# {field.encode_name} = {_placeholder(field.type)}")
        else:
            out.append(f"{field.encode_name} = {toml_value(value)}")
    return out


def _subtables(table: str, struct_type: type[msgspec.Struct]) -> list[str]:
    """Each optional table inside ``struct_type`` (``[budgets.user]``) with its keys, commented
    out (unset by default)."""
    docs = field_docs(struct_type)
    out: list[str] = []
    for field in _fields(struct_type):
        inner = _subtable(field)
        if inner is not None:
            out += ["", *_comment(docs.get(field.name, "")), f"# [{table}.{field.encode_name}]"]
            out += [
                line if line.startswith("#") or not line else f"# {line}"
                for line in _keys(inner, _fields(inner))
            ]
    return out


def _entries(table: str, struct_type: type[msgspec.Struct]) -> list[str]:
    """For each array of tables in ``struct_type``, one entry of it with every key, commented
    out (entries are examples, not defaults)."""
    out: list[str] = []
    for field in _fields(struct_type):
        item = _item_struct(field.type)
        if item is not None:
            out += ["", *_comment(inspect.getdoc(item) or ""), f"# [[{table}.{field.name}]]"]
            out += [
                line if line.startswith("#") or not line else f"# {line}"
                for line in _keys(item, _fields(item))
            ]
    return out


def render_example_toml(plugin_settings: Mapping[str, type[msgspec.Struct]] | None = None) -> str:
    """A commented ``hubbub.toml`` with every key at its default value, and for each plugin in
    ``plugin_settings`` (plugin name to settings struct) its table, commented out."""
    keys, tables = _sections()
    out = _TOML_HEADER.splitlines() + _keys(Config, keys)
    for name, struct_type in tables:
        out += ["", "", *_comment(inspect.getdoc(struct_type) or ""), f"[{name}]"]
        out += _keys(struct_type, _fields(struct_type))
        out += _subtables(name, struct_type)
        if struct_type is PluginsConfig:
            out += ["", *_TOML_PLUGINS.splitlines()]
    for plugin, struct_type in sorted((plugin_settings or {}).items()):
        out += ["", "", *_comment(inspect.getdoc(struct_type) or ""), f"# [plugins.{plugin}]"]
        out += [
            line if line.startswith("#") or not line else f"# {line}"
            for line in _keys(struct_type, _fields(struct_type))
        ]
        out += _entries(f"plugins.{plugin}", struct_type)
    return "\n".join(out) + "\n"
