"""What a principal's scopes allow, and the rule that nobody grants more than they hold.

A **scope** is one word of printable ASCII without spaces (``chat``, ``memory:read``...). Access
tokens carry scopes (their ``scope`` claim) and API keys carry them; a principal without any has
no restriction beyond its roles (:attr:`hubbub.models.Principal.scopes`).

A credential restricted to **models** carries one scope ``model:<id>`` per model it may use
(``model:offline/echo``): a principal holding any such scope may use only those models
(:func:`check_model`), one holding none may use every model. Keeping the models among the scopes
means every credential that has scopes (an API key, an access token) can be restricted the same
way, and the :class:`~hubbub.models.Principal` needs no field of its own for it.

**What hubbub checks.** Besides models, three scopes guard account management
(:func:`require_scope`): ``sessions`` (``/api/auth/sessions``, logout), ``keys`` (``/api/keys``)
and ``admin`` (``/api/admin/...``, with the ``admin`` role). A credential holding any scope that
is not a model is restricted to the scopes it holds there; one holding none (or only models)
is not. Other scopes (``chat``, ...) are free for plugins to define and check.

**Narrowing** (:func:`narrow`): whoever makes a credential from another grants at most what
theirs holds. Restricted scopes (or models) stay restricted: asking for none inherits them, and
asking for one outside them is refused (:class:`~hubbub.errors.PermissionDeniedError`, 403).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from hubbub.errors import InvalidRequestError, PermissionDeniedError
from hubbub.models import ModelInfo, Principal

__all__ = [
    "ADMIN",
    "KEYS",
    "MAX_SCOPES",
    "MODEL_PREFIX",
    "SESSIONS",
    "allowed_models",
    "check_model",
    "check_models",
    "check_scopes",
    "model_scopes",
    "narrow",
    "require_scope",
    "split_scopes",
    "visible_models",
]

MODEL_PREFIX = "model:"
"""How a scope naming an allowed model starts."""

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
        if word.startswith(MODEL_PREFIX):
            raise InvalidRequestError(
                f"scope {word!r}: restrict models with the models list, not a scope",
                field=f"{field}[{index}]",
            )
    return frozenset(words)


def check_models(values: Iterable[str], *, field: str = "models") -> frozenset[str]:
    """The model ids ``values`` if each is well-formed (:class:`InvalidRequestError` naming
    ``field`` otherwise)."""
    return frozenset(_words(values, 256, "model", field))


def model_scopes(models: Iterable[str]) -> frozenset[str]:
    """The scopes that restrict a principal to ``models``."""
    return frozenset(MODEL_PREFIX + model for model in models)


def split_scopes(scopes: Iterable[str]) -> tuple[frozenset[str], frozenset[str]]:
    """``scopes`` as (the scopes that are not about models, the models they allow)."""
    plain: set[str] = set()
    models: set[str] = set()
    for scope in scopes:
        if scope.startswith(MODEL_PREFIX):
            models.add(scope[len(MODEL_PREFIX) :])
        else:
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
