"""The official ``openai`` client, through ``hubbub serve``, against a real OpenAI-compatible
upstream (``tests/openai_upstream.py``) behind both providers: the native ``openai`` provider
and litellm's ``openai/<model>`` with ``api_base`` pointing at the same upstream."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from live_support import LiveServer, running
from openai_upstream import REPLY, OpenAIUpstream, pieces

CALCULATOR = {
    "type": "function",
    "function": {
        "name": "calculator",
        "description": "Evaluate an arithmetic expression.",
        "parameters": {
            "type": "object",
            "properties": {"expression": {"type": "string"}},
            "required": ["expression"],
        },
    },
}
CALL = 'call calculator {"expression": "2+3"}'

NATIVE = {"chat": "up-gpt", "tools": "up-tools", "upstream": "native-mini"}
LITELLM = {"chat": "lite-gpt", "tools": "lite-tools", "upstream": "lite-mini"}
PROVIDERS = pytest.mark.parametrize("names", [NATIVE, LITELLM], ids=["openai", "litellm"])


def toml(url: str) -> str:
    return f"""
[llm]
providers = ["openai", "litellm", "offline"]
default_model = "up-gpt"
retries = 0

[[plugins.openai_provider.models]]
name = "up-gpt"
model = "native-mini"
api_base = "{url}"
api_key = "sk-upstream"

[[plugins.openai_provider.models]]
name = "up-tools"
model = "native-tools"
api_base = "{url}"
api_key = "sk-upstream"

[[plugins.litellm_provider.models]]
name = "lite-gpt"
model = "openai/lite-mini"
api_base = "{url}"
api_key = "sk-upstream"
options = {{ max_retries = 0 }}

[[plugins.litellm_provider.models]]
name = "lite-tools"
model = "openai/lite-tools"
api_base = "{url}"
api_key = "sk-upstream"
options = {{ max_retries = 0 }}
"""


@pytest.fixture(scope="module")
def upstream() -> Iterator[OpenAIUpstream]:
    with OpenAIUpstream(api_key="sk-upstream") as upstream:
        yield upstream


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, upstream: OpenAIUpstream
) -> Iterator[LiveServer]:
    root: Path = tmp_path_factory.mktemp("openai-provider")
    with running(root, toml(upstream.url), keys=("alice",)) as server:
        yield server


@pytest.fixture
def client(server: LiveServer) -> Iterator[openai.OpenAI]:
    key = server.keys["alice"][1]
    with openai.OpenAI(
        base_url=f"{server.url}/v1", api_key=key, max_retries=0, timeout=20
    ) as client:
        yield client


def seen_by_upstream(upstream: OpenAIUpstream, model: str) -> list[dict]:
    return [r.body for r in upstream.chat_requests() if r.body.get("model") == model]


@PROVIDERS
def test_a_completion_comes_from_the_upstream(
    client: openai.OpenAI, upstream: OpenAIUpstream, names: dict[str, str]
) -> None:
    before = len(seen_by_upstream(upstream, names["upstream"]))
    completion = client.chat.completions.create(
        model=names["chat"],
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "one two three"},
        ],
    )
    assert completion.model == names["chat"]
    (choice,) = completion.choices
    assert choice.message.content == REPLY
    assert choice.finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 5  # the upstream's count: words of the messages
    assert completion.usage.completion_tokens == len(pieces(REPLY))
    sent = seen_by_upstream(upstream, names["upstream"])[before:]
    assert len(sent) == 1
    assert sent[0]["messages"][-1] == {"role": "user", "content": "one two three"}


@PROVIDERS
def test_a_stream_comes_from_the_upstream_with_usage(
    client: openai.OpenAI, names: dict[str, str]
) -> None:
    stream = client.chat.completions.create(
        model=names["chat"],
        messages=[{"role": "user", "content": "one two three"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == REPLY
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop"
    usage = chunks[-1].usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (3, len(pieces(REPLY)))


@PROVIDERS
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_tool_calls_reach_the_client(
    client: openai.OpenAI, names: dict[str, str], stream: bool
) -> None:
    messages = [{"role": "user", "content": CALL}]
    if stream:
        chunks = list(
            client.chat.completions.create(
                model=names["tools"], messages=messages, tools=[CALCULATOR], stream=True
            )
        )
        calls = [
            call for c in chunks if c.choices for call in (c.choices[0].delta.tool_calls or [])
        ]
        name = "".join(c.function.name or "" for c in calls if c.function)
        arguments = "".join(c.function.arguments or "" for c in calls if c.function)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices][-1]
    else:
        completion = client.chat.completions.create(
            model=names["tools"], messages=messages, tools=[CALCULATOR]
        )
        (call,) = completion.choices[0].message.tool_calls or []
        name, arguments = call.function.name, call.function.arguments
        finish = completion.choices[0].finish_reason
    assert name == "calculator"
    assert arguments == '{"expression": "2+3"}'
    assert finish == "tool_calls"


@PROVIDERS
def test_an_upstream_failure_before_the_first_chunk_is_an_error_not_a_broken_stream(
    client: openai.OpenAI, upstream: OpenAIUpstream, names: dict[str, str]
) -> None:
    upstream.script("status:404", model=names["upstream"])
    with pytest.raises(openai.APIStatusError) as caught:
        list(
            client.chat.completions.create(
                model=names["chat"], messages=[{"role": "user", "content": "hi"}], stream=True
            )
        )
    assert caught.value.status_code == 502
    assert "sk-upstream" not in str(caught.value.body)


def test_a_rate_limited_upstream_is_a_429(client: openai.OpenAI, upstream: OpenAIUpstream) -> None:
    upstream.script("status:429:retry_after=1", model=NATIVE["upstream"])
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(
            model=NATIVE["chat"], messages=[{"role": "user", "content": "hi"}]
        )
    assert caught.value.status_code == 429


def test_a_context_overflow_is_a_400_that_says_so(
    client: openai.OpenAI, upstream: OpenAIUpstream
) -> None:
    upstream.script("context_overflow", model=NATIVE["upstream"])
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model=NATIVE["chat"], messages=[{"role": "user", "content": "hi"}]
        )
    assert "context" in str(caught.value)


@PROVIDERS
def test_a_client_leaving_a_stream_stops_the_upstream_request(
    client: openai.OpenAI, upstream: OpenAIUpstream, names: dict[str, str]
) -> None:
    upstream.script("slow:200", model=names["upstream"])  # ~3 s for the whole reply
    stream = client.chat.completions.create(
        model=names["chat"], messages=[{"role": "user", "content": "slowly"}], stream=True
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            break
    left = time.monotonic()
    stream.close()
    slow = [r for r in upstream.chat_requests() if r.behaviour == "slow:200"]
    upstream.wait_until(lambda: slow[-1].disconnected_at is not None, timeout=5)
    assert slow[-1].completed_at is None
    assert slow[-1].disconnected_at is not None
    assert slow[-1].disconnected_at - left < 1.0  # the bound: within a second


@PROVIDERS
def test_hubbub_tools_reach_the_upstream_under_names_it_accepts(
    server: LiveServer, upstream: OpenAIUpstream, names: dict[str, str]
) -> None:
    """OpenAI allows no '.' in a function's name: ``basic.calculator`` is offered as
    ``basic__calculator``, and the call the model makes under that name runs the real tool."""
    upstream_model = "native-tools" if names is NATIVE else "lite-tools"
    before = len(seen_by_upstream(upstream, upstream_model))
    with server.client(server.keys["alice"][1]) as alice:
        cid = alice.post("/api/conversations", json={"model": names["tools"]}).json()["id"]
        sent = alice.post(
            f"/api/conversations/{cid}/messages",
            json={"content": 'call basic__calculator {"expression": "2+3"}', "wait": True},
        )
        assert sent.status_code == 200, sent.text
        assert sent.json()["reply"]["content"] == "The tool answered: 5"
        stored = alice.get(f"/api/conversations/{cid}/messages").json()["items"]
    assert stored[1]["tool_calls"][0]["name"] == "basic.calculator"  # hubbub's own name
    first, second = seen_by_upstream(upstream, upstream_model)[before:]
    offered = [tool["function"]["name"] for tool in first["tools"]]
    assert "basic__calculator" in offered
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name) for name in offered), offered
    assert second["messages"][1]["tool_calls"][0]["function"]["name"] == "basic__calculator"
