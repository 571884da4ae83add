"""Managing accounts: what ``hubbub users ...`` and ``/api/admin/users`` do, in one place.

Every change that should cut a user off takes effect everywhere at once: disabling an
account, changing its roles or its password ends all its sessions (their access tokens are
refused within a second on every process, their streams close)."""

from __future__ import annotations

import logging

import msgspec

from hubbub.auth.roles import ADMIN, USER
from hubbub.auth.sessions import SessionManager
from hubbub.auth.users import User, Users
from hubbub.errors import InvalidRequestError
from hubbub.models import Session

__all__ = ["AccountAdmin", "AccountView"]

logger = logging.getLogger("hubbub.auth")


class AccountView(msgspec.Struct, kw_only=True):
    """An account as administrators see it (never its password hash)."""

    id: str
    """The account's name and principal id."""
    roles: list[str]
    """Its roles, sorted."""
    disabled: bool = False
    """Whether it is disabled."""
    has_password: bool = False
    """Whether it can log in with a password."""
    email: str | None = None
    """Its e-mail address, if known."""
    created_at: float
    """When it was created (Unix seconds)."""
    source: str = "local"
    """The sign-in method that created it (``local``, ``oidc``...)."""

    @classmethod
    def of(cls, user: User) -> AccountView:
        """The view of ``user``."""
        return cls(
            id=user.id,
            roles=sorted(user.roles),
            disabled=user.disabled,
            has_password=user.password_hash is not None,
            email=user.email,
            created_at=user.created_at,
            source=user.source,
        )


class AccountAdmin:
    """Accounts and their sessions, changed together."""

    def __init__(self, users: Users, sessions: SessionManager) -> None:
        self.users = users
        self.sessions = sessions

    async def add(
        self, name: str, password: str | None, *, admin: bool = False, email: str | None = None
    ) -> AccountView:
        """Create an account."""
        return AccountView.of(await self.users.add(name, password, admin=admin, email=email))

    async def list_accounts(self) -> list[AccountView]:
        """Every account."""
        return [AccountView.of(user) for user in await self.users.list()]

    async def get(self, name: str) -> AccountView:
        """One account (:class:`~hubbub.errors.NotFoundError` when there is none)."""
        return AccountView.of((await self.users.require(name)).value)

    async def update(
        self,
        name: str,
        *,
        disabled: bool | None = None,
        admin: bool | None = None,
        password: str | None = None,
    ) -> tuple[AccountView, int]:
        """Change what is given; return the account and how many of its sessions ended.
        Asking to disable it, to set its password or its admin role ends its sessions even
        when nothing changes (a retry after a partial failure cuts them off all the same)."""
        user = (await self.users.require(name)).value
        if password is not None:
            if user.source != "local":
                raise InvalidRequestError(
                    f"{user.id!r} signs in through {user.source!r}: it has no password here",
                    field="password",
                )
            user = await self.users.set_password(user.id, password)
        if admin is not None and (ADMIN in user.roles) != admin:
            roles = {USER, ADMIN} if admin else (set(user.roles) - {ADMIN}) | {USER}
            user = await self.users.set_roles(user.id, frozenset(roles))
        if disabled is not None and user.disabled != disabled:
            user = await self.users.set_disabled(user.id, disabled)
        cut_off = password is not None or admin is not None or disabled is True
        ended = await self.sessions.revoke_all(user.id) if cut_off else 0
        if cut_off:
            logger.info("account %s changed: %d sessions ended", user.id, ended)
        return AccountView.of(user), ended

    async def sessions_of(self, name: str) -> list[Session]:
        """The account's sessions."""
        user = (await self.users.require(name)).value
        return await self.sessions.list(user.id)

    async def end_sessions(self, name: str) -> int:
        """End every session of the account."""
        user = (await self.users.require(name)).value
        return await self.sessions.revoke_all(user.id)
