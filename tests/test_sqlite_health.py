"""The SQLite store's health probes the file for real, on real files: damaged pages, a probe
shared by the callers of one interval, and a query that meets a damaged page."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from hubbub.models import Conversation
from hubbub.sqlite import DatabaseFailedError
from hubbub_plugins.sqlite_store import SQLiteStore


async def filled(path: Path, rows: int = 200) -> None:
    store = SQLiteStore(str(path))
    await store.start()
    for number in range(rows):
        await store.create_conversation(Conversation(owner="ada", title=f"t{number}" * 30))
    await store.aclose()  # everything in the main file, the log checkpointed away


def damage(path: Path, first_page: int = 2) -> None:
    size = path.stat().st_size
    with path.open("r+b") as file:
        for page in range(first_page, size // 4096):
            file.seek(page * 4096 + 8)
            file.write(b"\x5a" * 256)


async def test_a_sound_file_is_ok_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    store = SQLiteStore(str(path))
    await store.start()
    try:
        health = await store.health()
        assert (health.status, health.detail) == ("ok", str(path))
        with sqlite3.connect(path) as db:  # the probe committed its row
            assert db.execute("SELECT count(*) FROM hubbub_health").fetchone() == (1,)
    finally:
        await store.aclose()


async def test_damaged_pages_are_found(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    await filled(path)
    damage(path)
    store = SQLiteStore(str(path))
    await store.start()
    try:
        health = await store.health()
        assert health.status == "down"
        assert "damaged" in health.detail or "malformed" in health.detail
    finally:
        await store.aclose()


async def test_callers_within_an_interval_share_one_probe(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    store = SQLiteStore(str(path), health_interval=3600)
    await store.start()
    try:
        await store.health()
        with sqlite3.connect(path) as db:
            first = db.execute("SELECT checked_at FROM hubbub_health").fetchone()
        for _ in range(20):
            assert (await store.health()).status == "ok"
        with sqlite3.connect(path) as db:
            assert db.execute("SELECT checked_at FROM hubbub_health").fetchone() == first
    finally:
        await store.aclose()


async def test_a_query_that_meets_a_damaged_page_marks_the_store_down_at_once(
    tmp_path: Path,
) -> None:
    path = tmp_path / "h.sqlite3"
    await filled(path)
    damage(path)
    store = SQLiteStore(str(path))
    await store.start()
    try:
        with pytest.raises(DatabaseFailedError, match="malformed"):
            await store.list_conversations("ada", limit=500)
        health = await store.health()
        # SQLite's own words from the failed query (quick_check words it differently)
        assert health.status == "down"
        assert "the database file is damaged: database disk image is malformed" in health.detail
    finally:
        await store.aclose()
