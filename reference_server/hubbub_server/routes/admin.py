"""Account management under ``/api/admin``, for callers with the ``admin`` role (403 for
anyone else): list, create and change accounts, list and end their sessions. Disabling an
account, changing its roles or its password ends its sessions everywhere."""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Controller, delete, get, patch, post
from litestar.params import FromPath, JSONBody, QueryParameter

from hubbub.auth import scopes
from hubbub.auth.admin import AccountView
from hubbub.auth.apikeys import ApiKeyInfo
from hubbub.auth.roles import ADMIN, require_role
from hubbub.auth.scopes import require_scope
from hubbub.errors import NotFoundError
from hubbub.models import Principal, Session
from hubbub_server.problems import PROBLEM_RESPONSES
from hubbub_server.security import Caller, RuntimeDep

__all__ = ["AdminController"]


class NewAccount(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Body of ``POST /api/admin/users``."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    """The account's name (its principal id)."""
    password: Annotated[str, msgspec.Meta(max_length=65_536)] | None = None
    """Its password; none: no password login (an identity provider's account...)."""
    admin: bool = False
    """Whether it has the admin role."""
    email: Annotated[str, msgspec.Meta(max_length=320)] | None = None
    """Its e-mail address."""


class AccountChange(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Body of ``PATCH /api/admin/users/{name}``: what to change (the rest stays)."""

    disabled: bool | None = None
    """Disable (its sessions end) or enable the account."""
    admin: bool | None = None
    """Give or take the admin role (its sessions end)."""
    password: Annotated[str, msgspec.Meta(max_length=65_536)] | None = None
    """A new password (its sessions end)."""


class AccountChanged(msgspec.Struct, kw_only=True):
    """Answer of ``PATCH /api/admin/users/{name}``."""

    account: AccountView
    """The account now."""
    sessions_ended: int
    """How many of its sessions ended."""


class AccountList(msgspec.Struct, kw_only=True):
    """Answer of ``GET /api/admin/users``."""

    users: list[AccountView]
    """Every account, by name."""


class KeyList(msgspec.Struct, kw_only=True):
    """Answer of ``GET /api/admin/keys``."""

    keys: list[ApiKeyInfo]
    """The keys (never their secrets), newest first."""


class SessionsEnded(msgspec.Struct, kw_only=True):
    """Answer of ``DELETE /api/admin/users/{name}/sessions``."""

    revoked: int
    """How many sessions ended."""


def _admin(principal: Principal) -> None:
    require_role(principal, ADMIN)
    require_scope(principal, scopes.ADMIN)


class AdminController(Controller):
    path = "/api/admin"
    tags = ["admin"]

    @get("/users", summary="List accounts (admin)", responses=PROBLEM_RESPONSES)
    async def list_users(self, runtime: RuntimeDep, principal: Caller) -> AccountList:
        _admin(principal)
        return AccountList(users=await runtime.admin.list_accounts())

    @post("/users", summary="Create an account (admin)", responses=PROBLEM_RESPONSES)
    async def add_user(
        self, runtime: RuntimeDep, principal: Caller, data: JSONBody[NewAccount]
    ) -> AccountView:
        _admin(principal)
        return await runtime.admin.add(data.name, data.password, admin=data.admin, email=data.email)

    @get("/users/{name:str}", summary="One account (admin)", responses=PROBLEM_RESPONSES)
    async def get_user(
        self, runtime: RuntimeDep, principal: Caller, name: FromPath[str]
    ) -> AccountView:
        _admin(principal)
        return await runtime.admin.get(name)

    @patch("/users/{name:str}", summary="Change an account (admin)", responses=PROBLEM_RESPONSES)
    async def change_user(
        self,
        runtime: RuntimeDep,
        principal: Caller,
        name: FromPath[str],
        data: JSONBody[AccountChange],
    ) -> AccountChanged:
        _admin(principal)
        account, ended = await runtime.admin.update(
            name, disabled=data.disabled, admin=data.admin, password=data.password
        )
        return AccountChanged(account=account, sessions_ended=ended)

    @get(
        "/users/{name:str}/sessions",
        summary="An account's sessions (admin)",
        responses=PROBLEM_RESPONSES,
    )
    async def user_sessions(
        self, runtime: RuntimeDep, principal: Caller, name: FromPath[str]
    ) -> list[Session]:
        _admin(principal)
        return await runtime.admin.sessions_of(name)

    @delete(
        "/users/{name:str}/sessions",
        summary="End every session of an account (admin)",
        status_code=200,
        responses=PROBLEM_RESPONSES,
    )
    async def end_sessions(
        self, runtime: RuntimeDep, principal: Caller, name: FromPath[str]
    ) -> SessionsEnded:
        _admin(principal)
        return SessionsEnded(revoked=await runtime.admin.end_sessions(name))

    @get(
        "/keys",
        summary="List API keys, everyone's or one user's (admin)",
        responses=PROBLEM_RESPONSES,
    )
    async def list_keys(
        self,
        runtime: RuntimeDep,
        principal: Caller,
        user: Annotated[
            str | None, QueryParameter(max_length=64, description="Only this user's keys.")
        ] = None,
    ) -> KeyList:
        _admin(principal)
        return KeyList(keys=await runtime.api_keys.list(user))

    @delete(
        "/keys/{key_id:str}", summary="Revoke anyone's API key (admin)", responses=PROBLEM_RESPONSES
    )
    async def revoke_key(
        self, runtime: RuntimeDep, principal: Caller, key_id: FromPath[str]
    ) -> None:
        _admin(principal)
        if not await runtime.api_keys.revoke(key_id):
            raise NotFoundError(f"there is no active API key {key_id!r}")
