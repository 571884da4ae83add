"""Helpers for the tests of replies (interrupted, cancelled, deleted, leased): the offline model
slowed down, events summed up in a word, and runtimes sharing one ``redis-server``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from redis_support import RedisServer

from hubbub.events import (
    ConversationUpdated,
    ErrorEvent,
    Event,
    MessageCompleted,
    MessageDelta,
    Status,
    Subscription,
    Typing,
)
from hubbub.models import Message, Principal
from hubbub.runtime import Runtime

SLOW = "[plugins.offline_provider]\ntoken_delay = 0.02\n"
"""The offline model streaming a word every 0.02 s: a reply long enough to stop midway."""


def words(count: int) -> str:
    """A message of ``count`` distinct words (the offline model takes 0.02 s a word)."""
    return " ".join(f"w{i}" for i in range(count))


def summary(event: Event) -> str:
    """The event in a word, with what tells it apart (``status:idle``, ``error:<code>``...)."""
    if isinstance(event, ErrorEvent):
        return f"error:{event.code}"
    if isinstance(event, Status):
        return f"status:{event.state}"
    if isinstance(event, Typing):
        return f"typing:{event.active}"
    if isinstance(event, MessageCompleted):
        return f"completed:{event.message.role}:{event.message.interrupted}"
    if isinstance(event, ConversationUpdated):
        return f"conversation.updated:{event.change}"
    return event.type


async def until(events: Subscription, kind: type[Any]) -> Any:
    """The next event of ``kind`` (the ones before it are dropped)."""
    while True:
        event = await asyncio.wait_for(events.get(), 30)
        assert event is not None
        if isinstance(event, kind):
            return event


async def rest(events: Subscription) -> list[str]:
    """The summaries of the events up to and including ``status`` idle."""
    seen = []
    while True:
        event = await asyncio.wait_for(events.get(), 30)
        assert event is not None
        seen.append(summary(event))
        if seen[-1] == "status:idle":
            return seen


async def streaming(
    runtime: Runtime, principal: Principal, conversation_id: str, content: str
) -> Subscription:
    """Post ``content`` and return the conversation's events once its reply streams (its first
    ``message.delta`` consumed)."""
    events = runtime.events.subscribe(lambda e: e.conversation_id == conversation_id)
    await runtime.conversations.post_message(principal, conversation_id, content)
    await until(events, MessageDelta)
    return events


async def waiting(
    runtime: Runtime, principal: Principal, conversation_id: str, content: str
) -> tuple[Subscription, asyncio.Task[tuple[Message, Message | None]]]:
    """Post ``content`` with ``wait`` in a task of its own (the caller waiting for the reply);
    return the conversation's events and that task once the reply streams."""
    events = runtime.events.subscribe(lambda e: e.conversation_id == conversation_id)
    task = asyncio.create_task(
        runtime.conversations.post_message(principal, conversation_id, content, wait=True)
    )
    await until(events, MessageDelta)
    return events, task


async def messages(runtime: Runtime, principal: Principal, conversation_id: str) -> list[Message]:
    """The conversation's stored messages."""
    return (await runtime.conversations.messages(principal, conversation_id)).items


def redis_toml(server: RedisServer) -> str:
    """Configuration of one "process" of several sharing ``server``: cache (so reply leases) and
    event log in Redis, the offline model slowed down."""
    return (
        f'[cache]\nbackend = "redis"\n[events]\nbackend = "redis"\n'
        f'[redis]\nurl = "{server.url}"\n' + SLOW
    )


@contextlib.asynccontextmanager
async def two_processes(
    make_runtime: Callable[..., Runtime], server: RedisServer
) -> AsyncIterator[tuple[Runtime, Runtime]]:
    """Two started runtimes sharing ``server`` (and one data directory), standing for two
    server processes."""
    async with make_runtime(redis_toml(server)) as a, make_runtime(redis_toml(server)) as b:
        yield a, b
