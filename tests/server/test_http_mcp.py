"""``/mcp`` over real HTTP, driven by the ``mcp`` package's own client (``streamable_http_client``
and ``ClientSession``) against ``hubbub serve``: listing and calling the caller's tools, the
``chat`` tool, authentication, per-caller filters under concurrency, browser and size checks."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from live_support import LiveServer, assert_problem, running
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CallToolResult, TextContent

# alice may use the calculator and chat; bob only the clock (and not chat); carol anything.
TOML = """\
[server]
max_body_bytes = 4096

[tools.users.alice]
allow = ["basic.calculator", "chat"]

[tools.users.bob]
allow = ["basic.current_time"]

# Replies take a little while (word by word), so that concurrent chats overlap.
[plugins.offline_provider]
token_delay = 0.02
"""

INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "raw", "version": "0"},
    },
}
MCP_HEADERS = {"Accept": "application/json, text/event-stream"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root: Path = tmp_path_factory.mktemp("mcp")
    with running(root, TOML, keys=("alice", "bob", "carol")) as live:
        yield live


def key_of(server: LiveServer, user: str) -> str:
    return server.keys[user][1]


@asynccontextmanager
async def mcp_session(
    server: LiveServer, key: str | None, statuses: list[int] | None = None
) -> AsyncIterator[ClientSession]:
    """An initialised MCP client session to the server's ``/mcp``, sending ``key`` (the HTTP
    statuses of its responses appended to ``statuses``)."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}

    async def record(response: httpx2.Response) -> None:
        if statuses is not None:
            statuses.append(response.status_code)

    hooks = {"response": [record]}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=30, trust_env=False, event_hooks=hooks) as http,
        streamable_http_client(f"{server.url}/mcp", http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


def text_of(result: Any) -> str:
    assert isinstance(result, CallToolResult)
    return "".join(block.text for block in result.content if isinstance(block, TextContent))


async def tool_names(session: ClientSession) -> list[str]:
    return [tool.name for tool in (await session.list_tools()).tools]


# -- listing and calling -----------------------------------------------------------------------


async def test_lists_and_calls_the_callers_tools(server: LiveServer) -> None:
    async with mcp_session(server, key_of(server, "carol")) as session:
        listed = {tool.name: tool for tool in (await session.list_tools()).tools}
        assert {"chat", "basic.calculator", "basic.current_time"} <= set(listed)
        calculator = listed["basic.calculator"]
        assert calculator.description
        assert calculator.input_schema["type"] == "object"
        assert "expression" in calculator.input_schema["properties"]

        result = await session.call_tool("basic.calculator", {"expression": "6 * 7"})
        assert not result.is_error
        assert text_of(result) == "42"


async def test_invalid_arguments_are_a_tool_error_the_caller_can_read(server: LiveServer) -> None:
    async with mcp_session(server, key_of(server, "carol")) as session:
        result = await session.call_tool("basic.calculator", {"expression": 42})
        assert result.is_error
        assert text_of(result).startswith("error: invalid arguments")
        unknown = await session.call_tool("basic.nothing", {})
        assert unknown.is_error
        assert "no tool named 'basic.nothing'" in text_of(unknown)


async def test_a_key_restricted_to_one_tool_sees_and_calls_only_it(server: LiveServer) -> None:
    done = server.hubbub("keys", "create", "--user", "carol", "--tool", "basic.current_time")
    assert done.returncode == 0, done.stderr
    key = done.stdout.strip().splitlines()[-1]
    async with mcp_session(server, key) as session:
        assert await tool_names(session) == ["basic.current_time"]
        clock = await session.call_tool("basic.current_time", {"timezone": "UTC"})
        assert not clock.is_error
        assert re.search(r"\d{4}-\d{2}-\d{2}", text_of(clock))
        for name, arguments in (
            ("basic.calculator", {"expression": "1 + 1"}),
            ("chat", {"message": "hi"}),
        ):
            refused = await session.call_tool(name, arguments)
            assert refused.is_error
            assert text_of(refused) == f"error: no tool named {name!r} is available"


async def test_concurrent_callers_each_get_their_own_tools(server: LiveServer) -> None:
    """Many requests of two users with different filters in flight at once: every listing
    and every call is judged by the credentials of the HTTP request that carries it."""

    async def alice_round(session: ClientSession) -> None:
        assert await tool_names(session) == ["chat", "basic.calculator"]
        assert text_of(await session.call_tool("basic.calculator", {"expression": "2+3"})) == "5"
        refused = await session.call_tool("basic.current_time", {})
        assert refused.is_error
        assert "no tool named" in text_of(refused)

    async def bob_round(session: ClientSession) -> None:
        assert await tool_names(session) == ["basic.current_time"]
        assert not (await session.call_tool("basic.current_time", {})).is_error
        refused = await session.call_tool("basic.calculator", {"expression": "2+3"})
        assert refused.is_error
        assert "no tool named" in text_of(refused)

    async with (
        mcp_session(server, key_of(server, "alice")) as alice,
        mcp_session(server, key_of(server, "bob")) as bob,
    ):
        rounds = [alice_round(alice) if i % 2 else bob_round(bob) for i in range(40)]
        await asyncio.gather(*rounds)


# -- chat ---------------------------------------------------------------------------------------


async def test_chat_replies_and_continues_the_conversation(server: LiveServer) -> None:
    async with mcp_session(server, key_of(server, "alice")) as session:
        first = await session.call_tool("chat", {"message": "hello from mcp"})
        assert not first.is_error, text_of(first)
        assert "hello from mcp" in text_of(first)
        assert first.structured_content is not None
        conversation_id = first.structured_content["conversation_id"]
        assert conversation_id.startswith("conv_")

        second = await session.call_tool(
            "chat", {"message": "and again", "conversation_id": conversation_id}
        )
        assert not second.is_error, text_of(second)
        assert "and again" in text_of(second)
        assert second.structured_content is not None
        assert second.structured_content["conversation_id"] == conversation_id

    with server.client(key_of(server, "alice")) as client:
        response = client.get(f"/api/conversations/{conversation_id}/messages")
        assert response.status_code == 200, response.text
        messages = response.json()["items"]
        assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
        assert messages[0]["content"] == "hello from mcp"
        assert messages[2]["content"] == "and again"


async def test_concurrent_chats_run_for_their_own_callers(server: LiveServer) -> None:
    """Chats of two users in flight at once (with another user's calls between them): each
    conversation belongs to the user whose request started it."""

    async def chat(session: ClientSession, text: str) -> str:
        result = await session.call_tool("chat", {"message": text})
        assert not result.is_error, text_of(result)
        assert text in text_of(result)
        assert result.structured_content is not None
        conversation_id: str = result.structured_content["conversation_id"]
        return conversation_id

    async with (
        mcp_session(server, key_of(server, "alice")) as alice,
        mcp_session(server, key_of(server, "bob")) as bob,
        mcp_session(server, key_of(server, "carol")) as carol,
    ):
        chats = [
            chat(alice if i % 2 else carol, f"words of {'alice' if i % 2 else 'carol'} {i}")
            for i in range(8)
        ]
        listings = [tool_names(bob) for _ in range(8)]
        results = await asyncio.gather(*chats, *listings)  # all in flight together
        ids: list[str] = results[:8]
        assert all(names == ["basic.current_time"] for names in results[8:])

    for i, conversation_id in enumerate(ids):
        owner, other = ("alice", "carol") if i % 2 else ("carol", "alice")
        with server.client(key_of(server, owner)) as client:
            messages = client.get(f"/api/conversations/{conversation_id}/messages")
            assert messages.status_code == 200, messages.text
            assert messages.json()["items"][0]["content"] == f"words of {owner} {i}"
        with server.client(key_of(server, other)) as client:
            assert_problem(client.get(f"/api/conversations/{conversation_id}"), 404)


async def test_chat_refuses_another_users_conversation(server: LiveServer) -> None:
    async with mcp_session(server, key_of(server, "alice")) as alice:
        mine = await alice.call_tool("chat", {"message": "private words"})
        assert mine.structured_content is not None
        conversation_id = mine.structured_content["conversation_id"]
    async with mcp_session(server, key_of(server, "carol")) as carol:
        refused = await carol.call_tool(
            "chat", {"message": "let me in", "conversation_id": conversation_id}
        )
        assert refused.is_error
        assert text_of(refused) == f"error: no conversation {conversation_id!r}"
        assert "private words" not in text_of(refused)
    with server.client(key_of(server, "alice")) as client:
        messages = client.get(f"/api/conversations/{conversation_id}/messages").json()["items"]
        assert [m["content"] for m in messages if m["role"] == "user"] == ["private words"]


async def test_chat_arguments_are_checked(server: LiveServer) -> None:
    async with mcp_session(server, key_of(server, "alice")) as session:
        for arguments in ({}, {"message": ""}, {"message": "hi", "colour": "red"}):
            result = await session.call_tool("chat", arguments)
            assert result.is_error, arguments
            assert text_of(result).startswith("error: invalid arguments"), text_of(result)


# -- authentication and the browser checks --------------------------------------------------------


def raw_post(server: LiveServer, key: str | None, **kwargs: Any) -> httpx.Response:
    headers = {**MCP_HEADERS, **kwargs.pop("headers", {})}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    with server.client(headers=headers) as client:
        if "content" not in kwargs:
            kwargs["json"] = INITIALIZE
        return client.post("/mcp", **kwargs)


def assert_unauthenticated(response: httpx.Response) -> None:
    assert_problem(response, 401)
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert "jsonrpc" not in response.text  # refused before any MCP processing


async def test_refused_without_a_key(server: LiveServer) -> None:
    assert_unauthenticated(raw_post(server, None))
    statuses: list[int] = []
    with pytest.raises(BaseExceptionGroup) as refused:
        async with mcp_session(server, None, statuses):
            pass
    assert statuses == [401]
    assert "MCPError" in " ".join(messages_of(refused.value))


def messages_of(error: BaseException) -> list[str]:
    """The messages of ``error`` and of every exception grouped in it."""
    if isinstance(error, BaseExceptionGroup):
        return [m for inner in error.exceptions for m in messages_of(inner)]
    return [f"{type(error).__name__}: {error}"]


def test_refused_with_a_forged_or_revoked_key(server: LiveServer) -> None:
    key_id, key = server.create_key("carol")
    assert raw_post(server, key).status_code == 200
    forged = key[:-8] + ("A" * 8 if not key.endswith("A" * 8) else "B" * 8)
    assert_unauthenticated(raw_post(server, forged))
    assert_unauthenticated(raw_post(server, "hbk_0123456789abcdef_" + "x" * 40))
    done = server.hubbub("keys", "revoke", key_id)
    assert done.returncode == 0, done.stderr
    assert_unauthenticated(raw_post(server, key))


def test_cross_site_requests_are_refused(server: LiveServer) -> None:
    key = key_of(server, "carol")
    for origin in ("https://evil.example", "null"):
        response = raw_post(server, key, headers={"Origin": origin})
        body = assert_problem(response, 403)
        assert body["code"] == "cross_site_request"
    fetched = raw_post(server, key, headers={"Sec-Fetch-Site": "cross-site"})
    assert assert_problem(fetched, 403)["code"] == "cross_site_request"
    # The server's own origin (a page it serves) is fine.
    own = raw_post(server, key, headers={"Origin": server.url})
    assert own.status_code == 200, own.text
    assert own.json()["result"]["serverInfo"]["name"] == "hubbub"


def test_only_post_is_served(server: LiveServer) -> None:
    with server.client(key_of(server, "carol"), headers=MCP_HEADERS) as client:
        for method in ("GET", "DELETE"):
            response = client.request(method, "/mcp")
            assert_problem(response, 405)
            assert response.headers["allow"] == "POST"
    with server.client(headers=MCP_HEADERS) as anon:
        assert_unauthenticated(anon.get("/mcp"))  # authentication comes first


def test_bodies_over_the_limit_are_refused(server: LiveServer) -> None:
    key = key_of(server, "carol")
    big = {**INITIALIZE, "params": {**INITIALIZE["params"], "padding": "x" * 5000}}
    payload = json.dumps(big).encode()
    assert_problem(
        raw_post(server, key, content=payload, headers={"Content-Type": "application/json"}),
        413,
    )

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        for start in range(0, len(payload), 1000):
            yield payload[start : start + 1000]

    assert_problem(
        raw_post(server, key, content=chunks(), headers={"Content-Type": "application/json"}),
        413,
    )
    # The server is still fine afterwards.
    assert raw_post(server, key).status_code == 200


def modern(server: LiveServer, key: str, method: str, params: dict[str, Any]) -> dict[str, Any]:
    """One request of the 2026-07-28 protocol (no handshake: one self-contained POST)."""
    meta = {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
    }
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": {**params, "_meta": meta}}
    headers = {**MCP_HEADERS, "MCP-Protocol-Version": "2026-07-28", "Mcp-Method": method}
    if method == "tools/call":
        headers["Mcp-Name"] = params["name"]
    with server.client(key, headers=headers) as client:
        response = client.post("/mcp", json=body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()["result"]
    return result


def test_single_exchange_requests_are_judged_by_their_own_caller(server: LiveServer) -> None:
    """The 2026-07-28 single-exchange path (served by another entry of the ``mcp`` package)
    knows its caller as well."""
    listed = modern(server, key_of(server, "bob"), "tools/list", {})
    assert [tool["name"] for tool in listed["tools"]] == ["basic.current_time"]
    assert listed["cacheScope"] == "private"
    called = modern(
        server,
        key_of(server, "alice"),
        "tools/call",
        {"name": "basic.calculator", "arguments": {"expression": "3 * 3"}},
    )
    assert called["content"] == [{"type": "text", "text": "9"}]
    refused = modern(
        server,
        key_of(server, "bob"),
        "tools/call",
        {"name": "basic.calculator", "arguments": {"expression": "3 * 3"}},
    )
    assert refused["isError"] is True
