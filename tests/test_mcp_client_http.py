"""The MCP client over streamable HTTP, against the knobs server in a child process: listing and
calling, a server that dies mid-call and comes back, configured headers, and OAuth client
credentials (a token from the knobs server's own token endpoint, cached, refreshed once on a 401,
never sent to another server)."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
from mcp_servers.support import (
    HttpKnobs,
    call,
    eventually,
    mcp_config,
    part,
    start,
    started,
    tag,
)

from hubbub.config import McpOAuthConfig, McpServerConfig, Secret
from hubbub.errors import ToolError
from hubbub.tools.mcp import McpTools

__all__ = ["started", "tag"]  # fixtures


@pytest.fixture
def servers(tag: str) -> Iterator[list[HttpKnobs]]:
    """HTTP knobs servers a test starts; killed after it."""
    running: list[HttpKnobs] = []
    yield running
    for server in running:
        server.stop()


def http_knobs(servers: list[HttpKnobs], tag: str, *args: str) -> HttpKnobs:
    server = HttpKnobs(tag, *args)
    servers.append(server)
    server.start()
    return server


def http_config(server: HttpKnobs, name: str = "web", **fields: Any) -> McpServerConfig:
    fields.setdefault("connect_timeout", 10.0)
    return McpServerConfig(name=name, transport="http", url=server.url, **fields)


async def test_http_tools_are_listed_and_called(
    tag: str, started: list[McpTools], servers: list[HttpKnobs]
) -> None:
    server = http_knobs(servers, tag)
    provider = await start(started, mcp_config(http_config(server)))
    names = [t.spec.name for t in provider.tools()]
    assert {"web.echo", "web.add", "web.weird_name_"} <= set(names)
    assert (await call(provider, "web.echo", text="over http")).content == "over http"
    assert (await call(provider, "web.add", a=20, b=22)).data == {"total": 42}
    health = part(await provider.health(), "web")
    assert (health.status, health.backend) == ("ok", "http")


async def test_http_list_changed_makes_a_new_tool_visible(
    tag: str, started: list[McpTools], servers: list[HttpKnobs]
) -> None:
    server = http_knobs(servers, tag)
    provider = await start(started, mcp_config(http_config(server)))
    assert (await call(provider, "web.grow")).content == "grown"
    await eventually(
        lambda: "web.extra" in [t.spec.name for t in provider.tools()], what="the new tool"
    )


async def test_an_http_server_dying_mid_call_fails_the_call_promptly_then_comes_back(
    tag: str, started: list[McpTools], servers: list[HttpKnobs]
) -> None:
    server = http_knobs(servers, tag)
    provider = await start(
        started, mcp_config(http_config(server, call_timeout=60), ping_interval=0.3)
    )
    began = time.monotonic()
    with pytest.raises(ToolError, match="MCP server 'web' went down during the call"):
        await call(provider, "web.crash")
    assert time.monotonic() - began < 30  # not at its 60 s timeout
    server.stop()
    await eventually(lambda: not provider.tools(), what="tools hidden")
    assert part(await provider.health(), "web").status == "down"
    server.start()  # the same port
    await eventually(lambda: bool(provider.tools()), what="reconnection")
    assert (await call(provider, "web.echo", text="back")).content == "back"


async def test_an_http_server_that_stops_answering_is_reconnected_when_it_answers_again(
    tag: str, started: list[McpTools], servers: list[HttpKnobs]
) -> None:
    server = http_knobs(servers, tag)
    provider = await start(
        started, mcp_config(http_config(server, connect_timeout=1.0), ping_interval=0.2)
    )
    assert server.process is not None
    server.process.send_signal(signal.SIGSTOP)  # connections accepted, nothing answered
    try:
        await eventually(lambda: not provider.tools(), what="down after unanswered pings")
        detail = part(await provider.health(), "web").detail
        assert "no answer to a ping within 1 s" in detail

        async def retrying() -> bool:
            return "next try in" in part(await provider.health(), "web").detail

        # closing the session (its DELETE unanswered) is cut after connect_timeout
        await eventually(retrying, within=10, what="the connection abandoned")
    finally:
        server.process.send_signal(signal.SIGCONT)
    await eventually(lambda: bool(provider.tools()), what="reconnection")
    assert (await call(provider, "web.echo", text="awake")).content == "awake"


async def test_configured_headers_are_sent(
    tag: str, started: list[McpTools], servers: list[HttpKnobs]
) -> None:
    server = http_knobs(servers, tag, "--token", "static-token")
    good = http_config(server, headers={"Authorization": Secret("Bearer static-token")})
    provider = await start(started, mcp_config(good))
    seen = await call(provider, "web.seen_authorization")
    assert json.loads(seen.content) == ["Bearer static-token"]


async def test_a_server_refusing_the_credentials_is_down_saying_so(
    tag: str, started: list[McpTools], servers: list[HttpKnobs]
) -> None:
    server = http_knobs(servers, tag, "--token", "static-token")
    bad = http_config(server, headers={"Authorization": Secret("Bearer wrong")})
    provider = await start(started, mcp_config(bad))
    assert provider.tools() == []
    detail = part(await provider.health(), "web").detail
    assert detail.startswith("the server answered HTTP 401")
    assert "wrong" not in detail


def oauth(server: HttpKnobs, secret: str) -> McpOAuthConfig:
    return McpOAuthConfig(
        token_url=f"http://127.0.0.1:{server.port}/token",
        client_id="hubbub",
        client_secret=Secret(secret),
        scope="tools",
    )


async def test_oauth_gets_a_token_caches_it_and_refreshes_it_once_on_401(
    tag: str, started: list[McpTools], servers: list[HttpKnobs]
) -> None:
    guarded = http_knobs(servers, tag, "--client-secret", "client-secret")
    plain = http_knobs(servers, tag)
    config = mcp_config(
        http_config(guarded, oauth=oauth(guarded, "client-secret")), http_config(plain, "plain")
    )
    provider = await start(started, config)
    for n in range(3):
        assert (await call(provider, "web.echo", text=str(n))).content == str(n)
    assert (await call(provider, "web.tokens_issued")).content == "1"  # cached
    credentials = provider.servers["web"].credentials
    assert credentials is not None
    assert credentials.fetched == 1
    # the server forgets its tokens: the next request gets a 401, a new token, and goes through
    assert (await call(provider, "web.revoke_tokens")).content == "revoked"
    assert (await call(provider, "web.echo", text="again")).content == "again"
    assert (await call(provider, "web.tokens_issued")).content == "2"
    # the token went to its server only
    assert json.loads((await call(provider, "web.seen_authorization")).content) == [
        "Bearer tok-1",
        "Bearer tok-2",
    ]
    assert json.loads((await call(provider, "plain.seen_authorization")).content) == []


async def test_oauth_with_a_wrong_secret_is_down_saying_why(
    tag: str, started: list[McpTools], servers: list[HttpKnobs]
) -> None:
    guarded = http_knobs(servers, tag, "--client-secret", "client-secret")
    provider = await start(
        started, mcp_config(http_config(guarded, oauth=oauth(guarded, "not-the-secret")))
    )
    assert provider.tools() == []
    detail = part(await provider.health(), "web").detail
    assert f"could not get a token from http://127.0.0.1:{guarded.port}/token" in detail
    assert "not-the-secret" not in detail
