"""What a principal's scopes allow, and the rule that nobody grants more than they hold.

A **scope** is one word of printable ASCII without spaces (``chat``, ``memory:read``...). Access
tokens carry scopes (their ``scope`` claim) and API keys carry them; a principal without any has
no restriction beyond its roles (:attr:`hubbub.models.Principal.scopes`).

A credential restricted to **models** carries one scope ``model:<id>`` per model it may use
(``model:offline/echo``): a principal holding any such scope may use only those models
(:func:`check_model`), one holding none may use every model. Keeping the models among the scopes
means every credential that has scopes (an API key, an access token) can be restricted the same
way, and the :class:`~hubbub.models.Principal` needs no field of its own for it.

A credential restricted to **tools** carries one scope ``tool:<pattern>`` per tool (or pattern of
tools, ``tool:basic.*``) it may use: a principal holding any such scope may use only the tools
they match (:func:`allowed_tools`, applied by :class:`hubbub.tools.access.ToolAccess`).

**What hubbub checks.** Besides models, three scopes guard account management
(:func:`require_scope`): ``sessions`` (``/api/auth/sessions``, logout), ``keys`` (``/api/keys``)
and ``admin`` (``/api/admin/...``, with the ``admin`` role). A credential holding any scope that
is not a model or a tool is restricted to the scopes it holds there; one holding none (or only
models and tools) is not. Other scopes (``chat``, ...) are free for plugins to define and check.

**Narrowing** (:func:`narrow`): whoever makes a credential from another grants at most what
theirs holds. Restricted scopes (or models) stay restricted: asking for none inherits them, and
asking for one outside them is refused (:class:`~hubbub.errors.PermissionDeniedError`, 403).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable

from hubbub.config.schema import TOOL_PATTERN
from hubbub.errors import InvalidRequestError, PermissionDeniedError
from hubbub.models import ModelInfo, Principal

__all__ = [
    "ADMIN",
    "KEYS",
    "MAX_SCOPES",
    "MODEL_PREFIX",
    "SESSIONS",
    "TOOL_PREFIX",
    "allowed_models",
    "allowed_tools",
    "check_model",
    "check_models",
    "check_scopes",
    "check_tools",
    "model_scopes",
    "narrow",
    "narrow_tools",
    "require_scope",
    "split_scopes",
    "tool_scopes",
    "visible_models",
]

MODEL_PREFIX = "model:"
"""How a scope naming an allowed model starts."""

TOOL_PREFIX = "tool:"
"""How a scope naming an allowed tool (or pattern of tools) starts."""

MAX_SCOPES = 32
"""The most scopes (or models) one credential may name."""

_PRINTABLE = re.compile(r"[!-~]+")  # printable ASCII, no space


def _words(values: Iterable[str], longest: int, what: str, field: str) -> list[str]:
    words = list(values)
    if len(words) > MAX_SCOPES:
        raise InvalidRequestError(f"at most {MAX_SCOPES} {what}s may be given", field=field)
    for index, word in enumerate(words):
        if not isinstance(word, str) or len(word) > longest or not _PRINTABLE.fullmatch(word):
            raise InvalidRequestError(
                f"{what} {word!r} is not valid: use 1 to {longest} printable characters "
                "without spaces",
                field=f"{field}[{index}]",
            )
    return words


def check_scopes(values: Iterable[str], *, field: str = "scopes") -> frozenset[str]:
    """The scopes ``values`` if each is valid (:class:`InvalidRequestError` naming ``field``
    otherwise). Models are not scopes here: a ``model:`` scope is refused (give the models
    apart, see :func:`check_models`)."""
    words = _words(values, 128, "scope", field)
    for index, word in enumerate(words):
        for prefix, what in ((MODEL_PREFIX, "models"), (TOOL_PREFIX, "tools")):
            if word.startswith(prefix):
                raise InvalidRequestError(
                    f"scope {word!r}: restrict {what} with the {what} list, not a scope",
                    field=f"{field}[{index}]",
                )
    return frozenset(words)


_TOOL_PATTERN = re.compile(TOOL_PATTERN)


def check_tools(values: Iterable[str], *, field: str = "tools") -> frozenset[str]:
    """The tool names or patterns ``values`` (``basic.*``) if each is well-formed
    (:class:`InvalidRequestError` naming ``field`` otherwise)."""
    words = _words(values, 160, "tool", field)
    for index, word in enumerate(words):
        if not _TOOL_PATTERN.match(word):
            raise InvalidRequestError(
                f"tool {word!r} is not a tool name or pattern: use letters, digits, '_', '-', "
                "'.' and '*'",
                field=f"{field}[{index}]",
            )
    return frozenset(words)


def narrow_tools(held: frozenset[str] | None, requested: frozenset[str] | None) -> frozenset[str]:
    """The tool patterns a new credential gets, made by a caller restricted to ``held``
    (``None``: not restricted): like :func:`narrow`, where a requested name without ``*``
    that one of ``held`` matches is within it too."""
    if requested is not None and not requested:
        raise InvalidRequestError(
            "give at least one tool (a key cannot be restricted to none); leave tools out for "
            "every tool you may use",
            field="tools",
        )
    if not held or not requested:
        return narrow(held or frozenset(), requested, "tools")
    beyond = {
        pattern
        for pattern in requested
        if pattern not in held
        and ("*" in pattern or not any(fnmatch.fnmatchcase(pattern, h) for h in held))
    }
    if beyond:
        raise PermissionDeniedError(
            f"you cannot grant tools your credentials do not hold: {', '.join(sorted(beyond))}"
        )
    return requested


def tool_scopes(tools: Iterable[str]) -> frozenset[str]:
    """The scopes that restrict a principal to ``tools`` (names or patterns)."""
    return frozenset(TOOL_PREFIX + tool for tool in tools)


def allowed_tools(principal: Principal) -> frozenset[str] | None:
    """The tool patterns ``principal`` is restricted to; ``None``: not restricted to tools."""
    tools = frozenset(
        scope[len(TOOL_PREFIX) :] for scope in principal.scopes if scope.startswith(TOOL_PREFIX)
    )
    return tools or None


def check_models(values: Iterable[str], *, field: str = "models") -> frozenset[str]:
    """The model ids ``values`` if each is well-formed (:class:`InvalidRequestError` naming
    ``field`` otherwise)."""
    return frozenset(_words(values, 256, "model", field))


def model_scopes(models: Iterable[str]) -> frozenset[str]:
    """The scopes that restrict a principal to ``models``."""
    return frozenset(MODEL_PREFIX + model for model in models)


def split_scopes(scopes: Iterable[str]) -> tuple[frozenset[str], frozenset[str]]:
    """``scopes`` as (the scopes that are about neither models nor tools, the models they
    allow); see :func:`allowed_tools` for the tools."""
    plain: set[str] = set()
    models: set[str] = set()
    for scope in scopes:
        if scope.startswith(MODEL_PREFIX):
            models.add(scope[len(MODEL_PREFIX) :])
        elif not scope.startswith(TOOL_PREFIX):
            plain.add(scope)
    return frozenset(plain), frozenset(models)


def allowed_models(principal: Principal) -> frozenset[str] | None:
    """The models ``principal`` may use; ``None``: any."""
    models = split_scopes(principal.scopes)[1]
    return models or None


def visible_models(principal: Principal, models: Iterable[ModelInfo]) -> list[ModelInfo]:
    """Those of ``models`` ``principal`` may use (what ``/v1/models`` lists to it)."""
    allowed = allowed_models(principal)
    return [model for model in models if allowed is None or model.id in allowed]


def check_model(principal: Principal, model: str) -> None:
    """:class:`PermissionDeniedError` (403) when ``principal``'s credentials are restricted to
    models and ``model`` is not one of them."""
    allowed = allowed_models(principal)
    if allowed is not None and model not in allowed:
        raise PermissionDeniedError(
            f"these credentials may not use the model {model!r} "
            f"(they may use: {', '.join(sorted(allowed))})"
        )


SESSIONS = "sessions"
"""Manage one's own login sessions."""
KEYS = "keys"
"""Manage one's own API keys."""
ADMIN = "admin"
"""Use the admin API (the ``admin`` role is needed as well)."""


def require_scope(principal: Principal, scope: str) -> None:
    """:class:`PermissionDeniedError` (403) when ``principal``'s credentials are restricted
    to scopes (other than models) and ``scope`` is not one of them."""
    plain = split_scopes(principal.scopes)[0]
    if plain and scope not in plain:
        raise PermissionDeniedError(
            f"these credentials are limited to the scopes {', '.join(sorted(plain))}: "
            f"this needs {scope!r}"
        )


def narrow(held: frozenset[str], requested: frozenset[str] | None, what: str) -> frozenset[str]:
    """What a new credential gets of one kind of restriction (``what``: ``scopes`` or
    ``models``), made by a caller holding ``held`` (empty: unrestricted).

    An unrestricted caller gets ``requested`` (none: unrestricted too). A restricted caller gets
    ``held`` when it asks for nothing, ``requested`` when that is within ``held``, and a
    :class:`PermissionDeniedError` naming what it does not hold otherwise."""
    if not held:
        return requested or frozenset()
    if not requested:
        return held
    beyond = requested - held
    if beyond:
        raise PermissionDeniedError(
            f"you cannot grant {what} your credentials do not hold: {', '.join(sorted(beyond))}"
        )
    return requested
