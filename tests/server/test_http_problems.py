"""Every error class is an ``application/problem+json`` response with a clear ``detail`` naming
the field where there is one, and no trace of the server's insides."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from live_support import assert_problem

CHAT = "/v1/chat/completions"
USER = [{"role": "user", "content": "hi"}]


def post_raw(client: httpx.Client, path: str, content: bytes) -> httpx.Response:
    return client.post(path, content=content, headers={"Content-Type": "application/json"})


MALFORMED = {
    "bad-key": b"{nope",
    "not-utf8": b"\xff\xfe",
    "trailing": b'{"model": "offline/echo"} x',
    "truncated": b'{"model": "offline/echo", ',
}


@pytest.mark.parametrize("content", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_json_is_400(alice: httpx.Client, content: bytes) -> None:
    for path in (CHAT, "/api/conversations"):
        assert_problem(post_raw(alice, path, content), 400)


@pytest.mark.parametrize(
    "content",
    [
        *(MALFORMED[name] for name in ("bad-key", "not-utf8", "trailing")),
        pytest.param(
            MALFORMED["truncated"],
        ),
    ],
    ids=["bad-key", "not-utf8", "trailing", "truncated"],
)
def test_malformed_json_has_its_own_code(alice: httpx.Client, content: bytes) -> None:
    body = assert_problem(post_raw(alice, CHAT, content), 400)
    assert body["code"] == "malformed_json"
    assert "JSON" in body["detail"]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"model": 3, "messages": USER}, "model"),
        ({"model": "offline/echo", "messages": "hi"}, "messages"),
        ({"model": "offline/echo", "messages": USER, "stream": "yes"}, "stream"),
        ({"model": "offline/echo", "messages": [{"role": "user", "content": 7}]}, None),
    ],
    ids=["model-int", "messages-str", "stream-str", "content-int"],
)
def test_wrong_types_are_422_naming_the_field(
    alice: httpx.Client, payload: dict[str, Any], field: str | None
) -> None:
    body = assert_problem(alice.post(CHAT, json=payload), 422)
    assert body["errors"], body
    named = body["errors"][0]["field"]
    if field is not None:
        assert named == field
    else:
        assert named.startswith("messages[0]")
    assert named in body["detail"]


def test_empty_messages_is_422_on_messages(alice: httpx.Client) -> None:
    body = assert_problem(
        alice.post(CHAT, json={"model": "offline/echo", "messages": []}), 422, field="messages"
    )
    assert "messages" in body["detail"]
    assert "empty" in body["detail"]


def test_unknown_role_is_422_on_the_role(alice: httpx.Client) -> None:
    messages = [{"role": "user", "content": "a"}, {"role": "wizard", "content": "b"}]
    body = assert_problem(
        alice.post(CHAT, json={"model": "offline/echo", "messages": messages}),
        422,
        field="messages[1].role",
    )
    assert "wizard" in body["detail"]


def test_unknown_role_detail_names_the_field(alice: httpx.Client) -> None:
    messages = [{"role": "wizard", "content": "b"}]
    body = assert_problem(
        alice.post(CHAT, json={"model": "offline/echo", "messages": messages}), 422
    )
    assert "messages[0].role" in body["detail"]


def test_unknown_model_is_404(alice: httpx.Client) -> None:
    body = assert_problem(
        alice.post(CHAT, json={"model": "acme/imaginary", "messages": USER}), 404, field="model"
    )
    assert "acme/imaginary" in body["detail"]
    assert "offline/echo" in body["detail"]  # says what is available
    streamed = alice.post(CHAT, json={"model": "acme/imaginary", "messages": USER, "stream": True})
    assert_problem(streamed, 404, field="model")


def test_native_api_validation(alice: httpx.Client) -> None:
    assert_problem(alice.post("/api/conversations", json={"title": 5}), 422, field="title")
    assert_problem(alice.post("/api/conversations", json={"titel": "typo"}), 422)
    cid = alice.post("/api/conversations", json={}).json()["id"]
    messages = f"/api/conversations/{cid}/messages"
    assert_problem(alice.post(messages, json={"content": ""}), 422, field="content")
    assert_problem(alice.post(messages, json={"content": "x", "wait": "soon"}), 422, field="wait")


@pytest.mark.parametrize(
    ("path", "payload", "field"),
    [(CHAT, {"messages": USER}, "model"), ("/api/conversations/{cid}/messages", {}, "content")],
    ids=["chat-model", "message-content"],
)
def test_missing_required_field_is_named(
    alice: httpx.Client, path: str, payload: dict[str, Any], field: str
) -> None:
    if "{cid}" in path:
        path = path.format(cid=alice.post("/api/conversations", json={}).json()["id"])
    body = assert_problem(alice.post(path, json=payload), 422)
    assert [error["field"] for error in body["errors"]] == [field]


def test_unknown_route_is_404(alice: httpx.Client, anon: httpx.Client) -> None:
    for client in (alice, anon):
        body = assert_problem(client.get("/api/no-such-thing"), 404)
        assert "/api/no-such-thing" in body["detail"]


def test_wrong_method_is_405(alice: httpx.Client) -> None:
    response = alice.put(CHAT, json={})
    body = assert_problem(response, 405)
    assert "PUT" in body["detail"]
    assert "POST" in response.headers["allow"]


def test_unknown_conversation_is_404(alice: httpx.Client) -> None:
    assert_problem(alice.get("/api/conversations/conv_0000"), 404)


def test_body_within_the_limit_is_served(alice: httpx.Client) -> None:
    content = "y" * 3000  # the server's max_body_bytes is 4096
    response = alice.post(
        CHAT, json={"model": "offline/echo", "messages": [{"role": "user", "content": content}]}
    )
    assert response.status_code == 200


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_oversize_body_is_413(alice: httpx.Client, chunked: bool) -> None:
    payload = json.dumps(
        {"model": "offline/echo", "messages": [{"role": "user", "content": "z" * 8000}]}
    ).encode()
    if chunked:
        response = alice.post(
            CHAT,
            content=iter([payload[:4000], payload[4000:]]),
            headers={"Content-Type": "application/json"},
        )
    else:
        response = post_raw(alice, CHAT, payload)
    body = assert_problem(response, 413)
    assert "4096" in body["detail"]


def test_problems_never_leak_internals(alice: httpx.Client) -> None:
    """A sample of odd requests: every answer is a problem or a success, never a 500."""
    odd = [
        (CHAT, b"null"),
        (CHAT, b"[]"),
        (CHAT, b'{"model": "offline/echo", "messages": [null]}'),
        (CHAT, b'{"model": "offline/echo", "messages": [{"role": "tool", "content": "x"}]}'),
        (
            CHAT,
            b'{"model": "offline/echo", "messages": [{"role": "user", "content": "x"}], "n": 2}',
        ),
        (
            CHAT,
            b'{"model": "offline/echo", "messages": [{"role": "user", '
            b'"content": [{"type": "image_url"}]}]}',
        ),
        ("/api/conversations", b'"just a string"'),
    ]
    for path, content in odd:
        response = post_raw(alice, path, content)
        assert response.status_code < 500, (content, response.text)
        if response.status_code >= 400:
            assert_problem(response, response.status_code)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"model": ""}, "model"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"temperature": 9}, "temperature"),
        ({"n": 2}, "n"),
    ],
)
def test_out_of_range_values_name_their_field(
    alice: httpx.Client, change: dict[str, Any], field: str
) -> None:
    body = {"model": "offline/echo", "messages": USER, **change}
    problem = assert_problem(alice.post(CHAT, json=body), 422, field=field)
    assert problem["detail"].startswith(f"{field}: ")


def test_unknown_fields_of_native_bodies_are_named(alice: httpx.Client) -> None:
    problem = assert_problem(
        alice.post("/api/conversations", json={"titel": "x"}), 422, field="titel"
    )
    assert "unknown field" in problem["detail"]
