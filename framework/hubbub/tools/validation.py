"""Checking a tool's arguments against its JSON Schema (for tools that declare a schema rather
than a type: MCP servers' tools, hand-written ones), in words a model can act on."""

from __future__ import annotations

import logging
from typing import Any

import jsonschema
from jsonschema.exceptions import SchemaError, best_match

__all__ = ["SchemaValidator"]

logger = logging.getLogger("hubbub.tools")

_LONGEST = 300


def _short(text: str) -> str:
    return text if len(text) <= _LONGEST else text[:_LONGEST] + "..."


class SchemaValidator:
    """Validates arguments against one JSON Schema (Draft 2020-12; a schema naming another
    draft in ``$schema`` is read as that draft). A schema that is itself invalid checks only
    that the arguments are an object, and says why in :attr:`schema_problem`. References to
    other documents are never fetched."""

    __slots__ = ("_validator", "schema_problem")

    def __init__(self, schema: dict[str, Any]) -> None:
        self.schema_problem: str | None = None
        """Why the schema cannot be used, or ``None``."""
        self._validator: Any = None
        cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
        try:
            cls.check_schema(schema)
        except SchemaError as exc:
            self.schema_problem = _short(exc.message)
            return
        except RecursionError:
            self.schema_problem = "nested too deeply"
            return
        self._validator = cls(schema)

    def problem(self, arguments: dict[str, Any]) -> str | None:
        """What is wrong with ``arguments`` (``where: what``), or ``None``."""
        if self._validator is None:
            return None
        try:
            error = best_match(self._validator.iter_errors(arguments))
        except RecursionError:
            return "nested too deeply"
        except Exception as exc:  # an unresolvable reference, a broken format checker
            logger.warning("tool arguments could not be checked: %s", exc)
            return None
        if error is None:
            return None
        where = ".".join(str(part) for part in error.absolute_path)
        message = _short(error.message)
        return f"{where}: {message}" if where else message
