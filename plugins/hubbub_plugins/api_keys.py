"""Auth method ``api_key``: bearer API keys, and the ``hubbub keys`` commands that manage them.

A key reads ``hbk_<id>_<secret>``. Only a SHA-256 digest of the secret is stored (the secret has
192 random bits, so a slow password hash would add cost and no safety); the key itself is shown
once, when it is created. A well-formed key that is unknown, revoked or wrong is rejected outright;
any other bearer token is left to the next auth method.

Creating the first key records, in the data directory, that keys exist
(:class:`hubbub.auth.ProvisioningMarker`): from then on a missing, replaced or emptied key
database stops the server (and refuses requests while it runs) instead of re-opening local mode.

Revoking a key reaches every process: each server process watches the database for keys
revoked since its last look (one indexed query every ``revocation_poll_interval`` seconds,
whoever revoked them, ``hubbub keys revoke`` in another process included) and publishes
:class:`~hubbub.events.SessionRevoked` naming the key's id, which ends the streams the key
opened (their principal's ``credential_id``). A key revoked through :meth:`ApiKeys.revoke` is
announced at once, and never twice.

    hubbub keys create --user alice --name laptop   # prints the key alone on its last line
    hubbub keys list [--user alice]
    hubbub keys revoke <id>
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import re
import secrets
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import click
import msgspec

from hubbub import hookimpl
from hubbub.auth import CredentialsLostError, ProvisioningMarker, check_user_name
from hubbub.contracts import Credentials
from hubbub.errors import AuthenticationError, ComponentError, InvalidRequestError, NotFoundError
from hubbub.events import SessionRevoked
from hubbub.models import Health, Principal, now
from hubbub.sqlite import SQLiteDatabase

if TYPE_CHECKING:
    from hubbub.events import EventBus
    from hubbub.registry import ComponentContext, Registrar
    from hubbub.services import Tasks

T = TypeVar("T")

PLUGIN = "api_keys"
METHOD = "api_key"
_KEY = re.compile(r"^hbk_(?P<id>[0-9a-f]{16})_(?P<secret>[A-Za-z0-9_\-]{32,64})$")

SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    principal TEXT NOT NULL,
    name TEXT NOT NULL DEFAULT '',
    digest TEXT NOT NULL,
    roles TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    revoked_at REAL
);
CREATE INDEX IF NOT EXISTS api_keys_by_principal ON api_keys (principal);
CREATE INDEX IF NOT EXISTS api_keys_by_revoked_at ON api_keys (revoked_at);
"""

REVOCATION_LOOKBACK = 10.0
"""Seconds before the latest revocation seen that each look at the database reaches back.
Revocations are stamped under the write lock, so their times follow commit order; the margin
covers clocks that step back a little (announced keys are remembered, so none is announced
twice)."""


class ApiKeySettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Settings of the ``api_keys`` plugin (``[plugins.api_keys]``)."""

    path: str | None = None
    """Database of keys; default ``api_keys.sqlite3`` in the data directory."""
    revocation_poll_interval: Annotated[float, msgspec.Meta(ge=0.05, le=60)] = 0.5
    """Seconds between two looks at the database for keys revoked by any process (0.05 to
    60): streams opened with a revoked key end within about this long."""


class ApiKeyInfo(msgspec.Struct, kw_only=True, omit_defaults=True):
    """An API key as listed (never with its secret)."""

    id: str
    principal: str
    name: str = ""
    roles: list[str] = msgspec.field(default_factory=list)
    created_at: float
    revoked_at: float | None = None


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def check_label(name: str) -> str:
    """Return a key's label if it is acceptable (at most 100 characters, no control
    characters), else raise :class:`InvalidRequestError`."""
    if len(name) > 100 or any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        raise InvalidRequestError(
            "a key's label must be at most 100 characters, without control characters",
            field="name",
        )
    return name


def _reason(exc: BaseException) -> str:
    """What went wrong, in one line, with a hint when the likely cause is the file system."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    reason = str(exc) or type(exc).__name__
    if "readonly" in reason or "unable to open" in reason:
        reason += " (the database and its directory must be writable by this process)"
    return reason


class ApiKeys:
    """The ``api_key`` :class:`hubbub.contracts.AuthMethod`, and key management.

    :param path: the key database.
    :param marker: the data directory's :class:`~hubbub.auth.ProvisioningMarker` (default:
        one in the database's directory; none for ``:memory:``).
    :param events: the bus on which revocations are announced (none: not announced, as in
        the ``hubbub keys`` commands, whose revocations the servers' watchers announce).
    :param tasks: where the watcher runs (none: no watcher; :meth:`revoke` still announces).
    :param poll_interval: seconds between two looks for keys revoked by any process.
    :param log: where announcements and the watcher's trouble are logged (default: the
        plugin's logger).
    """

    def __init__(
        self,
        path: str,
        *,
        marker: ProvisioningMarker | None = None,
        events: EventBus | None = None,
        tasks: Tasks | None = None,
        poll_interval: float = 0.5,
        log: logging.Logger | None = None,
    ) -> None:
        self.db = SQLiteDatabase(path, schema=SCHEMA)
        self.events = events
        """The bus revocations are announced on (``None``: they are not)."""
        self.poll_interval = poll_interval
        """Seconds between two looks for keys revoked by any process."""
        self._tasks = tasks
        self._log = log or logging.getLogger(f"hubbub.plugins.{PLUGIN}")
        # Revocations already announced (or made before this process started), by key id,
        # with their revoked_at; forgotten once older than the look-back window.
        self._announced: dict[str, float] = {}
        self._latest_revocation = 0.0  # the newest revoked_at seen
        in_memory = path == ":memory:"
        self.marker = (
            marker if marker is not None or in_memory else ProvisioningMarker(Path(path).parent)
        )
        """Where creating a key is recorded; ``None``: nowhere."""
        self._inode: int | None = None  # of the database file, once open
        # Accepted keys, whole, valid while the database files are unchanged: any write
        # (a revocation from `hubbub keys revoke` in another process included) changes their
        # size or modification time, which empties the cache before the next check.
        self._accepted: dict[str, Principal] = {}
        self._files_seen: tuple[int, ...] = ()

    async def start(self) -> None:
        """Open the database. Fails (:class:`~hubbub.auth.CredentialsLostError`) when keys
        were created for this data directory but the database is gone or holds none, and
        (:class:`ComponentError`) when it cannot be opened."""
        path = self.db.path
        if self._database_missing():
            self._fail_if_keys_were_made(f"the API key database {path} is missing")
        try:
            await self.db.open()
            if path != ":memory:":
                self._inode = os.stat(path).st_ino
                self._files_seen = self._files_signature()
            row = await self.db.run(
                lambda c: c.execute("SELECT 1 FROM api_keys LIMIT 1").fetchone()
            )
        except (OSError, sqlite3.Error) as exc:
            await self.db.close()
            raise ComponentError(
                f"cannot open the API key database {path}: {_reason(exc)}"
            ) from None
        if row is None:
            try:
                self._fail_if_keys_were_made(f"the API key database {path} holds no key")
            except CredentialsLostError:
                await self.db.close()
                raise
        if self.events is not None:
            # Keys revoked before this process started are not news: remember them unsaid.
            self._note_revocations(await self._revoked_since(None))
            if self._tasks is not None:
                self._tasks.start("revocations", self._watch_revocations, restart=True)

    async def _revoked_since(self, since: float | None) -> list[tuple[str, str, float]]:
        """Keys revoked at or after ``since`` (the latest revocations when ``None``): id,
        owner and revocation time, oldest first. One indexed query."""

        def select(c: sqlite3.Connection) -> list[tuple[str, str, float]]:
            after = since
            if after is None:
                latest = c.execute("SELECT max(revoked_at) FROM api_keys").fetchone()[0]
                if latest is None:
                    return []
                after = latest - REVOCATION_LOOKBACK
            return [
                (str(r[0]), str(r[1]), float(r[2]))
                for r in c.execute(
                    "SELECT id, principal, revoked_at FROM api_keys WHERE revoked_at >= ? "
                    "ORDER BY revoked_at",
                    (after,),
                )
            ]

        return await self._run(select)

    def _note_revocations(self, rows: list[tuple[str, str, float]]) -> list[tuple[str, str]]:
        """Remember ``rows`` (id, owner, revoked_at) as announced; return those that were not
        yet (id, owner), and forget revocations older than the look-back window."""
        fresh = []
        for key_id, owner, revoked_at in rows:
            if key_id not in self._announced:
                fresh.append((key_id, owner))
            self._announced[key_id] = revoked_at
            self._latest_revocation = max(self._latest_revocation, revoked_at)
        horizon = self._latest_revocation - REVOCATION_LOOKBACK
        for key_id in [k for k, at in self._announced.items() if at < horizon]:
            del self._announced[key_id]
        return fresh

    def _announce(self, key_id: str, owner: str) -> None:
        """Publish that the key ``key_id`` of ``owner`` was revoked."""
        if self.events is None:
            return
        self.events.publish(SessionRevoked(session_id=key_id, principal_id=owner, owner=owner))
        self._log.info(
            "API key %s of %s revoked: its streams end",
            key_id,
            owner,
            extra={"key_id": key_id, "principal": owner},
        )

    async def check_revocations(self) -> int:
        """Look once for keys revoked (by any process) since the last look and announce each
        new one; return how many were announced. The watcher calls this periodically."""
        since = self._latest_revocation - REVOCATION_LOOKBACK if self._latest_revocation else 0.0
        fresh = self._note_revocations(await self._revoked_since(since))
        for key_id, owner in fresh:
            self._announce(key_id, owner)
        return len(fresh)

    async def _watch_revocations(self) -> None:
        """Run :meth:`check_revocations` every :attr:`poll_interval` seconds, until cancelled."""
        failing = False
        while True:
            await asyncio.sleep(self.poll_interval)
            try:
                await self.check_revocations()
            except ComponentError as exc:  # the database failed: health says so; retry
                if not failing:
                    self._log.warning("cannot look for revoked API keys: %s", exc)
                failing = True
            else:
                if failing:
                    self._log.info("looking for revoked API keys again")
                failing = False

    def _database_missing(self) -> bool:
        return self.db.path != ":memory:" and not os.path.exists(self.db.path)

    def _record_keys_exist(self, marker: ProvisioningMarker) -> None:
        try:
            marker.record(METHOD, os.path.abspath(self.db.path))
        except OSError as exc:
            raise ComponentError(
                f"cannot record in {marker.path} that API keys exist: {_reason(exc)}"
            ) from None

    def _fail_if_keys_were_made(self, what: str) -> None:
        """Raise :class:`~hubbub.auth.CredentialsLostError` (``what`` says what is wrong)
        if the data directory records that keys were created."""
        marker = self.marker
        if marker is not None and marker.records(METHOD):
            raise marker.lost(what)

    def _check_store(self, signature: tuple[int, ...]) -> None:
        """Raise :class:`~hubbub.auth.CredentialsLostError` when the database file was
        deleted or replaced since it was opened and keys were created for it: the open
        connection would go on reading the old file."""
        if self._inode is None or signature[0] == self._inode:
            return
        what = "was deleted" if signature[0] == -1 else "was replaced"
        self._fail_if_keys_were_made(f"the API key database {self.db.path} {what} while running")

    async def _run(self, func: Callable[[sqlite3.Connection], T], *, write: bool = False) -> T:
        """:meth:`SQLiteDatabase.run`, with SQLite's failures (a damaged file, a read-only
        disk) as :class:`ComponentError` (503 from the server, one line from the CLI)."""
        try:
            return await self.db.run(func, write=write)
        except sqlite3.Error as exc:
            raise ComponentError(f"the API key database failed: {_reason(exc)}") from None

    async def health(self) -> Health:
        active = await self._run(
            lambda c: c.execute(
                "SELECT count(*) FROM api_keys WHERE revoked_at IS NULL"
            ).fetchone()[0]
        )
        return Health(detail=f"{active} active keys")

    async def aclose(self) -> None:
        await self.db.close()

    async def is_provisioned(self) -> bool:
        # Any key ever made counts, revoked ones included: revoking the last key must not
        # reopen a server to anonymous callers. Nor may losing the database: see start().
        self._check_store(self._files_signature())
        row = await self._run(lambda c: c.execute("SELECT 1 FROM api_keys LIMIT 1").fetchone())
        if row is None:
            self._fail_if_keys_were_made(f"the API key database {self.db.path} holds no key")
        return row is not None

    async def authenticate(self, credentials: Credentials) -> Principal | None:
        match = _KEY.match(credentials.bearer or "")
        if match is None:
            return None
        key_id, secret = match.group("id"), match.group("secret")
        files = self._files_signature()
        if files != self._files_seen:
            self._check_store(files)
            self._accepted.clear()
            self._files_seen = files
        cached = self._accepted.get(credentials.bearer or "")
        if cached is not None:  # the whole key (id and secret) was accepted before
            return cached
        digest = _digest(secret)
        row = await self._run(
            lambda c: c.execute(
                "SELECT principal, digest, roles, revoked_at FROM api_keys WHERE id = ?", (key_id,)
            ).fetchone()
        )
        # Compare a digest even for unknown ids, so timing does not reveal which ids exist.
        expected = row[1] if row else _digest("")
        if not hmac.compare_digest(expected, digest) or row is None:
            raise AuthenticationError("invalid API key")
        if row[3] is not None:
            raise AuthenticationError("this API key has been revoked")
        principal = Principal(
            id=row[0],
            name=row[0],
            auth_method=METHOD,
            roles=frozenset(r for r in row[2].split(",") if r),
            credential_id=key_id,
        )
        self._accepted[credentials.bearer or ""] = principal
        return principal

    def _files_signature(self) -> tuple[int, ...]:
        """The database file's inode, then modification time and size of it and its WAL
        (``-1`` for a missing file)."""
        signature: list[int] = []
        for suffix in ("", "-wal"):
            try:
                stat = os.stat(self.db.path + suffix)
            except OSError:
                signature += [-1, -1, -1] if not suffix else [-1, -1]
            else:
                inode = [stat.st_ino] if not suffix else []
                signature += [*inode, stat.st_mtime_ns, stat.st_size]
        return tuple(signature)

    async def create(
        self, principal: str, *, name: str = "", roles: tuple[str, ...] = ()
    ) -> tuple[ApiKeyInfo, str]:
        """Create a key for ``principal`` (a valid user name: see
        :func:`hubbub.auth.check_user_name`); return its description and the key (shown once).

        The data directory records that keys exist before the key is stored: if that cannot be
        written, no key is created (:class:`ComponentError`)."""
        check_user_name(principal)
        check_label(name)
        key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
        info = ApiKeyInfo(
            id=key_id, principal=principal, name=name, roles=list(roles), created_at=now()
        )
        marker = self.marker
        first = marker is not None and not marker.exists()
        if marker is not None:
            self._record_keys_exist(marker)
        try:
            await self._run(
                lambda c: c.execute(
                    "INSERT INTO api_keys (id, principal, name, digest, roles, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (key_id, principal, name, _digest(secret), ",".join(roles), info.created_at),
                )
            )
        except ComponentError:
            if first and marker is not None:  # nothing was created after all
                marker.path.unlink(missing_ok=True)
            raise
        return info, f"hbk_{key_id}_{secret}"

    async def revoke(self, key_id: str) -> None:
        """Revoke a key; :class:`NotFoundError` if there is no such active key. The revocation
        is announced at once on :attr:`events` (and the watchers of other processes announce
        it on theirs)."""

        def update(c: sqlite3.Connection) -> tuple[str, str, float] | None:
            # Stamped while holding the write lock, so revocation times follow commit order
            # across processes (what the watchers rely on).
            row = c.execute(
                "SELECT principal FROM api_keys WHERE id = ? AND revoked_at IS NULL", (key_id,)
            ).fetchone()
            if row is None:
                return None
            revoked_at = now()
            c.execute("UPDATE api_keys SET revoked_at = ? WHERE id = ?", (revoked_at, key_id))
            return key_id, str(row[0]), revoked_at

        revoked = await self._run(update, write=True)
        if revoked is None:
            raise NotFoundError(f"no active API key {key_id!r}")
        if self.events is not None:
            for fresh_id, owner in self._note_revocations([revoked]):
                self._announce(fresh_id, owner)

    async def list(self, principal: str | None = None) -> list[ApiKeyInfo]:
        """Keys, newest first, optionally of one principal."""

        def select(c: sqlite3.Connection) -> list[Any]:
            query = "SELECT id, principal, name, roles, created_at, revoked_at FROM api_keys"
            if principal is None:
                return c.execute(query + " ORDER BY created_at DESC").fetchall()
            return c.execute(
                query + " WHERE principal = ? ORDER BY created_at DESC", (principal,)
            ).fetchall()

        return [
            ApiKeyInfo(
                id=r[0],
                principal=r[1],
                name=r[2],
                roles=[x for x in r[3].split(",") if x],
                created_at=r[4],
                revoked_at=r[5],
            )
            for r in await self._run(select)
        ]


def _path(settings: ApiKeySettings, data_dir: Path) -> str:
    return settings.path or str(data_dir / "api_keys.sqlite3")


def _build(context: ComponentContext[ApiKeySettings]) -> ApiKeys:
    settings = context.settings or ApiKeySettings()
    return ApiKeys(
        _path(settings, context.data_dir),
        marker=ProvisioningMarker(context.data_dir),
        events=context.events,
        tasks=context.tasks,
        poll_interval=settings.revocation_poll_interval,
        log=context.logger,
    )


@hookimpl
def register_auth_methods(register: Registrar) -> None:
    register(
        METHOD,
        _build,
        settings=ApiKeySettings,
        description="bearer API keys (hubbub keys create)",
    )


async def _with_keys(config_path: str | None, action: Any) -> Any:
    from hubbub.cli import load_for_cli

    loaded = load_for_cli(config_path)
    settings = loaded.settings.get(PLUGIN) or ApiKeySettings()
    keys = ApiKeys(
        _path(settings, loaded.config.data_dir), marker=ProvisioningMarker(loaded.config.data_dir)
    )
    await keys.start()  # its errors name the database
    try:
        return await action(keys)
    except ComponentError as exc:
        raise ComponentError(f"{exc} (database: {keys.db.path})") from None
    finally:
        await keys.aclose()


def _run_keys(config_path: str | None, action: Any) -> Any:
    """Run ``action(keys)``; hubbub's errors (a damaged database, a read-only data directory)
    become one-line errors, exit code 1."""
    from hubbub.cli import cli_errors

    with cli_errors():
        return asyncio.run(_with_keys(config_path, action))


def _user_option(value: str | None) -> str | None:
    """Check a ``--user`` value: a usage error (one line, exit code 2) when it is not a valid
    user name."""
    from hubbub.cli import UsageProblem

    if value is None:
        return None
    try:
        return check_user_name(value)
    except InvalidRequestError as exc:
        raise UsageProblem(f"--user: {exc}") from None


def _label_option(value: str) -> str:
    from hubbub.cli import UsageProblem

    try:
        return check_label(value)
    except InvalidRequestError as exc:
        raise UsageProblem(f"--name: {exc}") from None


@hookimpl
def register_commands(cli: click.Group) -> None:
    from hubbub.cli import config_option

    @cli.group()
    def keys() -> None:
        """Create, list and revoke API keys."""

    @keys.command()
    @click.option("--user", required=True, help="The principal the key authenticates as.")
    @click.option("--name", default="", help="A label to recognise the key by.")
    @click.option("--admin", is_flag=True, help="Give the key the admin role.")
    @config_option
    def create(user: str, name: str, admin: bool, config_path: str | None) -> None:
        """Create a key; it is printed alone on the last line, and only this once."""
        _user_option(user)
        _label_option(name)
        roles = ("admin",) if admin else ()
        info, key = _run_keys(config_path, lambda k: k.create(user, name=name, roles=roles))
        click.echo(
            f"created API key {info.id} for {user}" + (f" ({name})" if name else ""), err=True
        )
        click.echo("store it now: it cannot be shown again", err=True)
        click.echo(key)

    @keys.command(name="list")
    @click.option("--user", default=None, help="Only this principal's keys.")
    @config_option
    def list_keys(user: str | None, config_path: str | None) -> None:
        """List keys (never their secrets)."""
        _user_option(user)
        for info in _run_keys(config_path, lambda k: k.list(user)):
            state = "revoked" if info.revoked_at else "active"
            click.echo(f"{info.id}  {info.principal}  {state}  {info.name}".rstrip())

    @keys.command()
    @click.argument("key_id")
    @config_option
    def revoke(key_id: str, config_path: str | None) -> None:
        """Revoke a key at once."""
        _run_keys(config_path, lambda k: k.revoke(key_id))
        click.echo(f"revoked API key {key_id}")
