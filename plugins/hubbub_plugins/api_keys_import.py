"""Upgrading from the old key database: the keys of ``api_keys.sqlite3`` (or
``[plugins.api_keys] path``) move into the account store, once.

Each key keeps its id, the digest of its secret, its owner, name, roles and its creation and
revocation times, so every key handed out before keeps working (and every revoked one stays
revoked). Keys the account store has already (same id or digest) are left alone, so an import
interrupted half-way is simply run again at the next start. Once every key is in, the old file
is renamed ``api_keys.sqlite3.imported`` (kept as a backup; delete it when you like) and the
import is logged.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sqlite3
from pathlib import Path

from hubbub.auth.apikeys import ApiKeys, StoredKey
from hubbub.auth.roles import USER
from hubbub.auth.users import check_user_name
from hubbub.errors import ComponentError, InvalidRequestError

__all__ = ["import_old_keys"]

SUFFIX = ".imported"
"""Added to the old database's name once its keys are in the account store."""

_ID = re.compile(r"[0-9a-f]{16}")
_DIGEST = re.compile(r"[0-9a-f]{64}")


def _read(path: Path) -> list[dict[str, object]]:
    """Every row of the old ``api_keys`` table, by column name."""
    connection = sqlite3.connect(path, timeout=5.0)  # read-write: a -wal file is taken in
    try:
        connection.row_factory = sqlite3.Row
        table = connection.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'api_keys'"
        ).fetchone()
        if table is None:  # an empty file (made and never used): no keys
            return []
        rows = connection.execute("SELECT * FROM api_keys").fetchall()
        return [dict(row) for row in rows]
    finally:
        connection.close()


def _key(row: dict[str, object]) -> StoredKey | None:
    """The key a row describes; ``None`` when it is malformed."""
    key_id, owner, key_digest = row.get("id"), row.get("principal"), row.get("digest")
    if not (isinstance(key_id, str) and _ID.fullmatch(key_id)):
        return None
    if not (isinstance(key_digest, str) and _DIGEST.fullmatch(key_digest)):
        return None
    if not isinstance(owner, str):
        return None
    try:
        check_user_name(owner)
    except InvalidRequestError:
        return None
    roles = {r for r in str(row.get("roles") or "").split(",") if r}
    created = row.get("created_at")
    revoked = row.get("revoked_at")
    return StoredKey(
        id=key_id,
        owner=owner,
        digest=key_digest,
        name=str(row.get("name") or "")[:100],
        roles=frozenset(roles | {USER}),  # every account has the user role now
        created_at=float(created) if isinstance(created, (int, float)) else 0.0,
        revoked_at=float(revoked) if isinstance(revoked, (int, float)) else None,
    )


def _retire(path: Path) -> Path:
    """Rename the old database (and any ``-wal``/``-shm`` left beside it) out of the way;
    return its new path (``.imported``, or ``.imported.2``... when taken)."""
    target = path.with_name(path.name + SUFFIX)
    number = 1
    while target.exists():
        number += 1
        target = path.with_name(f"{path.name}{SUFFIX}.{number}")
    for extra in ("-wal", "-shm"):
        leftover = Path(f"{path}{extra}")
        if leftover.exists():
            os.replace(leftover, f"{target}{extra}")
    os.replace(path, target)
    return target


async def import_old_keys(path: Path, keys: ApiKeys, log: logging.Logger) -> int | None:
    """Import the keys of the old database at ``path`` into ``keys``' account store, then
    rename it; return how many keys were new (``None`` when there is no old database).
    :class:`ComponentError` (naming the file) when it cannot be read or renamed: nothing is
    lost, the next start tries again."""
    if not await asyncio.to_thread(path.exists):
        return None
    try:
        rows = await asyncio.to_thread(_read, path)
    except (OSError, sqlite3.Error) as exc:
        raise ComponentError(
            f"cannot import the API keys of the old key database {path}: {exc} (move it away "
            "to start without them, or restore a readable copy)"
        ) from None
    imported = skipped = 0
    for row in rows:
        stored = _key(row)
        if stored is None:
            skipped += 1
            log.warning("old API key database %s: skipped a malformed key %r", path, row.get("id"))
        elif await keys.adopt(stored):
            imported += 1
    try:
        retired = await asyncio.to_thread(_retire, path)
    except OSError as exc:
        raise ComponentError(
            f"imported the API keys of {path} but cannot rename it: {exc.strerror or exc}"
        ) from None
    log.info(
        "imported %d API keys from the old key database %s into the account store (%d there "
        "already, %d malformed); the old file is now %s",
        imported,
        path,
        len(rows) - imported - skipped,
        skipped,
        retired,
        extra={"imported": imported, "path": str(path)},
    )
    return imported
