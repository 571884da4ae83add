"""A SQLite connection served by one dedicated thread, for components that keep data in SQLite.

Every call runs on that thread, never on the event loop, inside its own transaction (committed
on success, rolled back on error), so writers in one process are serialised. WAL mode and a
busy timeout let several processes share the file::

    db = SQLiteDatabase(path, migrations=[["CREATE TABLE t (x)"], ["ALTER TABLE t ADD y"]])
    await db.open()
    rows = await db.run(lambda c: c.execute("SELECT x FROM t").fetchall())
    await db.close()

**Schema.** ``migrations`` are numbered from 1: migration ``n`` brings a file from
``PRAGMA user_version`` ``n - 1`` to ``n``. :meth:`SQLiteDatabase.open` applies those a file
lacks, all in one transaction (a failure leaves the file as it was), and refuses a file whose
version is newer than the code knows (written by a newer release) with a
:class:`~hubbub.errors.ComponentError` naming both versions. Processes starting together on one
file apply them once: the first takes the write lock, the others then find nothing to do. (A
plain ``schema`` script, run at every start, suits tables that never change.)

**Locked by another writer.** A call that meets another process's write lock (``SQLITE_BUSY``,
"database is locked") is tried again with jittered exponential back-off, for up to
``busy_timeout`` seconds in all. SQLite itself waits at most a short slice
(:data:`LOCK_SLICE`) per try, so the database's thread stays free for reads between tries, and
the waits between tries happen on the event loop, never blocking it. When the lock outlives
``busy_timeout``, the call fails with :class:`DatabaseLockedError` (HTTP 503): its transaction
was rolled back, so nothing of it was written, and everything committed before stays. Calls with
``write=True`` run one at a time in the order they were made, retries included, so one task's
writes never overtake another's.

:meth:`SQLiteDatabase.problem` probes the file for real, and cheaply enough for a readiness probe
polled by anyone: at most once per ``health_ttl`` seconds (callers in between share the
answer) it checks the free space of the file's file system, commits a one-row write (which
fails on a full disk, a read-only file or a lost lock), and reads the result of
``PRAGMA quick_check``, which runs at most once per ``integrity_interval`` seconds on a
connection and thread of its own, so that a large file never holds up the database's thread
(its result is awaited for up to ``integrity_wait`` seconds; a longer check reports at a later
probe). A query that meets a damaged page marks the database damaged at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from hubbub.errors import ComponentError, HubbubError
from hubbub.resilience import RetryPolicy

__all__ = [
    "LOCK_SLICE",
    "MIN_FREE_BYTES",
    "DatabaseFailedError",
    "DatabaseLockedError",
    "SQLiteDatabase",
    "is_busy",
]

T = TypeVar("T")

logger = logging.getLogger("hubbub.sqlite")

MIN_FREE_BYTES = 1 << 20
"""Free space (for unprivileged writers) below which the file system counts as full."""

LOCK_SLICE = 0.05
"""Seconds SQLite's own busy handler waits for a lock in one try (at most ``busy_timeout``):
short, so that a call waiting for another process's lock holds the database's thread no longer
than this at a time."""

LOCK_BACKOFF = RetryPolicy(base_delay=0.005, max_delay=0.25, multiplier=2.0)
"""The waits between two tries of a call that met a lock (full jitter): 5 ms doubling up to
250 ms; the call's whole wait is bounded by ``busy_timeout``, not by a number of tries."""

_PROBE_TABLE = (
    "CREATE TABLE IF NOT EXISTS hubbub_health "
    "(id INTEGER PRIMARY KEY CHECK (id = 1), checked_at REAL NOT NULL)"
)
"""The one row :meth:`SQLiteDatabase.problem` writes to prove the file takes writes."""
_DAMAGED = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}
_BUSY = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED}


def is_busy(exc: BaseException) -> bool:
    """Whether ``exc`` is SQLite saying that another connection holds a lock it needs
    (``SQLITE_BUSY`` or ``SQLITE_LOCKED``, any extended code): worth trying again."""
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in _BUSY
    text = str(exc)
    return "database is locked" in text or "database table is locked" in text


class DatabaseLockedError(HubbubError):
    """Another writer held the SQLite file's lock for longer than ``busy_timeout``. The call
    was rolled back, so nothing of it was written: try again later (HTTP 503)."""

    status = 503
    code = "database_locked"
    retry_after = 1.0
    """A second (``Retry-After``): locks are normally short."""

    def __init__(self, path: str, waited: float, tries: int) -> None:
        self.path = path
        """The database file."""
        self.waited = waited
        """Seconds the call waited for the lock before giving up."""
        self.tries = tries
        """How many times the call was tried."""
        super().__init__(
            f"the SQLite database {path} is locked by another writer: gave up after "
            f"{waited:.1f} s and {tries} tries (busy_timeout); nothing of this request was "
            "written, try again"
        )


class DatabaseFailedError(ComponentError):
    """The SQLite file failed a call for another reason than a lock: it is read-only, damaged,
    gone, or the disk failed (HTTP 503, the file named; the call wrote nothing)."""

    code = "database_unavailable"


class SchemaTooNewError(ComponentError):
    """The file's schema version is newer than the code's: a newer release wrote it."""

    code = "schema_too_new"


def _migrate(
    connection: sqlite3.Connection, path: str, migrations: Sequence[Sequence[str]]
) -> None:
    """Bring the file to version ``len(migrations)`` in one transaction, or refuse a newer one."""
    known = len(migrations)

    def version() -> int:
        (found,) = connection.execute("PRAGMA user_version").fetchone()
        return int(found)

    def check(found: int) -> None:
        if found > known:
            raise SchemaTooNewError(
                f"the database {path} has schema version {found}, newer than the version "
                f"{known} this hubbub knows: it was written by a newer release; upgrade hubbub "
                "or configure another file"
            )

    found = version()
    check(found)
    if found == known:
        return
    connection.execute("BEGIN IMMEDIATE")  # waits for another process migrating the same file
    try:
        found = version()
        check(found)
        for number in range(found, known):
            for statement in migrations[number]:
                connection.execute(statement)
        if found != known:
            connection.execute(f"PRAGMA user_version = {known:d}")
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    if found != known:
        logger.info(
            "migrated the database %s from schema version %d to %d",
            path,
            found,
            known,
            extra={"path": path, "from_version": found, "to_version": known},
        )


class SQLiteDatabase:
    """One SQLite file (or ``:memory:``) and the thread that uses it."""

    def __init__(
        self,
        path: str,
        *,
        schema: str = "",
        migrations: Sequence[Sequence[str]] = (),
        busy_timeout: float = 5.0,
        health_ttl: float = 5.0,
        integrity_interval: float = 60.0,
        integrity_wait: float = 0.5,
        watch_file: bool = False,
    ) -> None:
        self.path = path
        self.watch_file = watch_file
        """Check before every call that the file is still the one opened (not deleted, not
        replaced by another): a store whose absence must not pass unnoticed (credentials)."""
        self._identity: tuple[int, int] | None = None
        self.schema = schema
        """A script run at every start (``CREATE TABLE IF NOT EXISTS ...``), before the
        migrations."""
        self.migrations = [list(statements) for statements in migrations]
        """Statements of each schema version, from 1; see the module's documentation."""
        self.busy_timeout = busy_timeout
        """Seconds a call may wait, in all, for another process's lock."""
        self.health_ttl = health_ttl
        """Seconds a probe's answer is reused by :meth:`problem`."""
        self.integrity_interval = integrity_interval
        """Least seconds between two ``PRAGMA quick_check`` runs."""
        self.integrity_wait = integrity_wait
        """Seconds :meth:`problem` waits for a ``quick_check`` it started."""
        self._executor: ThreadPoolExecutor | None = None
        self._connection: sqlite3.Connection | None = None
        self._health: tuple[float, str | None] | None = None
        self._health_lock = asyncio.Lock()
        self._writes = asyncio.Lock()
        """Held by a ``write=True`` call for all its tries: writes keep their order."""
        self._damage: tuple[float, str | None] | None = None
        """When integrity was last judged, and what is wrong (``None``: nothing)."""
        self._integrity_task: asyncio.Future[str | None] | None = None
        self._checking: sqlite3.Connection | None = None

    @property
    def schema_version(self) -> int:
        """The schema version :meth:`open` brings the file to (``0`` without migrations)."""
        return len(self.migrations)

    async def open(self) -> None:
        """Create the file's directory, connect, enable WAL and foreign keys, run the schema
        script and the missing migrations."""
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hubbub-sqlite")

        def connect() -> sqlite3.Connection:
            connection = sqlite3.connect(
                self.path, timeout=self.busy_timeout, check_same_thread=False, isolation_level=None
            )
            # Switching a new file to WAL takes an exclusive lock that SQLite's busy timeout
            # does not wait for: processes starting together (several workers) retry instead.
            deadline = time.monotonic() + self.busy_timeout
            while True:
                try:
                    connection.execute("PRAGMA journal_mode = WAL")
                    if self.schema:
                        connection.executescript(self.schema)
                    _migrate(connection, self.path, self.migrations)
                    connection.execute(_PROBE_TABLE)
                    break
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) or time.monotonic() > deadline:
                        connection.close()
                        raise
                    time.sleep(0.05)
                except BaseException:
                    connection.close()
                    raise
            connection.execute("PRAGMA foreign_keys = ON")
            connection.execute("PRAGMA synchronous = NORMAL")
            # From now on SQLite waits a short slice per try; run() retries on the event loop.
            slice_ms = round(min(self.busy_timeout, LOCK_SLICE) * 1000)
            connection.execute(f"PRAGMA busy_timeout = {slice_ms:d}")
            connection.isolation_level = "DEFERRED"
            return connection

        try:
            self._connection = await asyncio.get_running_loop().run_in_executor(
                self._executor, connect
            )
            if self.watch_file and self.path != ":memory:":
                found = os.stat(self.path)
                self._identity = (found.st_dev, found.st_ino)
        except BaseException:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise

    async def run(self, func: Callable[[sqlite3.Connection], T], *, write: bool = False) -> T:
        """Run ``func(connection)`` on the database thread, in one transaction.

        ``write=True`` takes the write lock first (``BEGIN IMMEDIATE``), so what ``func`` reads
        cannot change (in another process) before it writes: use it for every write. Such
        calls run one at a time, in the order they were made.

        A call that meets another writer's lock is tried again (``func`` runs again, in a new
        transaction) until ``busy_timeout`` has passed, then raises
        :class:`DatabaseLockedError`.
        """
        if not write:
            return await self._run_retrying(func, write=False)
        async with self._writes:
            return await self._run_retrying(func, write=True)

    def check_file(self) -> None:
        """:class:`DatabaseFailedError` when the watched file is gone or is another file."""
        if self._identity is None:
            return
        try:
            found = os.stat(self.path)
        except OSError:
            found = None
        if found is None or (found.st_dev, found.st_ino) != self._identity:
            raise DatabaseFailedError(
                f"the SQLite database {self.path} was deleted or replaced while in use: "
                "restore it (or start the server again to use the new file)"
            )

    async def _run_retrying(self, func: Callable[[sqlite3.Connection], T], *, write: bool) -> T:
        self.check_file()
        loop = asyncio.get_running_loop()
        began = loop.time()
        tries = 0
        while True:
            executor, connection = self._executor, self._connection
            if executor is None or connection is None:
                raise RuntimeError(f"the SQLite database {self.path} is not open")

            def call(connection: sqlite3.Connection = connection) -> T:
                with connection:
                    if write:
                        connection.execute("BEGIN IMMEDIATE")
                    return func(connection)

            tries += 1
            try:
                return await loop.run_in_executor(executor, call)
            except sqlite3.DatabaseError as exc:
                if getattr(exc, "sqlite_errorcode", None) in _DAMAGED:
                    self._damage = (time.monotonic(), f"the database file is damaged: {exc}")
                    self._health = None
                if isinstance(exc, sqlite3.IntegrityError):
                    raise  # a constraint: the caller's to translate (a conflict...)
                if not is_busy(exc):
                    raise DatabaseFailedError(
                        f"the SQLite database {self.path} failed: {exc}"
                    ) from exc
                waited = loop.time() - began
                if waited >= self.busy_timeout:
                    logger.warning(
                        "the SQLite database %s stayed locked by another writer for %.1f s "
                        "(%d tries); giving up",
                        self.path,
                        waited,
                        tries,
                        extra={"path": self.path, "waited": waited, "tries": tries},
                    )
                    raise DatabaseLockedError(self.path, waited, tries) from exc
                delay = LOCK_BACKOFF.delay_for(min(tries, 64))
                await asyncio.sleep(min(delay, self.busy_timeout - waited))

    async def problem(self) -> str | None:
        """What is wrong with the database, for a health check: ``None`` when the file has
        room, takes a committed write and passed its last integrity check. Probes at most once
        per :attr:`health_ttl` seconds; concurrent callers share one probe."""
        cached = self._health
        if cached is not None and time.monotonic() - cached[0] < self.health_ttl:
            return cached[1]
        async with self._health_lock:
            cached = self._health
            if cached is not None and time.monotonic() - cached[0] < self.health_ttl:
                return cached[1]
            problem = await self._probe()
            self._health = (time.monotonic(), problem)
            return problem

    async def _probe(self) -> str | None:
        """What is wrong with the database now, or ``None``."""
        try:
            await self.run(self._room_and_write, write=True)
        except (sqlite3.Error, DatabaseFailedError) as exc:
            if self._damage is not None and self._damage[1]:  # the write met a damaged page
                return self._damage[1]
            cause = exc.__cause__ if isinstance(exc, DatabaseFailedError) else exc
            if isinstance(exc, DatabaseFailedError) and not isinstance(cause, sqlite3.Error):
                return str(exc)  # the file was deleted or replaced
            return f"cannot write to the database: {cause}"
        except (OSError, RuntimeError, DatabaseLockedError) as exc:  # no room; not open; locked
            return str(exc)
        return await self._integrity_problem()

    def _room_and_write(self, connection: sqlite3.Connection) -> None:
        """On the database thread: refuse a full file system, then write the probe row."""
        if self.path != ":memory:":
            stats = os.statvfs(Path(self.path).parent)
            free = stats.f_bavail * stats.f_frsize
            if free < MIN_FREE_BYTES:
                raise OSError(f"no space left: {free // 1024} KiB free beside the database")
        connection.execute(
            "INSERT OR REPLACE INTO hubbub_health (id, checked_at) VALUES (1, ?)", (time.time(),)
        )

    async def _integrity_problem(self) -> str | None:
        """The last integrity verdict; starts a ``quick_check`` when one is due and waits for
        it up to :attr:`integrity_wait` seconds."""
        damage = self._damage
        due = damage is None or time.monotonic() - damage[0] >= self.integrity_interval
        if self._integrity_task is None and due and self.path != ":memory:":
            self._integrity_task = asyncio.get_running_loop().run_in_executor(
                None, self._quick_check
            )
        task = self._integrity_task
        if task is not None:
            await asyncio.wait({task}, timeout=self.integrity_wait)
            if task.done():
                self._integrity_task = None
                try:
                    found = task.result()
                except Exception as exc:  # the check itself failed to run
                    found = f"the integrity check failed: {exc}"
                self._damage = (time.monotonic(), found)
        return self._damage[1] if self._damage else None

    def _quick_check(self) -> str | None:
        """On a thread of its own, with a read-only connection of its own: what
        ``PRAGMA quick_check`` finds wrong with the file, or ``None``."""
        uri = Path(self.path).resolve().as_uri() + "?mode=ro"
        try:
            connection = sqlite3.connect(uri, uri=True, timeout=self.busy_timeout)
        except sqlite3.Error as exc:
            return f"the database file cannot be opened: {exc}"
        self._checking = connection
        try:
            rows = connection.execute("PRAGMA quick_check(3)").fetchall()
        except sqlite3.DatabaseError as exc:
            if getattr(exc, "sqlite_errorcode", None) in _DAMAGED:
                return f"the database file is damaged: {exc}"
            return None  # no verdict (locked, or interrupted as the database closes)
        finally:
            self._checking = None
            connection.close()
        if rows == [("ok",)]:
            return None
        found = "; ".join(" ".join(str(row[0]).split()) for row in rows)
        return f"the database file is damaged: {found}"

    async def close(self) -> None:
        """Close the connection and stop the thread (interrupting an integrity check). Safe to
        call twice, or before ``open``."""
        executor, connection = self._executor, self._connection
        self._executor = self._connection = None
        task, checking = self._integrity_task, self._checking
        if task is not None:
            if checking is not None:
                checking.interrupt()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, self.busy_timeout + 1)
            self._integrity_task = None
        if executor is not None:
            if connection is not None:
                await asyncio.get_running_loop().run_in_executor(executor, connection.close)
            executor.shutdown(wait=False)
