"""The ``api_key`` auth method against a real key database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hubbub.contracts import Credentials
from hubbub.errors import AuthenticationError
from hubbub_plugins.api_keys import ApiKeys


@pytest.fixture
async def keys(tmp_path: Path) -> AsyncIterator[ApiKeys]:
    store = ApiKeys(str(tmp_path / "keys.sqlite3"))
    await store.start()
    yield store
    await store.aclose()


def bearer(key: str) -> Credentials:
    return Credentials(bearer=key)


async def test_a_key_authenticates_its_principal(keys: ApiKeys) -> None:
    _, key = await keys.create("alice", roles=("admin",))
    principal = await keys.authenticate(bearer(key))
    assert principal is not None
    assert (principal.id, principal.auth_method, principal.roles) == (
        "alice",
        "api_key",
        frozenset({"admin"}),
    )


async def test_other_tokens_are_left_to_other_methods(keys: ApiKeys) -> None:
    assert await keys.authenticate(bearer("eyJhbGciOi.a.jwt")) is None
    assert await keys.authenticate(Credentials()) is None


async def test_the_id_matters_even_after_the_key_was_accepted(keys: ApiKeys) -> None:
    _, key = await keys.create("alice")
    revoked_id = (await keys.create("bob"))[0].id
    await keys.revoke(revoked_id)
    assert await keys.authenticate(bearer(key)) is not None  # now accepted (and remembered)
    secret = key.split("_", 2)[2]
    for key_id in ("f" * 16, revoked_id):
        with pytest.raises(AuthenticationError):
            await keys.authenticate(bearer(f"hbk_{key_id}_{secret}"))


async def test_revocation_by_another_process_applies_at_once(keys: ApiKeys) -> None:
    info, key = await keys.create("alice")
    key_id = info.id
    assert await keys.authenticate(bearer(key)) is not None
    other = ApiKeys(keys.db.path)  # as `hubbub keys revoke` would, from another process
    await other.start()
    await other.revoke(key_id)
    await other.aclose()
    with pytest.raises(AuthenticationError, match="revoked"):
        await keys.authenticate(bearer(key))


async def test_revoking_every_key_keeps_the_method_provisioned(keys: ApiKeys) -> None:
    assert not await keys.is_provisioned()
    info, _ = await keys.create("alice")
    await keys.revoke(info.id)
    assert await keys.is_provisioned()  # a server must not fall back to local mode


async def test_listing_never_shows_secrets(keys: ApiKeys) -> None:
    created, key = await keys.create("alice", name="laptop")
    (listed,) = await keys.list("alice")
    assert (listed.id, listed.name, listed.revoked_at) == (created.id, "laptop", None)
    assert key.split("_", 2)[2] not in repr(listed)
