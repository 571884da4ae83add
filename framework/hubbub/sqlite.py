"""A SQLite connection served by one dedicated thread, for components that keep data in SQLite.

Every call runs on that thread, never on the event loop, inside its own transaction (committed
on success, rolled back on error), so writers in one process are serialised. WAL mode and a
busy timeout let several processes share the file::

    db = SQLiteDatabase(path, schema="CREATE TABLE IF NOT EXISTS t (x)")
    await db.open()
    rows = await db.run(lambda c: c.execute("SELECT x FROM t").fetchall())
    await db.close()
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

__all__ = ["SQLiteDatabase"]

T = TypeVar("T")


class SQLiteDatabase:
    """One SQLite file (or ``:memory:``) and the thread that uses it."""

    def __init__(self, path: str, *, schema: str = "", busy_timeout: float = 5.0) -> None:
        self.path = path
        self.schema = schema
        self.busy_timeout = busy_timeout
        self._executor: ThreadPoolExecutor | None = None
        self._connection: sqlite3.Connection | None = None

    async def open(self) -> None:
        """Create the file's directory, connect, enable WAL and foreign keys, run the schema."""
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
                    break
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) or time.monotonic() > deadline:
                        connection.close()
                        raise
                    time.sleep(0.05)
            connection.execute("PRAGMA foreign_keys = ON")
            connection.execute("PRAGMA synchronous = NORMAL")
            connection.isolation_level = "DEFERRED"
            return connection

        self._connection = await asyncio.get_running_loop().run_in_executor(self._executor, connect)

    async def run(self, func: Callable[[sqlite3.Connection], T], *, write: bool = False) -> T:
        """Run ``func(connection)`` on the database thread, in one transaction.

        ``write=True`` takes the write lock first (``BEGIN IMMEDIATE``), so what ``func`` reads
        cannot change (in another process) before it writes: use it for read-modify-write.
        """
        executor, connection = self._executor, self._connection
        if executor is None or connection is None:
            raise RuntimeError(f"the SQLite database {self.path} is not open")

        def call() -> T:
            with connection:
                if write:
                    connection.execute("BEGIN IMMEDIATE")
                return func(connection)

        return await asyncio.get_running_loop().run_in_executor(executor, call)

    async def close(self) -> None:
        """Close the connection and stop the thread. Safe to call twice, or before ``open``."""
        executor, connection = self._executor, self._connection
        self._executor = self._connection = None
        if executor is not None:
            if connection is not None:
                await asyncio.get_running_loop().run_in_executor(executor, connection.close)
            executor.shutdown(wait=False)
