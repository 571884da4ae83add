"""The server does what its documents say, over real HTTP: the OpenAPI document is honest
(security, unknown fields, roles, ``OPTIONS``), the API docs page works offline, deleting a
conversation mid-reply ends the reply and the conversation's stream, the offline models honour
``max_tokens``, ``stop`` and ``tool_choice``, ``reset`` is stamped like every event,
and ``GET /v1/models/{id}`` works with the official ``openai`` client."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from httpx_sse import ServerSentEvent, connect_sse
from live_support import LiveServer, assert_problem, running

CALCULATOR = {
    "type": "function",
    "function": {
        "name": "calculator",
        "description": "Evaluate an arithmetic expression.",
        "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}},
    },
}
CLOCK = {
    "type": "function",
    "function": {"name": "clock", "description": "The time.", "parameters": {"type": "object"}},
}
ECHO_PREFIX = "[offline echo] You said: "
METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


@pytest.fixture(scope="module")
def schema(live_server: LiveServer) -> dict[str, Any]:
    with live_server.client() as anon:
        response = anon.get("/schema/openapi.json")
    assert response.status_code == 200
    return dict(response.json())


def operations(schema: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield path, method, operation


def concrete(path: str) -> str:
    """A schema path with its parameters filled in."""
    return re.sub(r"\{[^}]+\}", "x", path)


# -- the OpenAPI document ---------------------------------------------------------------------


def test_the_document_declares_bearer_security_exactly_where_it_is_required(
    live_server: LiveServer, schema: dict[str, Any]
) -> None:
    scheme = schema["components"]["securitySchemes"]["bearer"]
    assert scheme["type"] == "http"
    assert scheme["scheme"] == "bearer"
    checked = 0
    with live_server.client(timeout=httpx.Timeout(5, read=2)) as anon:
        for path, method, operation in operations(schema):
            declared = operation.get("security") == [{"bearer": []}]
            body = {} if method in ("post", "patch", "put") else None
            response = anon.request(method.upper(), concrete(path), json=body)
            required = response.status_code == 401
            assert declared == required, (method, path, response.status_code, operation)
            checked += 1
    assert checked >= 12


def test_request_bodies_that_refuse_unknown_fields_say_so(
    schema: dict[str, Any], alice: httpx.Client
) -> None:
    def body_schema(path: str, method: str) -> dict[str, Any]:
        content = schema["paths"][path][method]["requestBody"]["content"]["application/json"]
        reference = content["schema"]["$ref"].rsplit("/", 1)[1]
        return dict(schema["components"]["schemas"][reference])

    strict = [
        ("/api/conversations", "post"),
        ("/api/conversations/{conversation_id}", "patch"),
        ("/api/conversations/{conversation_id}/messages", "post"),
    ]
    for path, method in strict:
        assert body_schema(path, method).get("additionalProperties") is False, (method, path)
    # ... which is what the server does:
    assert_problem(alice.post("/api/conversations", json={"colour": "red"}), 422, field="colour")
    # The OpenAI route accepts (and ignores) fields it does not use, and says nothing else.
    chat = body_schema("/v1/chat/completions", "post")
    assert "additionalProperties" not in chat
    response = alice.post(
        "/v1/chat/completions",
        json={"model": "offline/echo", "messages": [{"role": "user", "content": "x"}], "seed": 7},
    )
    assert response.status_code == 200, response.text


def test_roles_and_tool_choice_are_enumerated(schema: dict[str, Any]) -> None:
    schemas = schema["components"]["schemas"]
    message = next(v for k, v in schemas.items() if k.endswith("WireMessage"))
    assert message["properties"]["role"]["enum"] == [
        "system",
        "developer",
        "user",
        "assistant",
        "tool",
    ]
    chat = next(v for k, v in schemas.items() if k.endswith("ChatCompletionRequest"))
    choices = json.dumps(chat["properties"]["tool_choice"])
    for value in ("none", "auto", "required"):
        assert f'"{value}"' in choices


def test_options_lists_every_method_of_a_path(
    live_server: LiveServer, schema: dict[str, Any]
) -> None:
    with live_server.client() as anon:
        for path, item in schema["paths"].items():
            methods = {m.upper() for m in item if m in METHODS} | {"OPTIONS"}
            response = anon.options(concrete(path))
            assert response.status_code == 204, (path, response.text)
            allowed = {m.strip() for m in response.headers["allow"].split(",")}
            assert allowed == methods, path


def test_an_empty_model_is_refused_naming_the_field(alice: httpx.Client) -> None:
    assert_problem(alice.post("/api/conversations", json={"model": ""}), 422, field="model")
    cid = alice.post("/api/conversations", json={}).json()["id"]
    assert_problem(alice.patch(f"/api/conversations/{cid}", json={"model": ""}), 422, field="model")
    sent = alice.post(f"/api/conversations/{cid}/messages", json={"content": "x", "model": ""})
    assert_problem(sent, 422, field="model")
    assert alice.get(f"/api/conversations/{cid}/messages").json()["items"] == []


# -- the API docs page works offline --------------------------------------------------------


@pytest.mark.parametrize("page", ["/schema", "/schema/swagger"])
def test_the_docs_page_loads_everything_from_this_server(
    live_server: LiveServer, page: str
) -> None:
    with live_server.client() as anon:
        response = anon.get(page)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/html")
        html = response.text
        assert "SwaggerUIBundle" in html
        urls = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html)
        assert len(urls) >= 3  # the script, the preset, the style
        for url in urls:
            assert url.startswith("/"), url
            assert not url.startswith("//"), url
            asset = anon.get(url)
            assert asset.status_code == 200, url
            assert len(asset.content) > 100, url
        assert not re.search(r"https?://", html), re.findall(r"https?://[^\s'\"]+", html)
        # Only the assets the page uses are served; nothing else of the package.
        assert anon.get("/schema/assets/index.html").status_code == 404


# -- deleting a conversation while its reply is written ---------------------------------------

SLOW_TOML = """\
[plugins.offline_provider]
token_delay = 0.02
"""
LONG = " ".join(["word"] * 300)  # about 6 s of streaming at 0.02 s a word


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root: Path = tmp_path_factory.mktemp("slow")
    with running(root, SLOW_TOML, keys=("alice",)) as server:
        yield server


def test_deleting_mid_reply_ends_the_reply_and_the_conversation_stream(
    slow_server: LiveServer,
) -> None:
    key = slow_server.keys["alice"][1]
    seen: list[ServerSentEvent] = []
    with (
        slow_server.client(key) as alice,
        slow_server.client(key, timeout=httpx.Timeout(10, read=8)) as listener,
    ):
        cid = alice.post("/api/conversations", json={"title": "doomed"}).json()["id"]
        path = f"/api/conversations/{cid}/events"
        with connect_sse(listener, "GET", path) as source:
            sent = alice.post(f"/api/conversations/{cid}/messages", json={"content": LONG})
            assert sent.status_code == 202, sent.text
            events = source.iter_sse()
            for event in events:
                seen.append(event)
                if event.event == "message.delta":
                    break
            assert alice.delete(f"/api/conversations/{cid}").status_code == 204
            deadline = time.monotonic() + 8
            try:
                for event in events:  # ends when the server ends the stream
                    seen.append(event)
                    assert time.monotonic() < deadline, "the stream did not end"
            except httpx.ReadTimeout:
                pytest.fail(f"the stream did not end after the deletion: {seen[-5:]}")
        assert_problem(alice.get(f"/api/conversations/{cid}"), 404)
    named = [
        (e.event, json.loads(e.data).get("code") or json.loads(e.data).get("change"))
        for e in seen
        if e.event not in ("message.delta", "usage", "")
    ]
    after = named[named.index(("message.created", None), 1) + 1 :]  # after the reply began
    assert after == [
        ("error", "conversation_deleted"),
        ("typing", None),
        ("status", None),
        ("conversation.updated", "deleted"),
    ]
    assert seen[-1].event == "conversation.updated"
    assert "message.completed" not in [e.event for e in seen]
    time.sleep(0.3)
    log = slow_server.log()
    assert "Traceback" not in log
    assert "reply failed" not in log
    assert "background task" not in log


def test_a_request_waiting_for_the_reply_gets_404_when_the_conversation_is_deleted(
    slow_server: LiveServer,
) -> None:
    key = slow_server.keys["alice"][1]
    answers: list[httpx.Response] = []
    with slow_server.client(key) as alice:
        cid = alice.post("/api/conversations", json={}).json()["id"]

        def wait_for_reply() -> None:
            with slow_server.client(key, timeout=20) as waiter:
                answers.append(
                    waiter.post(
                        f"/api/conversations/{cid}/messages", json={"content": LONG, "wait": True}
                    )
                )

        waiting = threading.Thread(target=wait_for_reply)
        waiting.start()
        deadline = time.monotonic() + 10
        while len(alice.get(f"/api/conversations/{cid}/messages").json()["items"]) < 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.2)  # the reply is streaming now
        assert alice.delete(f"/api/conversations/{cid}").status_code == 204
        waiting.join(15)
    (answer,) = answers
    body = assert_problem(answer, 404)
    assert "deleted" in body["detail"]


# -- reset is an event like the others ----------------------------------------------------------


def test_reset_has_id_ts_and_conversation_id(
    live_server: LiveServer, alice_key: str, alice: httpx.Client
) -> None:
    cid = alice.post("/api/conversations", json={"title": "resume"}).json()["id"]
    # Something happened first, so the reset names an event the server remembers.
    alice.post(f"/api/conversations/{cid}/messages", json={"content": "hi", "wait": True})
    with (
        live_server.client(alice_key, timeout=httpx.Timeout(10, read=5)) as listener,
        connect_sse(
            listener,
            "GET",
            f"/api/conversations/{cid}/events",
            headers={"Last-Event-ID": "1-1"},
        ) as source,
    ):
        first = next(source.iter_sse())
    data = json.loads(first.data)
    assert first.event == "reset"
    assert data["last_event_id"] == "1-1"
    assert data["id"] == first.id
    assert re.fullmatch(r"\d+-\d+", data["id"])
    assert data["ts"] > time.time() - 60
    assert data["conversation_id"] == cid
    assert data["owner"]
    # Resuming from that id misses nothing: the stream carries on without a second reset.
    with (
        live_server.client(alice_key, timeout=httpx.Timeout(10, read=1)) as listener,
        connect_sse(
            listener,
            "GET",
            f"/api/conversations/{cid}/events",
            headers={"Last-Event-ID": first.id},
        ) as source,
    ):
        alice.post(f"/api/conversations/{cid}/messages", json={"content": "again", "wait": True})
        resumed = next(source.iter_sse())
    assert resumed.event not in ("error", "reset")


# -- the offline models honour the OpenAI request fields ---------------------------------------


@pytest.fixture
def client(live_server: LiveServer, alice_key: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=f"{live_server.url}/v1", api_key=alice_key, max_retries=0, timeout=15
    ) as client:
        yield client


def test_models_retrieve_with_the_openai_client(client: openai.OpenAI) -> None:
    for model_id in ("offline/echo", "offline/tools"):
        model = client.models.retrieve(model_id)
        assert model.id == model_id
        assert model.object == "model"
        assert model.owned_by == "offline"
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("offline/nonesuch")
    assert caught.value.code == "model_not_found"
    assert "offline/nonesuch" in str(caught.value)


def test_max_tokens_cuts_the_reply_with_finish_reason_length(client: openai.OpenAI) -> None:
    messages: Any = [{"role": "user", "content": "one two three four five"}]
    # tokens (cl100k_base): "[", "offline", " echo", "]", " You", " said", ":", " one"...
    cut = client.chat.completions.create(model="offline/echo", messages=messages, max_tokens=7)
    assert cut.choices[0].message.content == "[offline echo] You said:"
    assert cut.choices[0].finish_reason == "length"
    assert cut.usage is not None
    assert cut.usage.completion_tokens == 7
    stream = client.chat.completions.create(
        model="offline/echo", messages=messages, max_completion_tokens=8, stream=True
    )
    chunks = [chunk for chunk in stream if chunk.choices]
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == ECHO_PREFIX + "one"
    assert chunks[-1].choices[0].finish_reason == "length"
    whole = client.chat.completions.create(model="offline/echo", messages=messages, max_tokens=50)
    assert whole.choices[0].finish_reason == "stop"
    assert whole.choices[0].message.content == ECHO_PREFIX + "one two three four five"


def test_stop_sequences_cut_the_reply_before_them(client: openai.OpenAI) -> None:
    messages: Any = [{"role": "user", "content": "red green. blue"}]
    cut = client.chat.completions.create(model="offline/echo", messages=messages, stop=[".", "x"])
    assert cut.choices[0].message.content == ECHO_PREFIX + "red green"
    assert cut.choices[0].finish_reason == "stop"
    stream = client.chat.completions.create(
        model="offline/echo", messages=messages, stop="green", stream=True
    )
    chunks = [chunk for chunk in stream if chunk.choices]
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == ECHO_PREFIX + "red "
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_tool_choice_required_makes_offline_tools_call_a_tool(client: openai.OpenAI) -> None:
    messages: Any = [{"role": "user", "content": "what is two and three?"}]
    tools: Any = [CALCULATOR, CLOCK]
    auto = client.chat.completions.create(model="offline/tools", messages=messages, tools=tools)
    assert auto.choices[0].finish_reason == "stop"  # no `call ...`: it answers in words
    forced = client.chat.completions.create(
        model="offline/tools", messages=messages, tools=tools, tool_choice="required"
    )
    assert forced.choices[0].finish_reason == "tool_calls"
    (call,) = forced.choices[0].message.tool_calls or []
    assert call.function.name == "calculator"  # the first tool offered
    assert json.loads(call.function.arguments) == {}
    named = client.chat.completions.create(
        model="offline/tools",
        messages=[{"role": "user", "content": 'call calculator {"expression": "2+3"}'}],
        tools=tools,
        tool_choice={"type": "function", "function": {"name": "clock"}},
    )
    (call,) = named.choices[0].message.tool_calls or []
    assert call.function.name == "clock"
    asked = client.chat.completions.create(
        model="offline/tools",
        messages=[{"role": "user", "content": 'call clock {"zone": "UTC"}'}],
        tools=tools,
        tool_choice="required",
    )
    (call,) = asked.choices[0].message.tool_calls or []
    assert (call.function.name, json.loads(call.function.arguments)) == ("clock", {"zone": "UTC"})


def test_impossible_tool_choices_are_refused_naming_the_field(client: openai.OpenAI) -> None:
    messages: Any = [{"role": "user", "content": "hi"}]
    cases: list[dict[str, Any]] = [
        {"model": "offline/echo", "tools": [CALCULATOR], "tool_choice": "required"},
        {"model": "offline/tools", "tool_choice": "required"},
        {
            "model": "offline/tools",
            "tools": [CALCULATOR],
            "tool_choice": {"type": "function", "function": {"name": "clock"}},
        },
        {"model": "offline/tools", "tools": [CALCULATOR], "tool_choice": "always"},
    ]
    for case in cases:
        with pytest.raises(openai.UnprocessableEntityError) as caught:
            client.chat.completions.create(messages=messages, **case)
        assert caught.value.param == "tool_choice", case
