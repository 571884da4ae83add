"""Tools: the registry over every provider, function tools, and calls that go wrong."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from hubbub import hookimpl
from hubbub.contracts import ToolContext
from hubbub.models import ToolCall
from hubbub.registry import ComponentContext, Registrar
from hubbub.runtime import Runtime
from hubbub.tools import FunctionTool, StaticToolProvider, ToolRegistry, function_tools


async def greet(name: str, excited: bool = False) -> str:
    """Greet someone."""
    return f"hello {name}{'!' if excited else ''}"


async def slow() -> str:
    await asyncio.sleep(10)
    return "late"


async def broken() -> str:
    raise RuntimeError("out of order")


async def who(context: ToolContext) -> str:
    """Says who is calling."""
    return context.principal.id if context.principal else "nobody"


def test_function_tool_schema_comes_from_the_signature() -> None:
    spec = FunctionTool(greet).spec
    assert spec.name == "greet"
    assert spec.description == "Greet someone."
    assert spec.parameters["properties"]["name"] == {"type": "string"}
    assert spec.parameters["required"] == ["name"]
    assert spec.parameters["additionalProperties"] is False


def test_only_async_functions_make_tools() -> None:
    def sync() -> str:
        return "x"

    with pytest.raises(TypeError, match="async"):
        FunctionTool(sync)  # type: ignore[arg-type]


@pytest.fixture
async def registry() -> ToolRegistry:
    registry = ToolRegistry({"t": function_tools(greet, slow, broken)}, timeout=0.2)
    await registry.start()
    return registry


@pytest.mark.parametrize(
    ("name", "arguments", "content", "is_error"),
    [
        ("greet", '{"name": "ada", "excited": true}', "hello ada!", False),
        ("greet", "{}", "invalid arguments", True),
        ("greet", '{"name": 3}', "invalid arguments", True),
        ("greet", '{"name": "ada", "extra": 1}', "invalid arguments", True),
        ("greet", "{not json", "not valid JSON", True),
        ("greet", "[1, 2]", "must be a JSON object", True),
        ("nope", "{}", "no tool named 'nope'", True),
        ("slow", "{}", "did not finish within 0.2 s", True),
        ("broken", "{}", "RuntimeError: out of order", True),
    ],
)
async def test_every_failure_is_a_result_the_model_can_read(
    registry: ToolRegistry, name: str, arguments: str, content: str, is_error: bool
) -> None:
    result = await registry.call(ToolCall(id="c1", name=name, arguments=arguments), ToolContext())
    assert (result.call_id, result.name, result.is_error) == ("c1", name, is_error)
    assert content in result.content


async def test_tools_receive_the_call_context() -> None:
    from hubbub.models import Principal

    registry = ToolRegistry({"t": function_tools(who)}, timeout=1)
    await registry.start()
    assert "context" not in registry.specs()[0].parameters["properties"]
    result = await registry.call(
        ToolCall(id="c", name="who"), ToolContext(principal=Principal(id="ada"))
    )
    assert result.content == "ada"


async def test_providers_that_add_tools_later_are_picked_up() -> None:
    provider = StaticToolProvider([])
    registry = ToolRegistry({"late": provider}, timeout=1)
    await registry.start()
    assert registry.specs() == []
    provider._tools.append(FunctionTool(greet))  # an MCP server announcing a new tool
    result = await registry.call(
        ToolCall(id="c", name="greet", arguments='{"name": "bo"}'), ToolContext()
    )
    assert result.content == "hello bo"
    assert [s.name for s in registry.specs()] == ["greet"]


class Clashing:
    __name__ = "clashing_tools"

    @hookimpl
    def register_tools(self, register: Registrar) -> None:
        async def calculator(expression: str) -> str:
            return "not the real one"

        def build(context: ComponentContext) -> StaticToolProvider:
            return function_tools(calculator)

        register("zz_clashing", build)


async def test_a_tool_name_clash_degrades_instead_of_stopping(
    make_runtime: Callable[..., Runtime],
) -> None:
    async with make_runtime("", Clashing()) as runtime:
        sources = {s.name: s.source for s in runtime.tools.specs()}
        assert sources["calculator"] == "basic"  # the first provider keeps the name
        health = await runtime.health()
    assert health.status == "degraded"
    assert health.components["tools"].status == "degraded"
    assert "'calculator' is offered by both" in health.components["tools"].detail
