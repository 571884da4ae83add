"""MCP servers through a whole Runtime: the published ``mcp-server-time`` over stdio, called by
``offline/tools`` in a conversation (the issue's done-when scenario: ``tool.started``,
``tool.finished``, a reply with the time; the server killed: health down, the next call a clean
tool error; back by itself), and the knobs server's tools through the registry (names, schema
validation, timeouts)."""

from __future__ import annotations

import json
import logging
import os
import signal
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from mcp_servers.support import CONTEXT, KNOBS, TIME_SERVER, eventually, tag, tagged_pids

from hubbub.events import Event, Subscription
from hubbub.models import Principal, ToolCall
from hubbub.runtime import Runtime

__all__ = ["tag"]  # fixtures


def toml(tag: str, *servers: str) -> str:
    return "[mcp]\nreconnect_delay = 0.1\nreconnect_max_delay = 0.3\nping_interval = 0\n" + "".join(
        servers
    )


def time_server(tag: str) -> str:
    return (
        '[[mcp.servers]]\nname = "time"\ntransport = "stdio"\n'
        f"command = {json.dumps(str(TIME_SERVER))}\nconnect_timeout = 20\n"
        f'env = {{ MCP_TEST_TAG = "{tag}" }}\n'
    )


def knobs_server(tag: str) -> str:
    import sys

    return (
        '[[mcp.servers]]\nname = "knobs"\ntransport = "stdio"\n'
        f"command = {json.dumps(sys.executable)}\n"
        f'args = [{json.dumps(str(KNOBS))}, "stdio", "--tag", "{tag}"]\n'
        "call_timeout = 0.5\n"
    )


@pytest.fixture
async def runtime(make_runtime: Callable[..., Runtime], tag: str) -> AsyncIterator[Runtime]:
    async with make_runtime(toml(tag, time_server(tag), knobs_server(tag))) as runtime:
        yield runtime
    assert tagged_pids(tag) == []  # stopping the runtime stopped the servers


async def drain(subscription: Subscription) -> list[Event]:
    subscription.close()
    return [event async for event in subscription]


async def ask(runtime: Runtime, principal: Principal, text: str) -> tuple[Any, list[Event]]:
    conversation = await runtime.conversations.create(principal, model="offline/tools")
    with runtime.events.subscribe(lambda e: e.conversation_id == conversation.id) as subscription:
        await runtime.conversations.send(principal, conversation.id, text)
        reply = await runtime.conversations.reply(principal, conversation.id)
        events = await drain(subscription)
    return reply, events


def component(health: Any, label: str) -> Any:
    return health.components[label]


async def test_offline_tools_calls_mcp_server_time_and_survives_its_death(
    runtime: Runtime, principal: Principal, tag: str
) -> None:
    names = [spec.name for spec in runtime.tools.specs()]
    assert "time.get_current_time" in names
    spec = next(s for s in runtime.tools.specs() if s.name == "time.get_current_time")
    assert spec.source == "mcp"

    call = 'call time.get_current_time {"timezone": "UTC"}'
    reply, events = await ask(runtime, principal, call)
    types = [e.type for e in events]
    assert types.index("tool.started") < types.index("tool.finished")
    finished = next(e for e in events if e.type == "tool.finished")
    assert finished.result.is_error is False  # type: ignore[attr-defined]
    answer = json.loads(finished.result.content)  # type: ignore[attr-defined]
    assert answer["timezone"] == "UTC"
    assert answer["datetime"] in reply.content
    health = await runtime.health()
    assert component(health, "tools.mcp.time").status == "ok"

    # kill the server: down, the next call a clean tool error
    (pid,) = tagged_pids(f"MCP_TEST_TAG={tag}")  # the time server, not the knobs one

    async def time_down() -> bool:
        return bool(component(await runtime.health(), "tools.mcp.time").status == "down")

    os.kill(pid, signal.SIGKILL)
    await eventually(time_down, what="health down")
    time_health = component(await runtime.health(), "tools.mcp.time")
    assert time_health.backend == "stdio"
    assert "closed the connection" in time_health.detail
    assert component(await runtime.health(), "tools.mcp").status == "degraded"  # knobs is up
    direct = await runtime.tools.call(
        ToolCall(id="c1", name="time.get_current_time", arguments='{"timezone": "UTC"}'), CONTEXT
    )
    assert direct.is_error is True
    # the registry may still hold the tool (the call reaches the provider, which knows the
    # server is down) or have read the tool lists again (the tool is hidden)
    assert direct.content in (
        "error: MCP server 'time' is down: the server closed the connection",
        "error: no tool named 'time.get_current_time' is available",
    ), direct.content
    assert "time.get_current_time" not in [s.name for s in runtime.tools.specs()]
    reply, events = await ask(runtime, principal, call)  # the conversation goes on
    assert "tool.started" not in [e.type for e in events]
    assert "No tool named 'time.get_current_time' is available" in reply.content

    # back by itself
    await eventually(
        lambda: "time.get_current_time" in [s.name for s in runtime.tools.specs()],
        what="the server back",
    )
    reply, events = await ask(runtime, principal, call)
    finished = next(e for e in events if e.type == "tool.finished")
    assert finished.result.is_error is False  # type: ignore[attr-defined]
    assert component(await runtime.health(), "tools.mcp.time").status == "ok"


async def test_knobs_tools_through_the_registry(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    registry = runtime.tools
    # the schema from the server validates the arguments before the call
    bad = await registry.call(ToolCall(id="c1", name="knobs.add", arguments='{"a": 1}'), CONTEXT)
    assert bad.is_error is True
    assert bad.content.startswith("error: invalid arguments")
    good = await registry.call(
        ToolCall(id="c2", name="knobs.add", arguments='{"a": 1, "b": 2}'), CONTEXT
    )
    assert (good.call_id, good.name, good.data) == ("c2", "knobs.add", {"total": 3})
    # the server's call_timeout (0.5 s) cuts a hung call; the server stays usable
    hung = await registry.call(ToolCall(id="c3", name="knobs.hang"), CONTEXT)
    assert hung.is_error is True
    assert hung.content == "error: tool 'knobs.hang' did not finish within 0.5 s"
    echo = await registry.call(
        ToolCall(id="c4", name="knobs.echo", arguments='{"text": "still here"}'), CONTEXT
    )
    assert echo.content == "still here"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    # a crash mid-call is a clean tool error
    crash = await registry.call(ToolCall(id="c5", name="knobs.crash"), CONTEXT)
    assert crash.content == "error: MCP server 'knobs' went down during the call"
