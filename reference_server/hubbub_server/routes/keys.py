"""The caller's own API keys under ``/api/keys``.

* ``GET /api/keys``: the caller's keys, newest first (revoked and expired ones included), never
  a secret.
* ``POST /api/keys`` ``{"name", "scopes"?, "models"?, "tools"?, "expires_at"?, "roles"?}``:
  a new key for the caller, answered 201 with the key itself in ``key``, shown this once.
  Nobody grants more than they hold (:meth:`hubbub.auth.apikeys.ApiKeys.grant`): 403 otherwise.
* ``DELETE /api/keys/{id}``: revoke one of the caller's keys, on every process; another user's
  key is a 404.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Controller, delete, get, post
from litestar.params import FromPath, JSONBody

from hubbub.auth.apikeys import ApiKeyInfo
from hubbub.auth.scopes import KEYS, MAX_SCOPES, require_scope
from hubbub.errors import NotFoundError
from hubbub_server.problems import PROBLEM_RESPONSES
from hubbub_server.security import Caller, RuntimeDep

__all__ = ["KeysController"]

Word = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]


class NewKey(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Body of ``POST /api/keys``."""

    name: Annotated[str, msgspec.Meta(max_length=100)] = ""
    """A label to recognise the key by."""
    scopes: Annotated[list[Word], msgspec.Meta(max_length=MAX_SCOPES)] | None = None
    """What the key may do; default: what your credentials may (all, unless they are
    restricted)."""
    models: Annotated[list[Word], msgspec.Meta(max_length=MAX_SCOPES)] | None = None
    """The models the key may use (ids `/v1/models` lists); default: those your credentials
    may (all, unless they are restricted)."""
    tools: Annotated[list[Word], msgspec.Meta(max_length=MAX_SCOPES)] | None = None
    """The tools the key may use, by name or pattern (`basic.*`); default: those your
    credentials may (all you may use, unless they are restricted)."""
    expires_at: Annotated[float, msgspec.Meta(gt=0)] | None = None
    """When the key stops working (Unix seconds); default: never (or when the key you use
    expires)."""
    roles: Annotated[list[Word], msgspec.Meta(max_length=MAX_SCOPES)] | None = None
    """Its roles, among yours; default: yours but ``admin``."""


class NewApiKey(ApiKeyInfo, kw_only=True):
    """Answer of ``POST /api/keys``: the key's description and, this once, the key."""

    key: str
    """The key itself (``hbk_<id>_<secret>``): send it as ``Authorization: Bearer``. It is not
    stored and cannot be shown again."""


class KeyList(msgspec.Struct, kw_only=True):
    """Answer of ``GET /api/keys``."""

    keys: list[ApiKeyInfo]
    """Your keys, newest first."""


class KeysController(Controller):
    path = "/api/keys"
    tags = ["keys"]

    @get("/", summary="List your API keys", responses=PROBLEM_RESPONSES)
    async def list_keys(self, runtime: RuntimeDep, principal: Caller) -> KeyList:
        require_scope(principal, KEYS)
        return KeyList(keys=await runtime.api_keys.list(principal.id))

    @post(
        "/",
        summary="Create an API key for yourself (shown once)",
        status_code=201,
        responses=PROBLEM_RESPONSES,
    )
    async def create_key(
        self, runtime: RuntimeDep, principal: Caller, data: JSONBody[NewKey]
    ) -> NewApiKey:
        require_scope(principal, KEYS)
        info, key = await runtime.api_keys.grant(
            principal,
            name=data.name,
            roles=data.roles,
            scopes=data.scopes,
            models=data.models,
            tools=data.tools,
            expires_at=data.expires_at,
            known_models=[model.id for model in runtime.llm.models()],
        )
        return NewApiKey(**msgspec.structs.asdict(info), key=key)

    @delete("/{key_id:str}", summary="Revoke one of your API keys", responses=PROBLEM_RESPONSES)
    async def revoke_key(
        self, runtime: RuntimeDep, principal: Caller, key_id: FromPath[str]
    ) -> None:
        require_scope(principal, KEYS)
        if not await runtime.api_keys.revoke(key_id, owner=principal.id):
            raise NotFoundError(f"you have no active API key {key_id!r}")
