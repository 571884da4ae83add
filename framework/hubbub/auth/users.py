"""User names: what ``hubbub keys create --user NAME`` (and anything else that names a
principal) accepts."""

from __future__ import annotations

import re

from hubbub.errors import InvalidRequestError

__all__ = ["USER_NAME_RULE", "check_user_name"]

_USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}")
USER_NAME_RULE = "1 to 64 letters, digits or . _ @ + -, starting with a letter or digit"
"""The rule, as error messages state it."""


def check_user_name(name: str, *, field: str = "user") -> str:
    """Return ``name`` if it is a valid user name (the principal id of the local user,
    ``local``, is one), else raise :class:`InvalidRequestError` naming ``field``."""
    if _USER_NAME.fullmatch(name):
        return name
    if not name.strip():
        reason = "must not be empty"
    elif name != name.strip():
        reason = "must not start or end with spaces"
    else:
        reason = f"is not valid: use {USER_NAME_RULE}"
    raise InvalidRequestError(f"user name {name!r} {reason}", field=field)
