"""Routes from the ``register_routes`` hook: mounted like the built-in ones, given the runtime,
the caller and the plugin's settings, and listed in the OpenAPI schema. Uses the fixtures
``hubbub.testing`` and ``hubbub_server.testing`` ship for plugin authors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from litestar import get

from hubbub import hookimpl
from hubbub.config import Config
from hubbub.registry import ComponentContext, Registrar
from hubbub.testing import config_for
from hubbub_server.security import Caller, RuntimeDep


class HelloSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    greeting: str = "hello"


class HelloPlugin:
    __name__ = "hello_routes"

    @hookimpl
    def register_routes(self, register: Registrar) -> None:
        def build(context: ComponentContext) -> list[Any]:
            settings: HelloSettings = context.settings

            @get("/api/hello", tags=["hello"], summary="Greets the caller")
            async def hello(runtime: RuntimeDep, principal: Caller) -> dict[str, Any]:
                models = [m.id for m in runtime.llm.models()]
                return {"text": f"{settings.greeting}, {principal.id}", "models": models}

            return [hello]

        register("hello", build, settings=HelloSettings)


@pytest.fixture
def hubbub_config(tmp_path: Path) -> Config:
    return config_for(tmp_path, '[auth]\nmethods = []\n[plugins.hello_routes]\ngreeting = "hi"\n')


@pytest.fixture
def hubbub_extra_plugins() -> list[object]:
    return [HelloPlugin()]


async def test_plugin_route_is_served_with_runtime_caller_and_settings(
    hubbub_client: httpx.AsyncClient,
) -> None:
    response = await hubbub_client.get("/api/hello")
    assert response.status_code == 200
    body = response.json()
    assert body["text"] == "hi, local"  # settings from [plugins.hello_routes]; local mode caller
    assert "offline/echo" in body["models"]


async def test_plugin_route_is_in_the_openapi_schema(hubbub_client: httpx.AsyncClient) -> None:
    schema = (await hubbub_client.get("/schema/openapi.json")).json()
    assert schema["paths"]["/api/hello"]["get"]["summary"] == "Greets the caller"
    assert "/v1/chat/completions" in schema["paths"]


async def test_plugin_route_errors_are_problems(hubbub_client: httpx.AsyncClient) -> None:
    response = await hubbub_client.post("/api/hello")
    assert response.status_code == 405
    assert response.headers["content-type"].startswith("application/problem+json")


class BrokenRoutes:
    __name__ = "broken_routes"

    @hookimpl
    def register_routes(self, register: Registrar) -> None:
        def build(context: ComponentContext) -> list[Any]:
            raise ValueError("no routes today")

        register("broken", build)


def test_a_failing_route_factory_names_its_plugin(tmp_path: Path) -> None:
    from hubbub.errors import ComponentError
    from hubbub_server import create_app

    with pytest.raises(ComponentError, match=r"'broken_routes'.*no routes today"):
        create_app(config_for(tmp_path), extra_plugins=[BrokenRoutes()])
