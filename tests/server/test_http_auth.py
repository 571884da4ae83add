"""Caller identity over real HTTP: API keys, revocation, local mode, and the refusal to serve a
non-loopback address without authentication."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import openai
import pytest
from live_support import LiveServer, assert_problem, running

PROTECTED = [
    ("GET", "/v1/models"),
    ("POST", "/v1/chat/completions"),
    ("GET", "/api/conversations"),
    ("POST", "/api/conversations"),
    ("GET", "/api/tools"),
    ("GET", "/api/events"),
]
CHAT = {"model": "offline/echo", "messages": [{"role": "user", "content": "hi"}]}


def assert_unauthorized(response: httpx.Response) -> dict:
    body = assert_problem(response, 401)
    assert response.headers["www-authenticate"].lower().startswith("bearer")
    return body


def call(client: httpx.Client, method: str, path: str) -> httpx.Response:
    return client.request(method, path, json=CHAT if method == "POST" else None)


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_no_key_is_401(anon: httpx.Client, method: str, path: str) -> None:
    body = assert_unauthorized(call(anon, method, path))
    assert "Bearer" in body["detail"]


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer hbk_0123456789abcdef_" + "A" * 43,  # well-formed, unknown
        "Bearer not-a-key-at-all",
        "Bearer",
        "Basic YWxpY2U6c2VjcmV0",
        "hbk_0123456789abcdef_" + "A" * 43,  # no scheme
    ],
    ids=["unknown-key", "garbage", "empty", "basic", "no-scheme"],
)
def test_invalid_credentials_are_401(live_server: LiveServer, authorization: str) -> None:
    with live_server.client(headers={"Authorization": authorization}) as client:
        for method, path in PROTECTED[:3]:
            assert_unauthorized(call(client, method, path))


def test_wrong_secret_for_a_real_key_id_is_401(live_server: LiveServer, alice_key: str) -> None:
    prefix, key_id, secret = alice_key.split("_", 2)  # the secret itself may contain "_"
    forged = f"{prefix}_{key_id}_{'B' * 43}"
    assert forged != alice_key
    with live_server.client(forged) as client:
        body = assert_unauthorized(client.get("/v1/models"))
    assert secret not in body["detail"]


def test_open_endpoints_need_no_key(anon: httpx.Client) -> None:
    for path in ("/health/live", "/health/ready", "/metrics", "/schema/openapi.json"):
        assert anon.get(path).status_code == 200, path


def test_key_created_while_serving_works_and_revocation_applies_within_a_second(
    live_server: LiveServer, make_key: Callable[[str], tuple[str, str]]
) -> None:
    key_id, key = make_key("carol")
    with live_server.client(key) as carol:
        assert carol.get("/v1/models").status_code == 200
        created = carol.post("/api/conversations", json={"title": "carol's"})
        assert created.json()["owner"] == "carol"

        revoked = live_server.hubbub("keys", "revoke", key_id)
        assert revoked.returncode == 0, revoked.stderr
        # This server's event log is its own: it reads the key again after [sessions]
        # check_interval (1 s) at the latest.
        began = time.monotonic()
        while (response := carol.get("/v1/models")).status_code == 200:
            assert time.monotonic() - began < 1.0 + 4.0  # the interval, and a busy machine
            time.sleep(0.05)
        body = assert_unauthorized(response)
        assert body["detail"] == "the API key is not valid"  # why is in the log, not here
        assert f"API key {key_id} refused: revoked" in live_server.log()
        assert_unauthorized(carol.get(f"/api/conversations/{created.json()['id']}"))

    listed = live_server.hubbub("keys", "list", "--user", "carol")
    assert f"{key_id}  carol  revoked" in listed.stdout
    again = live_server.hubbub("keys", "revoke", key_id)
    assert again.returncode != 0
    assert key_id in again.stderr


def test_keys_are_stored_hashed(live_server: LiveServer, alice_key: str) -> None:
    secret = alice_key.split("_", 2)[2]
    for path in live_server.home.iterdir():
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


# -- local mode ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server on loopback with no key at all."""
    root: Path = tmp_path_factory.mktemp("local")
    with running(root, "[server]\nheartbeat_interval = 0.2\n") as server:
        yield server


def test_local_mode_serves_without_a_key(local_server: LiveServer) -> None:
    with local_server.client() as client:
        assert client.get("/v1/models").status_code == 200
        created = client.post("/api/conversations", json={"title": "mine"})
        assert created.status_code == 201
        assert created.json()["owner"] == "local"
    # The official client needs some api_key; local mode accepts whatever it sends.
    with openai.OpenAI(
        base_url=f"{local_server.url}/v1", api_key="unused", max_retries=0
    ) as client:
        reply = client.chat.completions.create(
            model="offline/echo", messages=[{"role": "user", "content": "local hello"}]
        )
    assert "local hello" in (reply.choices[0].message.content or "")
    assert "no credentials are set up" in local_server.log()


def test_first_key_ends_local_mode(local_server: LiveServer) -> None:
    """Runs after the local-mode test: it provisions the server."""
    _, key = local_server.create_key("alice")
    started = time.monotonic()
    with local_server.client() as anon, local_server.client(key) as alice:
        assert alice.get("/v1/models").status_code == 200  # the key works at once
        status = anon.get("/v1/models").status_code
        while status == 200 and time.monotonic() - started < 6:
            time.sleep(0.1)
            status = anon.get("/v1/models").status_code
        assert_unauthorized(anon.get("/v1/models"))
    # The documented provisioning cache is about 2 s.
    assert time.monotonic() - started < 4


def test_refuses_to_serve_a_public_address_without_keys(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    server = LiveServer(tmp_path_factory.mktemp("public"), "", host="0.0.0.0")
    done = server.hubbub(
        "serve",
        "--config",
        str(server.config),
        "--host",
        "0.0.0.0",
        "--port",
        str(server.port),
        timeout=30,
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    explanation = [line for line in done.stderr.splitlines() if "refusing to serve" in line]
    assert len(explanation) == 1, output
    assert "0.0.0.0" in explanation[0]
    assert "hubbub keys create" in explanation[0]
    # It stopped before binding: uvicorn never started.
    assert "Started server process" not in output
    assert "Uvicorn running" not in output
    assert "Traceback" not in output
