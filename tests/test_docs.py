"""The documentation stays true to the code: every hook spec is documented and has its section in
the hook reference, every configuration key is documented and listed in the reference, the
example configuration loads to the defaults, and the site builds with ``--strict``."""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
import tomllib
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from hubbub import hookspecs
from hubbub.config import Config, PluginsConfig, encode_config, load_config
from hubbub.config.reference import field_docs, render_example_toml, render_markdown

ROOT = Path(__file__).resolve().parent.parent
HOOKS_PAGE = ROOT / "docs" / "plugins" / "hooks.md"


# -- hook specs ------------------------------------------------------------------------------


def hook_specs() -> dict[str, Callable[..., Any]]:
    marker = f"{hookspecs.hookspec.project_name}_spec"
    return {
        name: value
        for name, value in vars(hookspecs).items()
        if inspect.isfunction(value) and hasattr(value, marker)
    }


def hook_doc_problems(func: Callable[..., Any]) -> list[str]:
    """What is missing from a hook spec's docstring."""
    doc = inspect.getdoc(func) or ""
    if not doc.strip():
        return ["no docstring"]
    return [
        f"parameter {name!r} is not described (:param {name}:)"
        for name in inspect.signature(func).parameters
        if f":param {name}:" not in doc
    ]


def test_hook_specs_are_found() -> None:
    assert {"register_tools", "register_cache_backends", "on_startup"} <= set(hook_specs())


@pytest.mark.parametrize("name", sorted(hook_specs()))
def test_hook_spec_is_documented(name: str) -> None:
    assert hook_doc_problems(hook_specs()[name]) == []


def _badly_documented(register: Any, extra: Any) -> None:
    """Mentions only one parameter.

    :param register: the registrar.
    """


def test_hook_doc_check_can_fail() -> None:
    assert hook_doc_problems(_badly_documented) == [
        "parameter 'extra' is not described (:param extra:)"
    ]
    assert hook_doc_problems(lambda: None) == ["no docstring"]


def test_hook_reference_has_one_section_per_hook() -> None:
    entries = re.findall(r"^::: hubbub\.hookspecs\.(\w+)\s*$", HOOKS_PAGE.read_text(), re.M)
    specs = set(hook_specs())
    assert sorted(specs - set(entries)) == [], "hooks without a section in docs/plugins/hooks.md"
    assert sorted(set(entries) - specs) == [], "sections for hooks that do not exist"
    assert len(entries) == len(set(entries)), "a hook has more than one section"


# -- configuration -------------------------------------------------------------------------


def sections() -> list[tuple[str, type[msgspec.Struct]]]:
    """Config's tables as ``(name, struct)``."""
    return [
        (field.name, field.type)
        for field in msgspec.structs.fields(Config)
        if isinstance(field.type, type) and issubclass(field.type, msgspec.Struct)
    ]


def _optional_table(annotation: Any) -> bool:
    """Whether ``annotation`` is ``SomeStruct | None``."""
    members = [m for m in typing.get_args(annotation) if m is not type(None)]
    [only] = members if len(members) == 1 else [None]
    return isinstance(only, type) and issubclass(only, msgspec.Struct)


def keys(struct_type: type[msgspec.Struct]) -> list[msgspec.structs.FieldInfo]:
    """The fields written as TOML keys (tables and ``[plugins.<name>]`` excluded)."""
    return [
        field
        for field in msgspec.structs.fields(struct_type)
        if not (isinstance(field.type, type) and issubclass(field.type, msgspec.Struct))
        and not _optional_table(field.type)  # [budgets.user]: a table of its own
        and not (struct_type is PluginsConfig and field.name == "settings")
        and not (struct_type is Config and field.name == "origin")  # set by the loader
    ]


def undocumented(struct_type: type[msgspec.Struct]) -> list[str]:
    """Fields with neither an attribute docstring nor (for a table) a class docstring."""
    docs = field_docs(struct_type)
    missing = []
    for field in msgspec.structs.fields(struct_type):
        if isinstance(field.type, type) and issubclass(field.type, msgspec.Struct):
            documented = bool(inspect.getdoc(field.type))
        else:
            documented = bool(docs.get(field.name, "").strip())
        if not documented:
            missing.append(f"{struct_type.__name__}.{field.name}")
    return missing


class _Sample(msgspec.Struct):
    documented: int = 1
    """Has a docstring."""
    bare: int = 2


def test_field_docs_reads_attribute_docstrings() -> None:
    assert field_docs(_Sample) == {"documented": "Has a docstring."}
    assert undocumented(_Sample) == ["_Sample.bare"]


def test_every_config_field_has_a_docstring() -> None:
    missing = undocumented(Config)
    for _, struct_type in sections():
        missing += undocumented(struct_type)
    assert missing == [], "configuration fields without a docstring: " + ", ".join(missing)


def test_reference_lists_every_section_and_key() -> None:
    markdown = render_markdown()
    chunks = {chunk.split("\n", 1)[0]: chunk for chunk in markdown.split("\n## ")[1:]}
    expected = {"Top-level keys": keys(Config)}
    expected.update({f"`[{name}]`": keys(struct_type) for name, struct_type in sections()})
    for heading, fields in expected.items():
        assert heading in chunks, f"no section {heading}"
        for field in fields:
            assert f"| `{field.name}` |" in chunks[heading], f"{heading} lacks {field.name}"
    for needle in ("HUBBUB_<SECTION>__<KEY>", "HUBBUB_CONFIG", "HUBBUB_HOME", "[plugins.<name>]"):
        assert needle in markdown
    assert '{ env = "NAME" }' in markdown
    assert '{ file = "' in markdown


def test_example_toml_loads_to_the_defaults() -> None:
    text = render_example_toml()
    tomllib.loads(text)
    config = load_config(text=text, env={})
    assert encode_config(config) == encode_config(Config())
    assert config == Config()


def test_example_toml_shows_every_key() -> None:
    text = render_example_toml()
    parsed = tomllib.loads(text)
    tables = {"": text.split("\n[", 1)[0]}
    for name, _ in sections():
        tables[name] = text.split(f"\n[{name}]\n", 1)[1].split("\n[", 1)[0]
    wanted = [("", field) for field in keys(Config)]
    wanted += [(name, field) for name, struct_type in sections() for field in keys(struct_type)]
    for table, field in wanted:
        values = parsed.get(table, {}) if table else parsed
        shown = field.name in values or re.search(rf"^# {field.name} = ", tables[table], re.M)
        assert shown, f"{table or 'top level'}: {field.name} is missing"


# -- the site ------------------------------------------------------------------------------


@pytest.mark.timeout(600)
def test_docs_build_strict(tmp_path: Path) -> None:
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    configuration = (site / "configuration" / "index.html").read_text()
    assert "config-reference" not in configuration
    assert "max_body_bytes" in configuration
    hooks = (site / "plugins" / "hooks" / "index.html").read_text()
    for name in hook_specs():
        assert f'id="hubbub.hookspecs.{name}"' in hooks
