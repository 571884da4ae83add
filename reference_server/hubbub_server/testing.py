"""Test helpers for the reference server, loaded by pytest automatically (entry point
``pytest11``): ``hubbub_client``, an async HTTP client (httpx, in process) for an app serving
``hubbub_runtime``. That runtime loads the plugins the test names (``hubbub_plugins``, see
:mod:`hubbub.testing`) plus ``server``, the reference server's own plugin. A plugin's routes,
tools and models are reachable through it::

    @pytest.fixture
    def hubbub_plugins():
        return [*builtin_plugins(), "my_plugin"]

    async def test_my_route(hubbub_client):
        response = await hubbub_client.get("/api/tools")
        assert "my_tool" in [tool["name"] for tool in response.json()["tools"]]
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from hubbub.testing import fixture_needs

__all__: list[str] = []

fixture_needs("hubbub_client", "server")  # the client serves an app: load the server's plugin

try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - the async fixtures need pytest-asyncio
    pytest_asyncio = None  # type: ignore[assignment]

if pytest_asyncio is not None:

    @pytest_asyncio.fixture
    async def hubbub_client(hubbub_runtime: Any) -> AsyncIterator[Any]:
        """An ``httpx.AsyncClient`` talking to an app that serves ``hubbub_runtime`` (which
        loads the ``server`` plugin because this fixture is used)."""
        from litestar.testing import AsyncTestClient

        from hubbub_server.app import create_app

        app = create_app(runtime=hubbub_runtime)
        async with AsyncTestClient(app, base_url="http://127.0.0.1") as client:
            yield client

else:  # pragma: no cover

    @pytest.fixture
    def hubbub_client() -> Any:
        """Needs pytest-asyncio."""
        raise RuntimeError(
            "the hubbub_client fixture needs pytest-asyncio: pip install 'hubbub[testing]'"
        )
