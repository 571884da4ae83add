"""``/mcp`` with tools a test plugin adds (an output schema, a list result, a failure): the app
served in this process by uvicorn over real HTTP, called with the ``mcp`` package's client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2
import msgspec
import pytest
import uvicorn
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp_types import TextContent

from hubbub import hookimpl
from hubbub.errors import ToolError
from hubbub.testing import config_for
from hubbub.tools import function_tools, tool
from hubbub_server.app import create_app


class Area(msgspec.Struct, kw_only=True):
    """A rectangle's area."""

    width: float
    height: float
    area: float


@tool
async def area(width: float, height: float) -> Area:
    """The area of a width x height rectangle."""
    return Area(width=width, height=height, area=width * height)


@tool
async def corners(count: int) -> list[int]:
    """The numbers of the corners, 1 to count."""
    return list(range(1, count + 1))


@tool
async def refuse() -> Area:
    """Always fails."""
    raise ToolError("not today")


class ShapesPlugin:
    """Offers the tools above as ``shapes.*``."""

    @hookimpl
    def register_tools(self, register: Any) -> None:
        register("shapes", lambda context: function_tools(area, corners, refuse))


@asynccontextmanager
async def serving(tmp_path: Path, toml: str = "") -> AsyncIterator[str]:
    """The app (with the shapes tools) served on a free loopback port; its ``/mcp`` URL."""
    app = create_app(config_for(tmp_path, toml), extra_plugins=[ShapesPlugin()])
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, lifespan="on")
    )
    serving = asyncio.create_task(server.serve())
    while not server.started:
        assert not serving.done(), "uvicorn stopped before it started"
        await asyncio.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 30)


@pytest.fixture
async def mcp_url(tmp_path: Path) -> AsyncIterator[str]:
    async with serving(tmp_path) as url:
        yield url


async def test_structured_results_follow_the_output_schema(mcp_url: str) -> None:
    async with (
        httpx2.AsyncClient(timeout=30, trust_env=False) as http,
        streamable_http_client(mcp_url, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        listed = {t.name: t for t in (await session.list_tools()).tools}
        # An object schema is MCP's output schema; a list's is not one MCP can carry.
        schema = listed["shapes.area"].output_schema
        assert schema is not None
        assert schema["type"] == "object"
        assert set(schema["properties"]) == {"width", "height", "area"}
        assert listed["shapes.corners"].output_schema is None

        # The client checks structuredContent against the schema: it would raise otherwise.
        result = await session.call_tool("shapes.area", {"width": 3, "height": 4})
        assert not result.is_error
        assert result.structured_content == {"width": 3.0, "height": 4.0, "area": 12.0}
        assert isinstance(result.content[0], TextContent)
        assert msgspec.json.decode(result.content[0].text) == result.structured_content

        listed_result = await session.call_tool("shapes.corners", {"count": 3})
        assert not listed_result.is_error
        assert listed_result.structured_content is None
        assert isinstance(listed_result.content[0], TextContent)
        assert listed_result.content[0].text == "[1,2,3]"

        failed = await session.call_tool("shapes.refuse", {})
        assert failed.is_error
        assert failed.structured_content is None
        assert isinstance(failed.content[0], TextContent)
        assert failed.content[0].text == "error: not today"


async def test_serve_false_leaves_the_endpoint_out(tmp_path: Path) -> None:
    async with (
        serving(tmp_path, "[mcp]\nserve = false\n") as url,
        httpx2.AsyncClient(timeout=30, trust_env=False) as http,
    ):
        response = await http.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
        assert response.status_code == 404
        assert response.headers["content-type"].startswith("application/problem+json")
