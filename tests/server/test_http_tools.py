"""Tools over real HTTP: a tool reply's events and stored messages, keys restricted to tools,
conversations with their own tools, and keys made from restricted keys."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from live_support import LiveServer, assert_problem, read_events, running

TOML = """
[llm]
default_model = "offline/tools"

[tools]
deny = ["web.*"]
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root: Path = tmp_path_factory.mktemp("tools")
    with running(root, TOML, keys=("alice",)) as server:
        done = server.hubbub(
            "keys", "create", "--user", "bob", "--tool", "basic.current_time", "--tool", "x.*"
        )
        assert done.returncode == 0, done.stderr
        server.keys["bob"] = ("", done.stdout.strip().splitlines()[-1])
        yield server


@pytest.fixture
def alice(server: LiveServer) -> Iterator[httpx.Client]:
    with server.client(server.keys["alice"][1]) as client:
        yield client


@pytest.fixture
def bob(server: LiveServer) -> Iterator[httpx.Client]:
    with server.client(server.keys["bob"][1]) as client:
        yield client


def tool_names(client: httpx.Client) -> list[str]:
    response = client.get("/api/tools")
    assert response.status_code == 200, response.text
    return [tool["name"] for tool in response.json()["tools"]]


def ask(client: httpx.Client, content: str, **conversation: Any) -> tuple[str, dict]:
    created = client.post("/api/conversations", json=conversation)
    assert created.status_code == 201, created.text
    cid = created.json()["id"]
    sent = client.post(
        f"/api/conversations/{cid}/messages", json={"content": content, "wait": True}
    )
    assert sent.status_code == 200, sent.text
    return cid, sent.json()["reply"]


def test_a_tool_reply_streams_its_tool_events_and_stores_the_result(
    server: LiveServer, alice: httpx.Client
) -> None:
    cid = alice.post("/api/conversations", json={}).json()["id"]
    with (
        server.client(server.keys["alice"][1], timeout=httpx.Timeout(10, read=5)) as listener,
        listener.stream("GET", f"/api/conversations/{cid}/events") as events,
    ):
        sent = alice.post(
            f"/api/conversations/{cid}/messages",
            json={"content": 'call basic.calculator {"expression": "6 * 7"}'},
        )
        assert sent.status_code == 202, sent.text
        frames = read_events(
            events,
            lambda f: f["event"] == "message.completed" and not f["message"].get("tool_calls"),
        )
    kinds = [f["event"] for f in frames]
    assert kinds.index("tool.started") < kinds.index("tool.finished")
    started = next(f for f in frames if f["event"] == "tool.started")
    finished = next(f for f in frames if f["event"] == "tool.finished")
    assert started["call"]["name"] == "basic.calculator"
    assert json.loads(started["call"]["arguments"]) == {"expression": "6 * 7"}
    assert finished["result"] == {
        "call_id": started["call"]["id"],
        "name": "basic.calculator",
        "content": "42",
    }
    assert (finished["summary"], finished.get("error")) == ("42", None)
    assert finished["duration_ms"] >= 0
    assert "42" in frames[-1]["message"]["content"]
    stored = alice.get(f"/api/conversations/{cid}/messages").json()["items"]
    assert [m["role"] for m in stored] == ["user", "assistant", "tool", "assistant"]
    assert stored[2]["content"] == "42"


def test_a_failing_tool_is_an_error_event_and_the_reply_goes_on(alice: httpx.Client) -> None:
    _, reply = ask(alice, 'call basic.calculator {"expression": "1/0"}')
    assert "error: division by zero" in reply["content"]


def test_tools_are_listed_per_caller(alice: httpx.Client, bob: httpx.Client) -> None:
    assert tool_names(alice) == ["basic.calculator", "basic.convert_time", "basic.current_time"]
    assert tool_names(bob) == ["basic.current_time"]  # the key's own filter


def test_a_key_restricted_to_tools_cannot_use_others(bob: httpx.Client) -> None:
    _, reply = ask(bob, 'call basic.calculator {"expression": "1+1"}')
    # the model was never offered the calculator; asked for it anyway, it was refused
    assert "No tool named 'basic.calculator' is available" in reply["content"]
    _, reply = ask(bob, 'call basic.current_time {"timezone": "UTC"}')
    assert re.search(r"returned: \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", reply["content"])


def test_a_conversation_s_tools_narrow_and_can_change(alice: httpx.Client) -> None:
    cid, reply = ask(alice, 'call basic.calculator {"expression": "2+2"}', tools=["basic.*_time"])
    # basic.calculator does not match: never offered, and refused when asked for anyway
    assert "No tool named 'basic.calculator' is available" in reply["content"]
    conversation = alice.get(f"/api/conversations/{cid}").json()
    assert conversation["tools"] == ["basic.*_time"]
    patched = alice.patch(f"/api/conversations/{cid}", json={"tools": ["*"]})
    assert patched.status_code == 200, patched.text
    sent = alice.post(
        f"/api/conversations/{cid}/messages",
        json={"content": 'call basic.calculator {"expression": "2+2"}', "wait": True},
    )
    assert "returned: 4" in sent.json()["reply"]["content"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"tools": ["bad name"]}, "tools[0]"),
        ({"tools": "basic.*"}, "tools"),
        ({"tools": ["x"] * 33}, "tools"),
    ],
)
def test_invalid_conversation_tools_are_refused_naming_the_field(
    alice: httpx.Client, body: dict[str, Any], field: str
) -> None:
    assert_problem(alice.post("/api/conversations", json=body), 422, field=field)


def test_keys_made_from_a_restricted_key_stay_within_its_tools(
    server: LiveServer, bob: httpx.Client
) -> None:
    inherited = bob.post("/api/keys", json={"name": "same"})
    assert inherited.status_code == 201, inherited.text
    assert inherited.json()["tools"] == ["basic.current_time", "x.*"]
    narrower = bob.post("/api/keys", json={"name": "one", "tools": ["x.y"]})
    assert narrower.status_code == 201, narrower.text
    assert narrower.json()["tools"] == ["x.y"]
    wider = bob.post("/api/keys", json={"name": "more", "tools": ["basic.*"]})
    assert_problem(wider, 403)
    none = bob.post("/api/keys", json={"name": "none", "tools": []})
    assert_problem(none, 422, field="tools")
    with server.client(inherited.json()["key"]) as same:
        assert tool_names(same) == ["basic.current_time"]


def test_denied_tools_are_neither_listed_nor_run(alice: httpx.Client) -> None:
    assert "web.fetch" not in tool_names(alice)
    _, reply = ask(alice, 'call web.fetch {"url": "https://example.com/"}')
    assert "No tool named 'web.fetch' is available" in reply["content"]
