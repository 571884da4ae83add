"""Pointing at configuration problems: the dotted path, the file and line, or the environment
variable that set the value, and msgspec's validation messages made readable."""

from __future__ import annotations

import re
import typing
from collections.abc import Iterable
from typing import Any, Literal

import msgspec

from hubbub.errors import ConfigIssue, did_you_mean

__all__ = ["ENV_PREFIX", "env_var", "locate_line", "make_issue", "validation_issue"]

ENV_PREFIX = "HUBBUB_"


_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_UNKNOWN = re.compile(r"Object contains unknown field `(?P<field>[^`]+)`")


def _struct_at(root: type[msgspec.Struct], path: str) -> type[msgspec.Struct] | None:
    current: Any = root
    for part in [p for p in re.split(r"\.|\[\d+\]", path) if p]:
        info = msgspec.inspect.type_info(current)
        if not isinstance(info, msgspec.inspect.StructType):
            return None
        fields = {f.name: f for f in info.fields}
        if part not in fields:
            return None
        field_type = fields[part].type
        if isinstance(field_type, msgspec.inspect.StructType):
            current = field_type.cls
        else:
            return None
    return current if isinstance(current, type) else None


def _choices_at(root: type[msgspec.Struct], path: str) -> list[Any]:
    """The allowed values, in declared order, of the ``Literal`` field at ``path``."""
    parent, _, name = path.rpartition(".")
    struct = _struct_at(root, parent) if parent else root
    for field in msgspec.structs.fields(struct) if struct else ():
        if field.name == name and typing.get_origin(field.type) is Literal:
            return list(typing.get_args(field.type))
    return []


def _fields_of(struct: type[msgspec.Struct]) -> list[str]:
    return [f for f in struct.__struct_fields__ if f not in ("settings", "origin")]


def validation_issue(
    exc: msgspec.ValidationError, root: type[msgspec.Struct], prefix: str = ""
) -> tuple[str, str]:
    """Turn msgspec's message into ``(dotted path, message)``, with valid keys and a suggestion
    for an unknown key."""
    match = _AT.match(str(exc))
    message = match.group("msg") if match else str(exc)
    path = (match.group("path") or "").lstrip(".") if match else ""
    unknown = _UNKNOWN.match(message)
    if unknown:
        key = unknown.group("field")
        struct = _struct_at(root, path)
        valid = _fields_of(struct) if struct else []
        message = "unknown key" + did_you_mean(key, valid)
        if valid:
            message += "; valid keys: " + ", ".join(valid)
        path = f"{path}.{key}" if path else key
    elif message.startswith("Invalid enum value"):
        choices = _choices_at(root, path)
        message = message.replace("Invalid enum value", "got", 1)
        if choices:
            message = "expected one of " + ", ".join(repr(c) for c in choices) + ", " + message
    else:
        message = message.replace("`", "'")
        message = message[0].lower() + message[1:] if message else message
    full = ".".join(p for p in (prefix, path) if p)
    return full, message


def env_var(path: str) -> str:
    """The environment variable that overrides dotted ``path``: ``HUBBUB_SERVER__PORT``."""
    return ENV_PREFIX + path.upper().replace(".", "__")


def make_issue(
    path: str, message: str, text: str | None, source: str | None, overridden: Iterable[str]
) -> ConfigIssue:
    from_env = [
        p for p in overridden if path == p or path.startswith(p + ".") or p.startswith(path + ".")
    ]
    if from_env:
        variable = env_var(from_env[0])
        return ConfigIssue(path=path, message=message, source=f"environment variable {variable}")
    line = locate_line(text, path) if text else None
    return ConfigIssue(path=path, message=message, line=line, source=source if line else None)


def locate_line(text: str | None, path: str) -> int | None:
    """Best-effort 1-based line of the key at dotted ``path`` in TOML ``text``."""
    if not text or not path:
        return None
    target = [p for p in re.split(r"\.|\[\d+\]", path) if p]
    table: list[str] = []
    header = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
    key = re.compile(r"^\s*([A-Za-z0-9_\-\.\"' ]+?)\s*=")
    best: int | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        if m := header.match(line):
            table = [p.strip().strip("\"'") for p in m.group(1).split(".")]
            if table == target:
                best = number
            continue
        if m := key.match(line):
            parts = table + [p.strip().strip("\"'") for p in m.group(1).split(".")]
            if parts == target:
                return number
            if best is None and parts == target[: len(parts)]:
                best = number  # an inline table or array holding the path
    return best
