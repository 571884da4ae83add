"""Copying everything one memory store holds into another: ``hubbub store copy``.

A team that outgrows one machine moves its conversations from SQLite to PostgreSQL with::

    hubbub store copy --from old.toml --to new.toml

Each side is the memory store its configuration selects (``[memory] backend``, with its
``[plugins.<name>]`` settings), built as the runtime builds it, so any registered store works,
third-party ones included; a fallback is never used (copying into a stand-in would be wrong).
Only the memory store starts: no server, provider or tool.

What is copied, through the :class:`~hubbub.contracts.MemoryStore` contract alone: every
owner (:meth:`~hubbub.contracts.MemoryStore.list_owners`), each of their conversations with
its messages (:meth:`~hubbub.contracts.MemoryStore.import_conversation`, which keeps ids,
timestamps and order and skips what the target holds already) and its summary, and each of
their memories that has not expired. Everything is read and written in pages of
``batch_size``: memory use does not grow with the store (but for the ids of one owner's
memories in the target). A copy can be run again: what is there already is skipped, what was
added to the source since is copied, and a conversation or summary changed in the source since
(a later ``updated_at`` or ``created_at``) replaces the target's copy. What was deleted from the
source stays in the target: stop writing to the source before the last copy.

Before copying, a probe memory written to the target is looked for in the source (then
deleted): if the source sees it, both configurations name one store, and nothing is copied.

The account stores the two configurations select (``[accounts] backend``) are copied too: users
and API keys (:data:`ACCOUNT_KINDS`), never login sessions (people log in again). An account
the target has already (same id) is left as it is; one whose name is taken there by another
(``Alice`` against ``alice``) is not copied and counted as conflicting. The same probe check
keeps an account store from being copied onto itself.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import msgspec

from hubbub.config import Config
from hubbub.contracts import AccountStore, MemoryStore
from hubbub.errors import (
    ComponentError,
    ConfigError,
    ConflictError,
    HubbubError,
    InvalidRequestError,
    blame,
)
from hubbub.models import Conversation, MemoryItem, Record, new_id, now
from hubbub.plugins import Plugins
from hubbub.registry import check_component

__all__ = [
    "ACCOUNT_KINDS",
    "CopyCounts",
    "CopyReport",
    "SameStoreError",
    "copy_accounts",
    "copy_configured",
    "copy_store",
    "open_store",
    "same_store",
]

logger = logging.getLogger("hubbub.store_copy")

PROBE_PREFIX = "hubbub-store-copy-probe-"
"""Owner of the probe memory :func:`same_store` writes (and deletes at once)."""

PROBE_CONTENT = "written by hubbub store copy to tell two stores apart; safe to delete"
"""What the probe memory says."""

ACCOUNT_KINDS = {"user": "users", "api_key": "api_keys"}
"""The account store's kinds that are copied, each with its :class:`CopyReport` field."""

_PROBE_OWNER = re.compile(re.escape(PROBE_PREFIX) + "[0-9a-f]{32}")


class SameStoreError(InvalidRequestError):
    """The source and the target are one store: copying would copy it onto itself."""

    code = "same_store"


class CopyCounts(msgspec.Struct, kw_only=True):
    """How many items of one kind were copied, and how many the target held already."""

    copied: int = 0
    """Written to the target, which did not have them."""
    updated: int = 0
    """In the target already, replaced by the source's later version (conversations and
    summaries only: messages and memories do not change)."""
    skipped: int = 0
    """Already in the target (same id) and not older there, left as they were."""
    conflicting: int = 0
    """Not copied: the target has another item with its unique name (accounts only)."""


class CopyReport(msgspec.Struct, kw_only=True):
    """What a copy did, kind by kind."""

    owners: int = 0
    """Owners whose data was walked."""
    conversations: CopyCounts = msgspec.field(default_factory=CopyCounts)
    """Conversations (one skipped may still have had new messages copied)."""
    messages: CopyCounts = msgspec.field(default_factory=CopyCounts)
    """Messages of those conversations."""
    summaries: CopyCounts = msgspec.field(default_factory=CopyCounts)
    """Conversation summaries (one per conversation)."""
    memories: CopyCounts = msgspec.field(default_factory=CopyCounts)
    """Long-term memories (those expired already are not copied)."""
    users: CopyCounts | None = None
    """Accounts (``None``: the account stores were not copied)."""
    api_keys: CopyCounts | None = None
    """API keys (``None``: the account stores were not copied)."""

    def lines(self) -> list[str]:
        """The report for people, one kind per line."""
        kinds = ("conversations", "messages", "summaries", "memories", "users", "api_keys")
        rows = [f"owners: {self.owners}"]
        for kind in kinds:
            counts: CopyCounts | None = getattr(self, kind)
            if counts is None:
                continue
            row = (
                f"{kind.replace('_', ' ')}: {counts.copied} copied, {counts.updated} updated, "
                f"{counts.skipped} already there"
            )
            if counts.conflicting:
                row += f", {counts.conflicting} not copied (the name is taken there)"
            rows.append(row)
        return rows


async def same_store(source: MemoryStore, target: MemoryStore) -> bool:
    """Whether ``source`` and ``target`` are one store (two configurations naming the same
    file or database): a probe memory written to ``target`` (expiring in ten minutes, in case
    the process dies before it is deleted) is looked for in ``source``, then deleted."""
    probe = MemoryItem(owner=new_id(PROBE_PREFIX), content=PROBE_CONTENT, expires_at=now() + 600)
    await target.add_memory(probe)
    try:
        return bool((await source.list_memories(probe.owner, limit=1)).items)
    finally:
        await target.delete_memories(probe.owner)


async def copy_store(
    source: MemoryStore,
    target: MemoryStore,
    *,
    batch_size: int = 500,
    progress: Callable[[CopyReport], object] | None = None,
) -> CopyReport:
    """Copy everything ``source`` holds into ``target`` (see the module's documentation).

    :param batch_size: items read (and messages written) at a time.
    :param progress: called with the report so far after each owner.
    :raises SameStoreError: when both are one store (nothing is copied).
    """
    if batch_size < 1:
        raise InvalidRequestError("batch_size must be at least 1", field="batch_size")
    if await same_store(source, target):
        raise SameStoreError(
            "the source and the target are the same store (a memory written to the target "
            "is seen in the source): nothing copied"
        )
    report = CopyReport()
    cursor: str | None = None
    while True:
        owners = await source.list_owners(limit=batch_size, cursor=cursor)
        for owner in owners.items:
            if await _only_probes(source, owner):
                continue  # another copy's probe, seen in passing (or left by one that died)
            report.owners += 1
            await _copy_conversations(source, target, owner, batch_size, report)
            await _copy_memories(source, target, owner, batch_size, report)
            if progress is not None:
                progress(report)
        cursor = owners.next_cursor
        if cursor is None:
            break
    logger.info(
        "copied the memory store: %s",
        "; ".join(report.lines()),
        extra={"report": msgspec.to_builtins(report)},
    )
    return report


async def same_account_store(source: AccountStore, target: AccountStore) -> bool:
    """Whether two account stores are one (a probe record written to ``target``, expiring in
    ten minutes, is looked for in ``source``, then deleted)."""
    probe = Record(
        kind="hubbub-store-copy-probe", id=new_id(PROBE_PREFIX), data=b"", expires_at=now() + 600
    )
    await target.create(probe)
    try:
        return await source.get(probe.kind, probe.id) is not None
    finally:
        await target.delete(probe.kind, probe.id)


async def copy_accounts(
    source: AccountStore, target: AccountStore, report: CopyReport, *, batch_size: int = 500
) -> CopyReport:
    """Copy the users and API keys of ``source`` into ``target`` (see the module's
    documentation), counting them in ``report``.

    :raises SameStoreError: when both are one store (nothing is copied)."""
    if await same_account_store(source, target):
        raise SameStoreError(
            "the source and the target are the same account store (a record written to the "
            "target is seen in the source): nothing copied"
        )
    for kind, field in ACCOUNT_KINDS.items():
        counts = CopyCounts()
        setattr(report, field, counts)
        after: str | None = None
        while True:
            records = await source.list_records(kind, after=after, limit=batch_size)
            for record in records:
                if record.expires_at is not None and record.expires_at <= now():
                    continue
                if await target.get(kind, record.id) is not None:
                    counts.skipped += 1
                    continue
                try:
                    await target.create(msgspec.structs.replace(record, version=0))
                except ConflictError:
                    counts.conflicting += 1
                    logger.warning(
                        "%s %r not copied: the target has another with its name", kind, record.id
                    )
                else:
                    counts.copied += 1
            if len(records) < batch_size:
                break
            after = records[-1].id
    return report


async def _only_probes(store: MemoryStore, owner: str) -> bool:
    """Whether ``owner`` is the owner of probe memories (:func:`same_store`) and nothing else: a
    real owner whose id merely looks like one is copied like any other."""
    if not _PROBE_OWNER.fullmatch(owner):
        return False
    if (await store.list_conversations(owner, limit=1)).items:
        return False
    memories = await store.list_memories(owner, limit=10)
    return all(item.content == PROBE_CONTENT for item in memories.items) and (
        memories.next_cursor is None
    )


async def _copy_conversations(
    source: MemoryStore, target: MemoryStore, owner: str, batch: int, report: CopyReport
) -> None:
    cursor: str | None = None
    while True:
        page = await source.list_conversations(owner, limit=batch, cursor=cursor)
        for conversation in page.items:
            await _copy_conversation(source, target, conversation, batch, report)
        cursor = page.next_cursor
        if cursor is None:
            return


async def _copy_conversation(
    source: MemoryStore,
    target: MemoryStore,
    conversation: Conversation,
    batch: int,
    report: CopyReport,
) -> None:
    """One conversation: the first batch of messages creates it in the target (as it is in
    the source), later batches add to it; then its summary."""
    there = await target.get_conversation(conversation.id)
    if there is None:
        report.conversations.copied += 1
    elif there.updated_at < conversation.updated_at:
        report.conversations.updated += 1  # import_conversation replaces it
    else:
        report.conversations.skipped += 1
    cursor: str | None = None
    first = True
    while first or cursor is not None:
        page = await source.list_messages(conversation.id, limit=batch, cursor=cursor)
        stored = await target.import_conversation(conversation, page.items)
        report.messages.copied += stored
        report.messages.skipped += len(page.items) - stored
        cursor, first = page.next_cursor, False
    summary = await source.get_summary(conversation.id)
    if summary is None:
        return
    there_summary = await target.get_summary(conversation.id)
    if there_summary is None:
        await target.save_summary(summary)
        report.summaries.copied += 1
    elif there_summary != summary and there_summary.created_at < summary.created_at:
        await target.save_summary(summary)
        report.summaries.updated += 1
    else:
        report.summaries.skipped += 1


async def _copy_memories(
    source: MemoryStore, target: MemoryStore, owner: str, batch: int, report: CopyReport
) -> None:
    present: set[str] = set()
    cursor: str | None = None
    while True:
        page = await target.list_memories(owner, limit=batch, cursor=cursor)
        present.update(item.id for item in page.items)
        cursor = page.next_cursor
        if cursor is None:
            break
    while True:
        memories = await source.list_memories(owner, limit=batch, cursor=cursor)
        for item in memories.items:
            if item.id in present:
                report.memories.skipped += 1
            else:
                await target.add_memory(item)
                report.memories.copied += 1
        cursor = memories.next_cursor
        if cursor is None:
            return


@contextlib.asynccontextmanager
async def open_store(
    config: Config,
    plugins: Plugins,
    settings: Mapping[str, Any],
    *,
    role: str = "store",
    kind: str = "memory",
) -> AsyncIterator[Any]:
    """The store of ``kind`` (``memory``, ``accounts``) ``config`` selects (never a
    fallback), built by its registered factory with the context the runtime gives it, started,
    and closed (with the resources it took) on exit. ``role`` names it in errors (``source``,
    ``target``).

    The store's context has an unstarted runtime: a store that uses other components through
    ``context.runtime`` cannot be opened alone."""
    from hubbub.runtime import Runtime

    runtime = Runtime(config, plugins, settings)
    spec = runtime.kinds[kind]
    registry = plugins.registries()[kind]
    selected = spec.selected(config, registry.names())
    name = selected[0] if selected else ""
    registration = registry.get(name)
    if registration is None:  # check_config has said so already, with the file and line
        raise ComponentError(f"the {role}'s {spec.title} {name!r} is not registered")
    context = runtime.context(registration)
    where = f"the {role}'s {spec.title} {name!r} ({plugins.describe(registration.plugin)})"
    try:
        try:
            store = registration.factory(context)
        except Exception as exc:
            raise blame(exc, f"{where} could not be built", ComponentError) from exc
        check_component(spec, registration, store)
        try:
            await store.start()
        except ConfigError as exc:
            await store.aclose()
            raise config.locate(exc) from None
        except BaseException as exc:
            await store.aclose()
            if isinstance(exc, HubbubError):
                raise
            if isinstance(exc, Exception):
                raise ComponentError(
                    f"{where} failed to start: {type(exc).__name__}: {exc}"
                ) from exc
            raise
        try:
            yield store
        finally:
            await store.aclose()
    finally:
        await context.tasks.aclose(config.runtime.stop_timeout)
        await context.resources.release_all()
        await runtime.resources.aclose()


async def copy_configured(
    source: tuple[Config, Plugins, Mapping[str, Any]],
    target: tuple[Config, Plugins, Mapping[str, Any]],
    *,
    batch_size: int = 500,
    progress: Callable[[CopyReport], object] | None = None,
) -> CopyReport:
    """Open the stores each ``(config, plugins, settings)`` selects and copy the first's into
    the second's: the memory stores (:func:`copy_store`), then the account stores
    (:func:`copy_accounts`) when both sides have one."""
    async with (
        open_store(*source, role="source") as from_store,
        open_store(*target, role="target") as to_store,
    ):
        report = await copy_store(from_store, to_store, batch_size=batch_size, progress=progress)
    if not (_has_accounts(*source) and _has_accounts(*target)):
        return report
    async with (
        open_store(*source, role="source", kind="accounts") as from_accounts,
        open_store(*target, role="target", kind="accounts") as to_accounts,
    ):
        await copy_accounts(from_accounts, to_accounts, report, batch_size=batch_size)
    logger.info("copied the account store: %s", "; ".join(report.lines()[-2:]))
    return report


def _has_accounts(config: Config, plugins: Plugins, settings: Mapping[str, Any]) -> bool:
    from hubbub.kinds import kinds_by_name

    registry = plugins.registries()["accounts"]
    return bool(kinds_by_name()["accounts"].selected(config, registry.names()))
