"""The OpenAPI document lists the bearer requirement on plugin routes exactly as the server
enforces it: on a route that takes the caller, on a route guarded by default, and not on a route
declared public."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar import get

from hubbub import hookimpl
from hubbub.config import Config
from hubbub.registry import ComponentContext, Registrar
from hubbub.testing import config_for
from hubbub_server.security import Caller


class GuardedRoutes:
    __name__ = "guarded_routes"

    @hookimpl
    def register_routes(self, register: Registrar) -> None:
        def build(context: ComponentContext) -> list[Any]:
            @get("/api/guarded/caller")
            async def with_caller(principal: Caller) -> dict[str, str]:
                return {"id": principal.id}

            @get("/api/guarded/default")
            async def by_default() -> dict[str, str]:
                return {"ok": "yes"}

            @get("/api/guarded/public", opt={"public": True})
            async def public() -> dict[str, str]:
                return {"ok": "yes"}

            return [with_caller, by_default, public]

        register("guarded", build)


@pytest.fixture
def hubbub_config(tmp_path: Path) -> Config:
    return config_for(tmp_path, "[auth]\nmethods = []\n")


@pytest.fixture
def hubbub_extra_plugins() -> list[object]:
    return [GuardedRoutes()]


async def test_plugin_routes_declare_bearer_security_unless_public(
    hubbub_client: httpx.AsyncClient,
) -> None:
    schema = (await hubbub_client.get("/schema/openapi.json")).json()
    paths = schema["paths"]
    assert paths["/api/guarded/caller"]["get"]["security"] == [{"bearer": []}]
    assert paths["/api/guarded/default"]["get"]["security"] == [{"bearer": []}]
    assert "security" not in paths["/api/guarded/public"]["get"]
    assert "security" not in paths["/health/live"]["get"]
    assert paths["/api/tools"]["get"]["security"] == [{"bearer": []}]
