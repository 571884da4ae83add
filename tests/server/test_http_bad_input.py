"""Bad input over real HTTP is the client's fault, told in a problem document: cursors whose
numbers leave SQLite's 64 bits, bodies that are not UTF-8, JSON nested 100,000 deep. Each used to
be a 500 (OverflowError, UnicodeDecodeError, RecursionError)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import httpx
import pytest
from live_support import LiveServer, assert_problem, running

CHAT = "/v1/chat/completions"
JSON = {"Content-Type": "application/json"}


def cursor_of(parts: list[object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(parts).encode()).decode()


@pytest.fixture(scope="module")
def roomy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server with the default body limit (1 MiB): room for JSON nested 100,000 deep."""
    with running(tmp_path_factory.mktemp("roomy"), "", keys=("nina",)) as server:
        yield server


@pytest.fixture
def nina(roomy: LiveServer) -> Iterator[httpx.Client]:
    with roomy.client(roomy.keys["nina"][1]) as client:
        yield client


@pytest.fixture
def conversation(alice: httpx.Client) -> Iterator[str]:
    created = alice.post("/api/conversations", json={"title": "bad input"})
    assert created.status_code == 201, created.text
    yield created.json()["id"]
    alice.delete(f"/api/conversations/{created.json()['id']}")


@pytest.mark.parametrize(
    "parts",
    [[2**63, "conv_x"], [-(2**63) - 1, "conv_x"], [10**40, "conv_x"]],
    ids=["2^63", "-2^63-1", "10^40"],
)
def test_conversation_cursor_past_64_bits_is_a_problem(
    alice: httpx.Client, parts: list[object]
) -> None:
    response = alice.get("/api/conversations", params={"cursor": cursor_of(parts)})
    body = assert_problem(response, 422, field="cursor")
    assert body["code"] == "invalid_request"


@pytest.mark.parametrize("seq", [2**63, 2**64 + 1, -(2**70)], ids=["2^63", "2^64+1", "-2^70"])
def test_message_cursor_past_64_bits_is_a_problem(
    alice: httpx.Client, conversation: str, seq: int
) -> None:
    response = alice.get(
        f"/api/conversations/{conversation}/messages", params={"cursor": cursor_of([seq])}
    )
    assert_problem(response, 422, field="cursor")


@pytest.mark.parametrize("cursor", ["%ff%fe", "\u00e9t\u00e9", "%00", "=" * 300])
def test_strange_cursor_text_is_a_problem(alice: httpx.Client, cursor: str) -> None:
    response = alice.get("/api/conversations", params={"cursor": cursor})
    assert 400 <= response.status_code < 500
    assert_problem(response, response.status_code)


def _targets(conversation: str) -> list[tuple[str, str, bytes]]:
    """(method, path, a valid body whose string content is replaced) for every JSON route."""
    return [
        ("POST", "/api/conversations", b'{"title": "%s"}'),
        ("PATCH", f"/api/conversations/{conversation}", b'{"title": "%s"}'),
        ("POST", f"/api/conversations/{conversation}/messages", b'{"content": "%s"}'),
        (
            "POST",
            CHAT,
            b'{"model": "offline/echo", "messages": [{"role": "user", "content": "%s"}]}',
        ),
    ]


@pytest.mark.parametrize(
    "text",
    [b"\xff", b"caf\xe9", b"\xed\xa0\x80", b"ok \xc3"],
    ids=["ff", "latin1", "surrogate", "cut"],
)
def test_a_body_that_is_not_utf8_is_400(
    alice: httpx.Client, conversation: str, text: bytes
) -> None:
    for method, path, template in _targets(conversation):
        body = template.replace(b"%s", text)
        response = alice.request(method, path, content=body, headers=JSON)
        problem = assert_problem(response, 400)
        assert problem["code"] == "malformed_json", (method, path)
        assert "UTF-8" in problem["detail"]
        if path == CHAT:  # OpenAI clients read the error object
            assert problem["error"]["type"] == "malformed_json"


@pytest.mark.parametrize("depth", [100_000, 5_000, 1_000])
def test_json_nested_too_deeply_is_400(nina: httpx.Client, depth: int) -> None:
    conversation = nina.post("/api/conversations", json={}).json()["id"]
    nested = b"[" * depth + b"]" * depth
    for method, path, template in _targets(conversation):
        for body in (nested, template.replace(b'"%s"', nested)):
            response = nina.request(method, path, content=body, headers=JSON)
            problem = assert_problem(response, 400)
            assert problem["code"] == "malformed_json", (method, path)
            assert "nested too deeply" in problem["detail"]


def test_deep_but_decodable_json_is_an_ordinary_validation_problem(
    alice: httpx.Client, conversation: str
) -> None:
    # Just under the decoder's limit: decoded, then refused as the wrong type (no 500 later on).
    nested = b"[" * 500 + b"]" * 500
    for method, path, template in _targets(conversation):
        response = alice.request(
            method, path, content=template.replace(b'"%s"', nested), headers=JSON
        )
        assert_problem(response, 422)


def test_the_servers_logged_no_internal_error(live_server: LiveServer, roomy: LiveServer) -> None:
    for server in (live_server, roomy):
        log = server.log()
        for marker in ("OverflowError", "UnicodeDecodeError", "RecursionError", "Traceback"):
            assert marker not in log
