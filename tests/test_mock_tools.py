"""The ``mock`` tool provider: clearly marked fake tools, deterministic, offered only when
``[tools] mock = true``, and shown as MOCK by ``hubbub plugins``."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

from support import HUBBUB

from hubbub.contracts import ToolContext
from hubbub.models import Principal, ToolCall
from hubbub.runtime import Runtime
from hubbub_plugins import mock_tools

MOCK_PREFIX = "MOCK (fake data, not a real service):"


def call(name: str, arguments: dict[str, object]) -> ToolCall:
    return ToolCall(id="m1", name=name, arguments=json.dumps(arguments))


async def test_mock_tools_are_hidden_unless_enabled(make_runtime: Callable[..., Runtime]) -> None:
    async with make_runtime() as runtime:
        names = [s.name for s in runtime.tools.specs()]
        assert not [n for n in names if n.startswith("mock.")]
        result = await runtime.tools.call(call("mock.weather", {"city": "Oslo"}), ToolContext())
        assert result.is_error
        assert result.content == "error: no tool named 'mock.weather' is available"
    async with make_runtime("[tools]\nmock = true\n") as runtime:
        specs = {s.name: s for s in runtime.tools.specs()}
        assert {"mock.weather", "mock.search"} <= set(specs)
        for name in ("mock.weather", "mock.search"):
            assert specs[name].mock
            assert specs[name].source == "mock"
            assert specs[name].description.startswith(MOCK_PREFIX)


async def test_weather_is_deterministic_and_says_it_is_fake(
    make_runtime: Callable[..., Runtime],
) -> None:
    async with make_runtime("[tools]\nmock = true\n") as runtime:
        first = await runtime.tools.call(call("mock.weather", {"city": "Oslo"}), ToolContext())
        again = await runtime.tools.call(call("mock.weather", {"city": "  oslo "}), ToolContext())
        other = await runtime.tools.call(call("mock.weather", {"city": "Lima"}), ToolContext())
        week = await runtime.tools.call(
            call("mock.weather", {"city": "Oslo", "days": 7}), ToolContext()
        )
        bad = await runtime.tools.call(
            call("mock.weather", {"city": "Oslo", "days": 30}), ToolContext()
        )
    assert not first.is_error
    assert isinstance(first.data, dict)
    assert first.data["mock"] is True
    assert first.data["city"] == "Oslo"
    assert len(first.data["days"]) == 3
    assert first.data["days"] == again.data["days"]  # type: ignore[index]
    assert first.data["days"] != other.data["days"]  # type: ignore[index]
    assert week.data["days"][:3] == first.data["days"]  # type: ignore[index]
    for day in week.data["days"]:  # type: ignore[index]
        assert day["low_c"] < day["high_c"]
        assert 0 <= day["precipitation_percent"] <= 100
    assert bad.is_error
    assert bad.content.startswith("error: invalid arguments:")


async def test_search_is_deterministic_and_points_nowhere_real(
    make_runtime: Callable[..., Runtime], principal: Principal
) -> None:
    async with make_runtime("[tools]\nmock = true\n") as runtime:
        one = await runtime.tools.call(
            call("mock.search", {"query": "Hubbub tools", "limit": 3}), ToolContext()
        )
        two = await runtime.tools.call(
            call("mock.search", {"query": "hubbub   TOOLS", "limit": 3}), ToolContext()
        )
        engine = runtime.conversations
        conversation = await engine.create(principal, model="offline/tools")
        _, reply = await engine.post_message(
            principal, conversation.id, 'call mock.search {"query": "llamas"}', wait=True
        )
    assert isinstance(one.data, dict)
    assert one.data["mock"] is True
    assert len(one.data["results"]) == 3
    assert [r["url"] for r in one.data["results"]] == [
        r["url"]
        for r in two.data["results"]  # type: ignore[index]
    ]
    assert all(r["url"].startswith("https://example.com/mock-search/") for r in one.data["results"])
    assert reply is not None
    assert "mock result" in reply.content


def test_the_provider_is_registered_as_mock_in_hubbub_plugins(tmp_path: Path) -> None:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "HUBBUB_HOME": str(tmp_path / "home"),
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    }
    out = subprocess.run(
        [HUBBUB, "plugins"], capture_output=True, text=True, env=env, timeout=60, check=True
    ).stdout
    line = next(line for line in out.splitlines() if "provides tools:mock:" in line)
    assert line.split("provides tools:mock:", 1)[1].strip().startswith("MOCK")


def test_tool_descriptions_are_marked() -> None:
    for fake in (mock_tools.weather, mock_tools.search):
        assert fake.spec.mock
        assert fake.spec.description.startswith(MOCK_PREFIX)
