"""Roles and what they mean.

* ``user``: every account has it. A user sees and changes only what they own: their
  conversations, messages, streams, memories, sessions and API keys (another user's is a 404,
  never a 403: its existence is not disclosed).
* ``admin``: also manages accounts, their sessions and keys (``/api/admin/...``), and sees
  the full readiness report from anywhere. Admins do not read other users' conversations
  through the API.

Plugins may define roles of their own (an auth method maps a group claim to ``"support"``...)
and check them with :func:`require_role`.
"""

from __future__ import annotations

from hubbub.errors import PermissionDeniedError
from hubbub.models import Principal

__all__ = ["ADMIN", "USER", "require_role"]

ADMIN = "admin"
"""Manages accounts, sessions and keys."""
USER = "user"
"""Owns conversations, memories, sessions and keys of their own."""


def require_role(principal: Principal, role: str) -> None:
    """:class:`PermissionDeniedError` (403) unless ``principal`` has ``role``."""
    if role not in principal.roles:
        raise PermissionDeniedError(f"this needs the {role!r} role")
