"""Checking a tool's arguments against its JSON Schema (for tools that declare a schema rather
than a type: MCP servers' tools, hand-written ones), in words a model can act on.

The schema comes from outside (an MCP server), so checking is bounded: references to other
documents are never fetched (a schema that needs one refuses every call: it fails closed),
``pattern`` and ``patternProperties`` run with a time limit per match (a catastrophic regular
expression cannot stall the process), and only the first errors are looked at.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from typing import Any

import jsonschema
import referencing
import referencing.exceptions
import regex
from jsonschema.exceptions import SchemaError, ValidationError, best_match

__all__ = ["SchemaValidator"]

logger = logging.getLogger("hubbub.tools")

_LONGEST = 300
ERRORS_LOOKED_AT = 32
"""Validation errors examined to pick the one the model is told about."""
PATTERN_SECONDS = 0.05
"""The longest one ``pattern`` match may take; past it the value is refused."""


def _short(text: str) -> str:
    return text if len(text) <= _LONGEST else text[:_LONGEST] + "..."


def _search(pattern: str, value: str) -> bool:
    """Whether ``pattern`` matches somewhere in ``value`` (``regex``, time-limited)."""
    try:
        return regex.search(pattern, value, timeout=PATTERN_SECONDS) is not None
    except TimeoutError:
        raise _PatternTooSlowError(pattern) from None


class _PatternTooSlowError(Exception):
    """A ``pattern`` took longer than :data:`PATTERN_SECONDS` on a value."""


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not _search(pattern, instance):
        yield ValidationError(f"{_short(repr(instance))} does not match {pattern!r}")


def _pattern_properties(
    validator: Any, patterns: dict[str, Any], instance: Any, schema: Any
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        for key, value in instance.items():
            if _search(pattern, key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


class SchemaValidator:
    """Validates arguments against one JSON Schema (Draft 2020-12; a schema naming another
    draft in ``$schema`` is read as that draft). A schema that is itself invalid checks only
    that the arguments are an object, and says why in :attr:`schema_problem`."""

    __slots__ = ("_validator", "schema_problem")

    def __init__(self, schema: dict[str, Any]) -> None:
        self.schema_problem: str | None = None
        """Why the schema cannot be used, or ``None``."""
        self._validator: Any = None
        base = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
        try:
            base.check_schema(schema)
        except SchemaError as exc:
            self.schema_problem = _short(exc.message)
            return
        except RecursionError:
            self.schema_problem = "nested too deeply"
            return
        cls = jsonschema.validators.extend(
            base, {"pattern": _pattern, "patternProperties": _pattern_properties}
        )
        self._validator = cls(schema, registry=referencing.Registry())

    def problem(self, arguments: dict[str, Any]) -> str | None:
        """What is wrong with ``arguments`` (``where: what``), or ``None``."""
        if self._validator is None:
            return None
        try:
            errors = itertools.islice(self._validator.iter_errors(arguments), ERRORS_LOOKED_AT)
            error = best_match(errors)
        except RecursionError:
            return "nested too deeply"
        except _PatternTooSlowError as exc:
            return f"a value took too long to check against the pattern {_short(str(exc))!r}"
        except referencing.exceptions.Unresolvable as exc:
            return f"the tool's schema refers to {_short(str(exc.ref))!r}, which is not checked"
        except Exception as exc:  # a broken format checker, a schema jsonschema chokes on
            logger.warning("tool arguments could not be checked: %s", exc)
            return "the tool's schema cannot be checked"
        if error is None:
            return None
        where = ".".join(str(part) for part in error.absolute_path)
        message = _short(error.message)
        return f"{where}: {message}" if where else message
