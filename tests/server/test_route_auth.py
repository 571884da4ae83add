"""Routes a plugin registers with ``register_routes`` require a caller, as the built-in ones do,
unless they are declared public (``opt={"public": True}``); a handler that takes the
``principal`` dependency gets the caller the guard authenticated. Over real HTTP: the reference
app with a plugin, served by uvicorn on a loopback port."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
import uvicorn
from litestar import Controller, Litestar, get, post
from litestar.enums import RequestEncodingType
from litestar.params import Body
from live_support import assert_problem

from hubbub import hookimpl
from hubbub.registry import ComponentContext, Registrar
from hubbub.testing import config_for, runtime_for
from hubbub_server import create_app
from hubbub_server.security import Caller


class StatusController(Controller):
    path = "/api/weather/public"
    opt = {"public": True}  # every route of this controller

    @get("/forecast")
    async def forecast(self) -> dict[str, str]:
        return {"forecast": "sunny"}


class WeatherPlugin:
    __name__ = "weather_routes"

    @hookimpl
    def register_routes(self, register: Registrar) -> None:
        def build(context: ComponentContext[Any]) -> list[Any]:
            @get("/api/weather/private")
            async def private() -> dict[str, str]:  # never asks who calls: protected anyway
                return {"weather": "rain"}

            @get("/api/weather/mine")
            async def mine(principal: Caller) -> dict[str, str]:
                return {"for": principal.id}

            @post("/api/weather/reports")
            async def report(
                principal: Caller, data: Annotated[dict[str, str], Body()]
            ) -> dict[str, str]:
                return {"by": principal.id, **data}

            @get("/api/weather/status", opt={"public": True})
            async def status() -> dict[str, str]:
                return {"status": "ok"}

            @post("/api/weather/form")
            async def form(
                principal: Caller,
                data: Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)],
            ) -> dict[str, str]:
                return {"by": principal.id, **data}

            return [private, mine, report, status, form, StatusController]

        register("weather", build)


@contextlib.contextmanager
def serving(app: Litestar) -> Iterator[str]:
    """``app`` under uvicorn on a free loopback port, in a thread: its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    try:
        while not server.started:
            assert thread.is_alive(), "the server stopped while starting"
            assert time.monotonic() < deadline, "the server did not start in 20 s"
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


async def make_key(home: Path, user: str) -> str:
    async with runtime_for(config_for(home)) as runtime:  # keys live in its account store
        return (await runtime.api_keys.create(user))[1]


@pytest.fixture(scope="module")
def weather(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """The server (keys exist: local mode is over) and alice's key."""
    home = tmp_path_factory.mktemp("route-auth")
    key = asyncio.run(make_key(home, "alice"))
    app = create_app(config_for(home), extra_plugins=[WeatherPlugin()])
    with serving(app) as url:
        yield url, key


def test_a_plugin_route_without_credentials_is_401(weather: tuple[str, str]) -> None:
    url, _ = weather
    with httpx.Client(base_url=url, trust_env=False) as anon:
        for path in ("/api/weather/private", "/api/weather/mine"):
            response = anon.get(path)
            assert_problem(response, 401)
            assert response.headers["www-authenticate"].lower().startswith("bearer")
        assert_problem(anon.post("/api/weather/reports", json={"sky": "grey"}), 401)
    with httpx.Client(base_url=url, trust_env=False, headers={"Authorization": "Bearer x"}) as bad:
        assert_problem(bad.get("/api/weather/private"), 401)


def test_a_plugin_route_with_a_key_is_served_and_knows_the_caller(
    weather: tuple[str, str],
) -> None:
    url, key = weather
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=url, trust_env=False, headers=headers) as alice:
        assert alice.get("/api/weather/private").json() == {"weather": "rain"}
        assert alice.get("/api/weather/mine").json() == {"for": "alice"}
        reported = alice.post("/api/weather/reports", json={"sky": "grey"})
        assert reported.json() == {"by": "alice", "sky": "grey"}


def test_a_public_plugin_route_answers_without_credentials(weather: tuple[str, str]) -> None:
    url, _ = weather
    with httpx.Client(base_url=url, trust_env=False) as anon:
        assert anon.get("/api/weather/status").json() == {"status": "ok"}
        assert anon.get("/api/weather/public/forecast").json() == {"forecast": "sunny"}


def test_two_authorization_headers_on_a_plugin_route_are_400(weather: tuple[str, str]) -> None:
    url, key = weather
    headers = [("Authorization", f"Bearer {key}"), ("Authorization", f"Bearer {key}")]
    with httpx.Client(base_url=url, trust_env=False) as client:
        body = assert_problem(client.get("/api/weather/private", headers=headers), 400)
        assert body["code"] == "ambiguous_credentials"


def test_in_local_mode_a_plugin_route_serves_the_local_user(tmp_path: Path) -> None:
    app = create_app(config_for(tmp_path), extra_plugins=[WeatherPlugin()])
    with serving(app) as url, httpx.Client(base_url=url, trust_env=False) as client:
        assert client.get("/api/weather/private").status_code == 200
        assert client.get("/api/weather/mine").json() == {"for": "local"}


def test_a_route_declaring_a_form_body_takes_forms_and_only_forms(
    weather: tuple[str, str],
) -> None:
    url, key = weather
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=url, trust_env=False, headers=headers) as alice:
        posted = alice.post("/api/weather/form", data={"sky": "blue"})
        assert posted.status_code == 201, posted.text
        assert posted.json() == {"by": "alice", "sky": "blue"}
        refused = alice.post(
            "/api/weather/form", content=b"sky=blue", headers={"Content-Type": "text/plain"}
        )
        body = assert_problem(refused, 415)
        assert "application/x-www-form-urlencoded" in body["detail"]
        # A form route is no way around the cross-site check.
        evil = {"Origin": "https://evil.example"}
        assert_problem(alice.post("/api/weather/form", data={"sky": "x"}, headers=evil), 403)
