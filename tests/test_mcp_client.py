"""The MCP client against real MCP servers (the knobs server of tests/mcp_servers over stdio
and streamable HTTP, and the published mcp-server-time): tools listed and called, servers that
crash, hang, or change their tools, the environment a stdio server sees, OAuth for HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import time

import pytest
from mcp_servers.support import (
    CONTEXT,
    TIME_SERVER,
    call,
    eventually,
    knobs_stdio,
    mcp_config,
    part,
    start,
    started,
    tag,
    tagged_pids,
    tool,
    zombie_children,
)

from hubbub.config import McpServerConfig, Secret
from hubbub.errors import ToolError
from hubbub.tools.mcp import McpTools

__all__ = ["started", "tag"]  # fixtures


# -- listing and calling ------------------------------------------------------------------------


async def test_stdio_tools_are_listed_with_their_schemas_and_called(
    tag: str, started: list[McpTools]
) -> None:
    provider = await start(started, mcp_config(knobs_stdio(tag, call_timeout=7.5)))
    names = [t.spec.name for t in provider.tools()]
    assert names == sorted(names)
    assert {"knobs.echo", "knobs.add", "knobs.crash", "knobs.weird_name_"} <= set(names)
    add = tool(provider, "knobs.add").spec
    assert add.parameters["properties"] == {
        "a": {"title": "A", "type": "integer"},
        "b": {"title": "B", "type": "integer"},
    }
    assert add.parameters["required"] == ["a", "b"]
    assert add.output_schema is not None
    assert add.output_schema["properties"] == {"total": {"title": "Total", "type": "integer"}}
    assert add.description == "Add two integers."
    assert add.timeout == 7.5
    assert add.source == ""  # the registry sets it

    assert (await call(provider, "knobs.echo", text="hi there")).content == "hi there"
    total = await call(provider, "knobs.add", a=2, b=3)
    assert total.data == {"total": 5}
    assert json.loads(total.content) == {"total": 5}
    assert total.is_error is False
    # the original name is what the server is called with
    assert (await call(provider, "knobs.weird_name_")).content == "weird"

    health = await provider.health()
    assert health.status == "ok"
    assert health.detail == "1 server up, 0 down"
    knobs = part(health, "knobs")
    assert (knobs.status, knobs.backend) == ("ok", "stdio")
    assert knobs.detail == f"{len(names)} tools"


async def test_results_describe_other_blocks_and_carry_errors(
    tag: str, started: list[McpTools]
) -> None:
    provider = await start(started, mcp_config(knobs_stdio(tag)))
    image = await call(provider, "knobs.image")
    assert image.content == "a picture:\n[image image/png, 5 bytes]"
    failed = await call(provider, "knobs.fail")
    assert failed.is_error is True
    assert "the knob says no" in failed.content


async def test_the_tools_filter_offers_only_matching_tools(
    tag: str, started: list[McpTools]
) -> None:
    provider = await start(started, mcp_config(knobs_stdio(tag, tools=["echo", "a*"])))
    assert [t.spec.name for t in provider.tools()] == ["knobs.add", "knobs.echo"]


async def test_a_stdio_server_sees_only_the_minimal_environment(
    tag: str, started: list[McpTools], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HUBBUB_TEST_SECRET", "s3cret-value")
    monkeypatch.setenv("LANG", "C.UTF-8")
    server = knobs_stdio(
        tag, env={"GIVEN": Secret("yes"), "FROM_ENV": Secret("hidden", origin="env")}
    )
    provider = await start(started, mcp_config(server))
    seen = json.loads((await call(provider, "knobs.env")).content)
    assert "s3cret-value" not in json.dumps(seen)
    assert "HUBBUB_TEST_SECRET" not in seen
    assert seen["GIVEN"] == "yes"
    assert seen["FROM_ENV"] == "hidden"
    assert seen["LANG"] == "C.UTF-8"
    assert seen["PATH"] == os.environ["PATH"]
    # what hubbub passes, what the mcp package adds (LOGNAME, SHELL, TERM, USER), and what
    # Python itself sets in the child (LC_CTYPE, when it coerces the C locale)
    allowed = {"PATH", "HOME", "LANG", "LC_ALL", "TZ", "LOGNAME", "SHELL", "TERM", "USER"}
    allowed |= {"LC_CTYPE", "GIVEN", "FROM_ENV"}
    assert set(seen) <= allowed, set(seen) - allowed


async def test_a_server_logs_its_stderr_under_its_own_logger(
    tag: str, started: list[McpTools], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="hubbub.tools.mcp")
    await start(started, mcp_config(knobs_stdio(tag)))
    await eventually(
        lambda: any(
            r.name == "hubbub.tools.mcp.knobs" and r.getMessage() == "knobs server starting"
            for r in caplog.records
        ),
        what="the stderr line logged",
    )
    record = next(r for r in caplog.records if r.name == "hubbub.tools.mcp.knobs")
    assert record.mcp_server == "knobs"  # type: ignore[attr-defined]


async def test_a_servers_stderr_is_logged_bounded(
    tag: str, started: list[McpTools], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="hubbub.tools.mcp")
    provider = await start(started, mcp_config(knobs_stdio(tag)))
    assert (await call(provider, "knobs.shout", lines=500, width=2100)).content == "shouted"
    await provider.aclose()  # the rest of its stderr is read before the pipe closes
    lines = [r.getMessage() for r in caplog.records if r.name == "hubbub.tools.mcp.knobs"]
    dropped = [line for line in lines if "were not logged" in line]
    logged = [line for line in lines if line not in dropped]
    assert len(logged) == 100  # STDERR_BURST a minute
    assert "00000" + "!" * 1995 + "…" in logged  # cut at 2000 characters
    assert len(dropped) == 1
    # (the server logs lines of its own too)
    count = int(dropped[0].split()[0])
    assert count >= 400
    assert dropped[0].endswith(
        "stderr lines of MCP server knobs were not logged (more than 100 a minute)"
    )


# -- servers that crash, hang, change -----------------------------------------------------------


async def test_a_crash_mid_call_fails_the_call_promptly_then_the_server_comes_back(
    tag: str, started: list[McpTools]
) -> None:
    provider = await start(
        started, mcp_config(knobs_stdio(tag, call_timeout=60), reconnect_delay=0.3)
    )
    first_pid = (await call(provider, "knobs.pid")).content
    echo = tool(provider, "knobs.echo")
    began = time.monotonic()
    with pytest.raises(ToolError, match="MCP server 'knobs' went down during the call"):
        await call(provider, "knobs.crash")
    assert time.monotonic() - began < 30  # not at its 60 s timeout
    # down: its tools hidden, a call that raced the crash is a clean error
    await eventually(lambda: not provider.tools(), what="tools hidden")
    health = await provider.health()
    assert health.status == "down"
    assert part(health, "knobs").status == "down"
    assert "closed the connection" in part(health, "knobs").detail
    with pytest.raises(ToolError, match="MCP server 'knobs' is down: "):
        await echo.call({"text": "hi"}, CONTEXT)
    # back by itself, as a new process
    await eventually(lambda: bool(provider.tools()), what="reconnection")
    assert (await call(provider, "knobs.echo", text="back")).content == "back"
    assert (await call(provider, "knobs.pid")).content != first_pid
    assert (await provider.health()).status == "ok"
    assert provider.servers["knobs"].connections == 2


async def test_a_hung_call_is_cut_by_its_timeout_and_the_session_stays_usable(
    tag: str, started: list[McpTools], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    provider = await start(started, mcp_config(knobs_stdio(tag)))
    pid = (await call(provider, "knobs.pid")).content
    for _ in range(3):
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):  # as the registry cuts a call
                await call(provider, "knobs.hang")
    calls = [call(provider, "knobs.echo", text=str(n)) for n in range(5)]
    assert [r.content for r in await asyncio.gather(*calls)] == ["0", "1", "2", "3", "4"]
    assert (await call(provider, "knobs.pid")).content == pid  # the same session
    assert provider.servers["knobs"].connections == 1
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


async def test_a_server_that_stops_answering_pings_is_reconnected(
    tag: str, started: list[McpTools]
) -> None:
    server = knobs_stdio(tag, connect_timeout=1.0)
    provider = await start(started, mcp_config(server, ping_interval=0.2))
    pid = int((await call(provider, "knobs.pid")).content)
    os.kill(pid, signal.SIGSTOP)  # alive, silent
    try:
        await eventually(lambda: not provider.tools(), what="down after unanswered pings")
        health = part(await provider.health(), "knobs")
        assert health.status == "down"
        assert "no answer to a ping within 1 s" in health.detail
        os.kill(pid, signal.SIGCONT)  # it reads the end of its stdin and exits at once
        await eventually(lambda: bool(provider.tools()), what="reconnection")
        assert int((await call(provider, "knobs.pid")).content) != pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
        await eventually(lambda: pid not in tagged_pids(tag), what="the hung process stopped")


async def test_list_changed_makes_a_new_tool_visible(tag: str, started: list[McpTools]) -> None:
    provider = await start(started, mcp_config(knobs_stdio(tag)))
    assert "knobs.extra" not in [t.spec.name for t in provider.tools()]
    assert (await call(provider, "knobs.grow")).content == "grown"
    await eventually(
        lambda: "knobs.extra" in [t.spec.name for t in provider.tools()],
        what="the new tool listed",
    )
    assert (await call(provider, "knobs.extra")).content == "extra here"


async def test_a_server_that_cannot_start_is_down_and_hubbub_starts(
    started: list[McpTools], tag: str
) -> None:
    missing = McpServerConfig(
        name="missing", transport="stdio", command=f"/nonexistent/{tag}", connect_timeout=5
    )
    good = knobs_stdio(tag)
    provider = await start(started, mcp_config(missing, good))
    health = await provider.health()
    assert health.status == "degraded"
    assert health.detail == "1 server up, 1 down"
    down = part(health, "missing")
    assert down.status == "down"
    assert "command not found" in down.detail or "No such file" in down.detail
    assert "next try in" in down.detail or "trying again now" in down.detail
    assert {t.spec.name.split(".")[0] for t in provider.tools()} == {"knobs"}


async def test_no_servers_offers_no_tools_and_says_so(started: list[McpTools]) -> None:
    disabled = McpServerConfig(name="off", transport="stdio", command="true", enabled=False)
    provider = await start(started, mcp_config(disabled))
    assert provider.tools() == []
    health = await provider.health()
    assert health.status == "ok"
    assert health.detail == "no MCP servers enabled (1 disabled)"
    assert (await (await start(started, mcp_config())).health()).detail == (
        "no MCP servers configured"
    )


async def test_stopping_stops_the_server_process(tag: str, started: list[McpTools]) -> None:
    provider = await start(started, mcp_config(knobs_stdio(tag)))
    pid = int((await call(provider, "knobs.pid")).content)
    assert pid in tagged_pids(tag)
    await provider.aclose()
    assert tagged_pids(tag) == []
    assert pid not in zombie_children()


async def test_stopping_while_a_call_hangs_fails_the_call_and_stops_the_process(
    tag: str, started: list[McpTools]
) -> None:
    provider = await start(started, mcp_config(knobs_stdio(tag)))
    hanging = asyncio.ensure_future(call(provider, "knobs.hang"))
    await asyncio.sleep(0.2)
    await provider.aclose()
    with pytest.raises(ToolError, match="went down during the call"):
        await hanging
    assert tagged_pids(tag) == []


# -- the published mcp-server-time ----------------------------------------------------------------


async def test_mcp_server_time_answers_over_stdio(started: list[McpTools]) -> None:
    server = McpServerConfig(
        name="time", transport="stdio", command=str(TIME_SERVER), connect_timeout=20
    )
    provider = await start(started, mcp_config(server))
    assert "time.get_current_time" in [t.spec.name for t in provider.tools()]
    result = await call(provider, "time.get_current_time", timezone="UTC")
    assert result.is_error is False
    assert json.loads(result.content)["timezone"] == "UTC"


async def test_reconnection_backs_off_doubling_up_to_the_maximum(
    started: list[McpTools], tag: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="hubbub.tools.mcp")
    missing = McpServerConfig(name="missing", transport="stdio", command=f"/nonexistent/{tag}")
    config = mcp_config(missing, reconnect_delay=0.05, reconnect_max_delay=0.2)
    await start(started, config)

    def delays() -> list[float]:
        return [r.retry_in for r in caplog.records if hasattr(r, "retry_in")]

    await eventually(lambda: len(delays()) >= 5, what="five retries")
    first, second, third, fourth, fifth = delays()[:5]
    assert 0.04 <= first <= 0.05
    assert 0.08 <= second <= 0.1
    assert 0.16 <= third <= 0.2
    assert 0.16 <= fourth <= 0.2  # the maximum, with jitter
    assert 0.16 <= fifth <= 0.2
    # the same failure again is not a warning each time
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
