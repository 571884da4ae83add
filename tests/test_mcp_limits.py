"""Limits on what an MCP server may send hubbub (tool counts, descriptions, schemas, list_changed
storms, huge HTTP answers, stdout noise), tools kept across listings, and the ``chat`` tool of
hubbub's own MCP server (no empty conversation left by a failed turn; ``[[tools.rules]]``)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from mcp_servers.support import (
    HttpKnobs,
    call,
    eventually,
    knobs_stdio,
    mcp_config,
    part,
    start,
    started,
    tag,
    tool,
)

from hubbub.config import McpServerConfig
from hubbub.errors import ToolError
from hubbub.mcp_server.chat import run_chat
from hubbub.mcp_server.server import _Handlers
from hubbub.models import Principal
from hubbub.runtime import Runtime
from hubbub.tools.mcp import McpTools
from hubbub.tools.mcp.connection import NOISE_BURST
from hubbub.tools.mcp.http_limits import MAX_RESPONSE_BYTES
from hubbub.tools.mcp.stdio import MAX_MESSAGE_BYTES
from hubbub.tools.mcp.tools import MAX_DESCRIPTION, MAX_TOOLS

__all__ = ["started", "tag"]  # fixtures


# -- what a server lists ------------------------------------------------------------------------


async def test_a_server_offering_too_many_tools_is_cut_and_says_so(
    tag: str, started: list[McpTools]
) -> None:
    provider = await start(started, mcp_config(knobs_stdio(tag)))
    before = len(provider.tools())
    assert (await call(provider, "knobs.crowd", count=300)).content == "crowded"
    await eventually(lambda: len(provider.tools()) != before, what="the new listing")
    assert len(provider.tools()) == MAX_TOOLS
    detail = part(await provider.health(), "knobs").detail
    assert detail.startswith(f"{MAX_TOOLS} tools; ")
    assert f"{before + 300 - MAX_TOOLS} left out (more than {MAX_TOOLS} tools)" in detail


async def test_long_descriptions_are_cut_and_huge_schemas_hide_their_tool(
    tag: str, started: list[McpTools]
) -> None:
    provider = await start(started, mcp_config(knobs_stdio(tag)))
    result = await call(
        provider, "knobs.crowd", count=0, description_chars=5000, schema_bytes=70_000
    )
    assert result.content == "crowded"
    await eventually(
        lambda: "knobs.wordy" in {t.spec.name for t in provider.tools()}, what="the new listing"
    )
    wordy = tool(provider, "knobs.wordy").spec.description
    assert len(wordy) == MAX_DESCRIPTION
    assert wordy.endswith("…")
    assert "knobs.bulky" not in {t.spec.name for t in provider.tools()}
    detail = part(await provider.health(), "knobs").detail
    assert "1 hidden (schema over 64 KiB: 'bulky')" in detail
    assert f"1 description cut to {MAX_DESCRIPTION} characters" in detail


async def test_a_storm_of_list_changed_is_coalesced(tag: str, started: list[McpTools]) -> None:
    provider = await start(started, mcp_config(knobs_stdio(tag)))
    supervisor = provider.servers["knobs"]
    before = supervisor.listings
    # 20 notifications over about a second: one listing each would be 20 listings
    await call(provider, "knobs.chatter", times=20, pause=0.05)
    await call(provider, "knobs.slow", seconds=1.5)  # room for the last listing
    listings = supervisor.listings - before
    assert 1 <= listings <= 5, listings


async def test_unchanged_tools_are_the_same_objects_after_a_new_listing(
    tag: str, started: list[McpTools]
) -> None:
    provider = await start(started, mcp_config(knobs_stdio(tag)))
    echo = tool(provider, "knobs.echo")
    assert (await call(provider, "knobs.grow")).content == "grown"
    await eventually(
        lambda: "knobs.extra" in {t.spec.name for t in provider.tools()}, what="the new tool"
    )
    assert tool(provider, "knobs.echo") is echo  # the registry keeps its concurrency slots


# -- what a server answers ----------------------------------------------------------------------


@pytest.fixture
def servers() -> Iterator[list[HttpKnobs]]:
    running: list[HttpKnobs] = []
    yield running
    for server in running:
        server.stop()


def http_server(servers: list[HttpKnobs], tag: str, *args: str) -> McpServerConfig:
    server = HttpKnobs(tag, *args)
    servers.append(server)
    server.start()
    return McpServerConfig(name="web", transport="http", url=server.url, connect_timeout=10.0)


@pytest.mark.parametrize("mode", ["json", "sse"])
async def test_an_http_answer_past_the_limit_fails_the_call_not_the_server(
    tag: str, started: list[McpTools], servers: list[HttpKnobs], mode: str
) -> None:
    args = ("--json",) if mode == "json" else ()
    provider = await start(started, mcp_config(http_server(servers, tag, *args)))
    # more than the package's default event limit (1 MiB), less than hubbub's
    fine = await call(provider, "web.big", size=3 * 1024 * 1024)
    assert len(fine.content) == 3 * 1024 * 1024
    with pytest.raises(ToolError) as failed:
        await call(provider, "web.big", size=MAX_RESPONSE_BYTES + 1024)
    assert "MCP server 'web'" in str(failed.value)
    assert (await call(provider, "web.echo", text="still here")).content == "still here"


async def test_a_stdio_message_past_the_limit_fails_the_call_and_the_server_comes_back(
    tag: str, started: list[McpTools]
) -> None:
    provider = await start(started, mcp_config(knobs_stdio(tag)))
    fine = await call(provider, "knobs.big", size=3 * 1024 * 1024)
    assert len(fine.content) == 3 * 1024 * 1024
    with pytest.raises(ToolError) as failed:
        await call(provider, "knobs.big", size=MAX_MESSAGE_BYTES + 1024)
    assert str(failed.value) == (
        "MCP server 'knobs' went down during the call: "
        f"the server wrote a message larger than {MAX_MESSAGE_BYTES} bytes"
    )
    supervisor = provider.servers["knobs"]
    await eventually(lambda: supervisor.connections == 2, what="the reconnection")
    assert (await call(provider, "knobs.echo", text="back")).content == "back"


async def test_stdout_noise_of_a_stdio_server_is_rate_limited(
    tag: str, started: list[McpTools], caplog: pytest.LogCaptureFixture
) -> None:
    provider = await start(started, mcp_config(knobs_stdio(tag)))
    with caplog.at_level(logging.WARNING):
        assert (await call(provider, "knobs.noise", lines=200)).content == "noisy"
        assert (await call(provider, "knobs.echo", text="after")).content == "after"
    noise = [r for r in caplog.records if "transport error" in r.getMessage()]
    assert len(noise) == NOISE_BURST
    tracebacks = [r for r in caplog.records if r.name.startswith("mcp.client")]
    assert tracebacks == []


# -- the chat tool of hubbub's MCP server ---------------------------------------------------------


@pytest.fixture
async def chat_runtime(make_runtime: Callable[..., Runtime]) -> AsyncIterator[Runtime]:
    text = '[[tools.rules]]\nmatch = "chat"\nroles = ["admin"]\n'
    async with make_runtime(text) as runtime:
        yield runtime


async def conversations(runtime: Runtime, principal: Principal) -> int:
    return len((await runtime.conversations.list_conversations(principal)).items)


@pytest.mark.parametrize(
    ("principal", "model", "says"),
    [
        (Principal(id="u1"), "nowhere/nothing", "nowhere/nothing"),
        (
            Principal(id="u2", scopes=frozenset({"model:offline/echo"})),
            "offline/tools",
            "may not use the model",
        ),
    ],
)
async def test_a_chat_turn_refused_leaves_no_conversation(
    chat_runtime: Runtime, principal: Principal, model: str, says: str
) -> None:
    result = await run_chat(
        chat_runtime.conversations, principal, {"message": "hi", "model": model}
    )
    assert result.is_error
    assert says in result.content[0].text  # type: ignore[union-attr]
    assert await conversations(chat_runtime, principal) == 0
    ok = await run_chat(chat_runtime.conversations, principal, {"message": "hi"})
    assert not ok.is_error
    assert await conversations(chat_runtime, principal) == 1


async def test_tools_rules_about_chat_apply(chat_runtime: Runtime) -> None:
    handlers = _Handlers(chat_runtime)
    assert handlers.chat_spec().roles == ["admin"]
    assert not handlers.chat_allowed(Principal(id="u1"))
    assert handlers.chat_allowed(Principal(id="root", roles=frozenset({"admin"})))
