"""A small TOML writer for showing configuration (``hubbub config show``).

It writes what configuration contains: tables, strings, numbers, booleans and lists of those.
``None`` values are left out, since TOML has no null.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

__all__ = ["dump_toml", "toml_value"]


def toml_value(value: Any) -> str:
    """One value as TOML text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a valid TOML basic string
    if isinstance(value, list | tuple | set | frozenset):
        return "[" + ", ".join(toml_value(v) for v in value if v is not None) + "]"
    if isinstance(value, Mapping):
        items = ", ".join(f"{_key(k)} = {toml_value(v)}" for k, v in value.items() if v is not None)
        return "{ " + items + " }" if items else "{}"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else json.dumps(key)


def dump_toml(data: Mapping[str, Any], _prefix: str = "") -> str:
    """``data`` as a TOML document: scalars first, then one ``[table]`` per nested mapping."""
    lines = [
        f"{_key(k)} = {toml_value(v)}"
        for k, v in data.items()
        if v is not None and not isinstance(v, Mapping)
    ]
    for key, value in data.items():
        if isinstance(value, Mapping):
            name = f"{_prefix}{_key(key)}"
            body = dump_toml(value, f"{name}.")
            scalars = any(not isinstance(v, Mapping) and v is not None for v in value.values())
            if scalars or not value:
                lines.append(f"\n[{name}]")
            lines.append(body.rstrip("\n"))
    return "\n".join(line for line in lines if line) + "\n"
