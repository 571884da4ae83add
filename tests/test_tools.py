"""Tools: the registry over every provider, typed function tools, names and namespaces, limits,
permissions, and calls that go wrong."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Annotated, Any

import msgspec
import pytest

from hubbub import hookimpl
from hubbub.config import ToolFilter, ToolRule, ToolsConfig
from hubbub.contracts import ToolContext
from hubbub.errors import ToolError
from hubbub.models import Conversation, Health, Principal, ToolCall, ToolResult, ToolSpec
from hubbub.registry import ComponentContext, Registrar
from hubbub.runtime import Runtime
from hubbub.testing import principal
from hubbub.tools import (
    FunctionTool,
    StaticToolProvider,
    ToolRegistry,
    WireNames,
    function_tools,
    tool,
)
from hubbub.tools.validation import SchemaValidator


async def greet(name: str, excited: bool = False) -> str:
    """Greet someone."""
    return f"hello {name}{'!' if excited else ''}"


async def slow() -> str:
    await asyncio.sleep(10)
    return "late"


async def broken() -> str:
    raise RuntimeError("out of order")


async def refusing() -> str:
    raise ToolError("the record is locked")


async def who(context: ToolContext) -> str:
    """Says who is calling."""
    return context.principal.id if context.principal else "nobody"


class Point(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    x: float
    y: float = 0.0


class Distance(msgspec.Struct):
    value: float
    unit: str


async def distance(point: Point) -> Distance:
    """How far a point is from the origin."""
    return Distance(value=(point.x**2 + point.y**2) ** 0.5, unit="m")


def registry_of(*tools: Any, config: ToolsConfig | None = None, name: str = "t") -> ToolRegistry:
    return ToolRegistry(
        {name: function_tools(*tools)}, config=config or ToolsConfig(call_timeout=0.2)
    )


def call(name: str, arguments: str = "{}", call_id: str = "c1") -> ToolCall:
    return ToolCall(id=call_id, name=name, arguments=arguments)


def test_function_tool_schema_comes_from_the_signature() -> None:
    spec = FunctionTool(greet).spec
    assert spec.name == "greet"
    assert spec.description == "Greet someone."
    assert spec.parameters["properties"]["name"] == {"type": "string"}
    assert spec.parameters["required"] == ["name"]
    assert spec.parameters["additionalProperties"] is False
    assert spec.output_schema is None  # a str result has no schema worth sending


def test_a_struct_argument_is_the_arguments_and_the_result_type_the_output_schema() -> None:
    spec = FunctionTool(distance).spec
    assert spec.parameters["type"] == "object"
    assert spec.parameters["properties"]["x"] == {"type": "number"}
    assert spec.parameters["required"] == ["x"]
    assert "$ref" not in spec.parameters
    assert spec.output_schema is not None
    assert spec.output_schema["properties"]["unit"] == {"type": "string"}


def test_the_tool_decorator_sets_limits_and_permissions() -> None:
    @tool(name="add", timeout=3, concurrency=2, roles=["admin"], scopes=["math"])
    async def anything(a: int, b: int) -> int:
        """Add."""
        return a + b

    spec = anything.spec
    assert (spec.name, spec.timeout, spec.concurrency) == ("add", 3, 2)
    assert (spec.roles, spec.scopes) == (["admin"], ["math"])
    assert spec.output_schema == {"type": "integer"}
    assert tool(greet).spec.name == "greet"


def test_only_async_functions_make_tools() -> None:
    def sync() -> str:
        return "x"

    with pytest.raises(TypeError, match="async"):
        FunctionTool(sync)  # type: ignore[arg-type]


@pytest.fixture
async def registry() -> ToolRegistry:
    registry = registry_of(greet, slow, broken, refusing, distance)
    await registry.start()
    return registry


@pytest.mark.parametrize(
    ("name", "arguments", "content", "is_error"),
    [
        ("t.greet", '{"name": "ada", "excited": true}', "hello ada!", False),
        ("t.greet", "{}", "invalid arguments: missing argument 'name'", True),
        ("t.greet", '{"name": 3}', "invalid arguments: name: expected 'str', got 'int'", True),
        ("t.greet", '{"name": "ada", "extra": 1}', "unknown argument 'extra'", True),
        ("t.greet", "{not json", "not valid JSON", True),
        ("t.greet", "[1, 2]", "must be a JSON object", True),
        ("t.greet", "[" * 5000 + "]" * 5000, "error:", True),
        ("t.nope", "{}", "no tool named 't.nope' is available", True),
        ("greet", "{}", "no tool named 'greet' is available", True),  # names are namespaced
        ("t.slow", "{}", "did not finish within 0.2 s", True),
        ("t.broken", "{}", "RuntimeError: out of order", True),
        ("t.refusing", "{}", "error: the record is locked", True),
        ("t.distance", '{"x": 3, "y": 4}', '{"value":5.0,"unit":"m"}', False),
        ("t.distance", '{"x": "far"}', "x: expected 'float', got 'str'", True),
    ],
)
async def test_every_failure_is_a_result_the_model_can_read(
    registry: ToolRegistry, name: str, arguments: str, content: str, is_error: bool
) -> None:
    result = await registry.call(call(name, arguments), ToolContext())
    assert (result.call_id, result.name, result.is_error) == ("c1", name, is_error)
    assert content in result.content


async def test_a_typed_result_is_json_for_the_model_and_data_for_clients(
    registry: ToolRegistry,
) -> None:
    result = await registry.call(call("t.distance", '{"x": 6, "y": 8}'), ToolContext())
    assert result.data == {"value": 10.0, "unit": "m"}


async def test_tools_receive_the_call_context() -> None:
    registry = registry_of(who)
    await registry.start()
    assert "context" not in registry.specs()[0].parameters["properties"]
    result = await registry.call(call("t.who"), ToolContext(principal=Principal(id="ada")))
    assert result.content == "ada"


async def test_providers_that_add_tools_later_are_picked_up() -> None:
    provider = StaticToolProvider([])
    registry = ToolRegistry({"late": provider})
    await registry.start()
    assert registry.specs() == []
    provider._tools.append(FunctionTool(greet))  # an MCP server announcing a new tool
    result = await registry.call(call("late.greet", '{"name": "bo"}'), ToolContext())
    assert result.content == "hello bo"
    assert [(s.name, s.source) for s in registry.specs()] == [("late.greet", "late")]


class Handmade:
    """A tool with a JSON Schema and no type (as MCP servers' tools are)."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.spec = ToolSpec(
            name="srv.lookup",
            parameters={
                "type": "object",
                "properties": {
                    "id": {"type": "integer", "minimum": 1},
                    "tags": {"type": "array", "items": {"type": "string"}},
                },
                "required": ["id"],
                "additionalProperties": False,
            },
        )

    async def call(self, arguments: dict[str, Any], context: ToolContext) -> ToolResult:
        self.calls.append(arguments)
        return ToolResult(call_id="", name="", content=f"record {arguments['id']}")


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        ("{}", "'id' is a required property"),
        ('{"id": 0}', "0 is less than the minimum of 1"),
        ('{"id": 1, "tags": ["a", 2]}', "tags.1: 2 is not of type 'string'"),
        ('{"id": 1, "other": true}', "Additional properties are not allowed"),
    ],
)
async def test_schema_tools_get_only_valid_arguments(arguments: str, problem: str) -> None:
    handmade = Handmade()
    registry = ToolRegistry({"mcp": StaticToolProvider([handmade])})
    await registry.start()
    assert [s.name for s in registry.specs()] == ["srv.lookup"]  # its own namespace
    result = await registry.call(call("srv.lookup", arguments), ToolContext())
    assert result.is_error
    assert problem in result.content
    assert handmade.calls == []
    ok = await registry.call(call("srv.lookup", '{"id": 7}'), ToolContext())
    assert (ok.is_error, ok.content, handmade.calls) == (False, "record 7", [{"id": 7}])


async def test_an_invalid_schema_is_reported_and_checks_only_the_object() -> None:
    handmade = Handmade()
    handmade.spec = ToolSpec(name="srv.lookup", parameters={"type": "object", "minimum": "x"})
    registry = ToolRegistry({"mcp": StaticToolProvider([handmade])})
    await registry.start()
    result = await registry.call(call("srv.lookup", '{"id": 2}'), ToolContext())
    assert result.content == "record 2"


async def test_a_huge_result_is_cut_and_says_so() -> None:
    async def flood() -> str:
        return "x" * 1_500_000

    registry = registry_of(flood)
    result = await registry.call(call("t.flood"), ToolContext())
    assert len(result.content) < 1_100_000
    assert result.content.endswith("[500000 more characters cut]")


# -- limits -----------------------------------------------------------------------------


async def test_a_tool_runs_at_most_its_concurrency_and_waits_within_its_timeout() -> None:
    running = 0
    most = 0
    release = asyncio.Event()

    @tool(concurrency=2)
    async def busy() -> str:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await release.wait()
        running -= 1
        return "done"

    registry = registry_of(busy, config=ToolsConfig(call_timeout=5))
    tasks = [
        asyncio.ensure_future(registry.call(call("t.busy", call_id=f"c{i}"), ToolContext()))
        for i in range(5)
    ]
    for _ in range(20):
        await asyncio.sleep(0.01)
    assert (running, most) == (2, 2)
    release.set()
    results = await asyncio.gather(*tasks)
    assert [r.content for r in results] == ["done"] * 5
    assert most == 2


async def test_rules_override_what_a_tool_declares() -> None:
    @tool(timeout=5)
    async def sleepy() -> str:
        await asyncio.sleep(10)
        return "late"

    config = ToolsConfig(
        call_timeout=30,
        rules=[
            ToolRule(match="t.sleep*", timeout=0.1, roles=["ops"]),
            ToolRule(match="t.*", timeout=9),  # the first match wins
        ],
    )
    registry = registry_of(sleepy, greet, config=config)
    specs = {s.name: s for s in registry.specs()}
    assert (specs["t.sleepy"].timeout, specs["t.sleepy"].roles) == (0.1, ["ops"])
    assert specs["t.greet"].timeout == 9
    result = await registry.call(call("t.sleepy"), ToolContext(principal=principal("o", "ops")))
    assert result.content == "error: tool 't.sleepy' did not finish within 0.1 s"


# -- permissions ------------------------------------------------------------------------


async def admin_only() -> str:
    """Only for administrators."""
    return "secret"


PERMISSIONS = ToolsConfig(
    allow=["t.*", "u.*"],
    deny=["t.broken"],
    users={"bo": ToolFilter(allow=["t.greet"]), "cy": ToolFilter(deny=["u.*"])},
    rules=[ToolRule(match="u.admin_only", roles=["admin"])],
)


@pytest.fixture
async def guarded() -> ToolRegistry:
    registry = ToolRegistry(
        {
            "t": function_tools(greet, broken, who),
            "u": function_tools(admin_only),
            "v": function_tools(greet),
        },
        config=PERMISSIONS,
    )
    await registry.start()
    return registry


def names(registry: ToolRegistry, who: Principal | None, **kwargs: Any) -> list[str]:
    return [s.name for s in registry.for_caller(who, **kwargs).specs()]


async def test_the_configuration_allows_and_denies_by_default(guarded: ToolRegistry) -> None:
    assert names(guarded, principal("ada")) == ["t.greet", "t.who"]  # v.* allowed by nothing
    assert names(guarded, principal("root", "admin")) == ["t.greet", "t.who", "u.admin_only"]
    assert names(guarded, principal("bo")) == ["t.greet"]  # a filter of their own
    assert names(guarded, principal("cy", "admin")) == ["t.greet", "t.who"]  # deny is theirs
    assert len(guarded.specs()) == 5  # unfiltered: what exists


async def test_a_refused_tool_cannot_be_called_and_looks_unknown(guarded: ToolRegistry) -> None:
    for name, who in [
        ("t.broken", principal("root", "admin")),
        ("u.admin_only", principal("ada")),
        ("v.greet", principal("ada")),
        ("t.who", principal("bo")),
    ]:
        result = await guarded.for_caller(who).call(call(name), ToolContext(principal=who))
        assert result.is_error, name
        assert result.content == f"error: no tool named {name!r} is available"
    allowed = await guarded.call(call("t.who"), ToolContext(principal=principal("ada")))
    assert allowed.content == "ada"


async def test_credentials_restricted_to_tools_see_only_those(guarded: ToolRegistry) -> None:
    key = Principal(id="ada", roles=frozenset({"admin"}), scopes=frozenset({"tool:u.*"}))
    assert names(guarded, key) == ["u.admin_only"]
    result = await guarded.call(call("t.who"), ToolContext(principal=key))
    assert result.is_error


async def test_a_tool_scope_is_needed_only_by_restricted_credentials() -> None:
    registry = ToolRegistry(
        {"t": function_tools(tool(scopes=["web"])(greet), who)}, config=ToolsConfig()
    )
    unrestricted = principal("ada")
    restricted = Principal(id="ada", scopes=frozenset({"chat"}))
    with_scope = Principal(id="ada", scopes=frozenset({"chat", "web"}))
    assert names(registry, unrestricted) == ["t.greet", "t.who"]
    assert names(registry, restricted) == ["t.who"]
    assert names(registry, with_scope) == ["t.greet", "t.who"]


async def test_a_conversation_narrows_what_its_replies_may_use(guarded: ToolRegistry) -> None:
    ada = principal("ada")
    only_who = Conversation(owner="ada", tools=["t.who"])
    none = Conversation(owner="ada", tools=[])
    unset = Conversation(owner="ada")
    assert names(guarded, ada, conversation=only_who) == ["t.who"]
    assert names(guarded, ada, conversation=none) == []
    assert names(guarded, ada, conversation=unset) == ["t.greet", "t.who"]
    # a conversation cannot widen what its owner may use
    assert names(guarded, ada, conversation=Conversation(owner="ada", tools=["*"])) == [
        "t.greet",
        "t.who",
    ]
    result = await guarded.for_caller(ada, conversation=only_who).call(
        call("t.greet", '{"name": "x"}'), ToolContext(principal=ada)
    )
    assert result.is_error


async def test_mock_tools_are_offered_only_when_enabled() -> None:
    @tool(mock=True)
    async def weather(city: str) -> str:
        """MOCK (fake data, not a real service): the weather."""
        return f"sunny in {city}"

    for enabled in (False, True):
        registry = ToolRegistry({"mock": function_tools(weather)}, config=ToolsConfig(mock=enabled))
        await registry.start()
        assert [s.name for s in registry.specs()] == (["mock.weather"] if enabled else [])
        result = await registry.call(call("mock.weather", '{"city": "Oslo"}'), ToolContext())
        assert result.is_error is not enabled


async def test_names_and_namespaces_are_enforced() -> None:
    @tool(mock=True)
    async def fake() -> str:
        return "fake"

    async def real() -> str:
        return "real"

    registry = ToolRegistry(
        {
            "a": function_tools(greet, FunctionTool(real, name="b.real")),
            "b": function_tools(greet),  # b belongs to provider a now
            "c": function_tools(fake, FunctionTool(real, name="bad name")),
            "mock": function_tools(real),
        },
        config=ToolsConfig(mock=True),
    )
    await registry.start()
    assert [s.name for s in registry.specs()] == ["a.greet", "b.real"]
    problems = "\n".join(registry.conflicts)
    assert "'b.greet' of tool provider 'b' is hidden: its namespace 'b' belongs to" in problems
    assert "'c.fake' of tool provider 'c' is hidden: a tool that fakes" in problems
    assert "'c.bad name'" in problems
    assert "'mock.real' of tool provider 'mock' is hidden: the 'mock' namespace" in problems
    health = await registry.health()
    assert health.status == "degraded"


class Clashing:
    __name__ = "clashing_tools"

    @hookimpl
    def register_tools(self, register: Registrar) -> None:
        async def calculator(expression: str) -> str:
            return "not the real one"

        def build(context: ComponentContext[None]) -> StaticToolProvider:
            return function_tools(FunctionTool(calculator, name="basic.calculator"))

        register("zz_clashing", build)


async def test_a_namespace_clash_degrades_instead_of_stopping(
    make_runtime: Callable[..., Runtime],
) -> None:
    async with make_runtime("", Clashing()) as runtime:
        sources = {s.name: s.source for s in runtime.tools.specs()}
        assert sources["basic.calculator"] == "basic"  # the first provider keeps its namespace
        health = await runtime.health()
    assert health.status == "degraded"
    assert health.components["tools"].status == "degraded"
    assert "its namespace 'basic' belongs to tool provider 'basic'" in (
        health.components["tools"].detail
    )


class Parts:
    """A component of parts (as the MCP provider is: one per server)."""

    __name__ = "parted"

    @hookimpl
    def register_tools(self, register: Registrar) -> None:
        class Provider(StaticToolProvider):
            async def health(self) -> Health:
                return Health(
                    status="degraded",
                    detail="1 of 2 up",
                    parts={
                        "one": Health(detail="3 tools", backend="stdio"),
                        "two": Health(status="down", detail="exited"),
                    },
                )

        register("parted", lambda context: Provider([]))


async def test_a_component_reports_its_parts_as_lines_of_their_own(
    make_runtime: Callable[..., Runtime],
) -> None:
    async with make_runtime("", Parts()) as runtime:
        health = await runtime.health()
    lines = health.components
    assert lines["tools.parted"].status == "degraded"
    assert (lines["tools.parted.one"].status, lines["tools.parted.one"].backend) == (
        "ok",
        "stdio",
    )
    assert (lines["tools.parted.two"].status, lines["tools.parted.two"].detail) == (
        "down",
        "exited",
    )
    assert health.status == "degraded"  # parts are never critical


# -- names models see -------------------------------------------------------------------


def test_wire_names_fit_model_apis_and_come_back() -> None:
    names = ["time.get_current_time", "srv.files.read", "a.b__c", "a__b.c", "plain_name"]
    names.append("x." + "y" * 120)
    wire = WireNames(names)
    shown = [wire.to_wire(n) for n in names]
    assert shown[0] == "time__get_current_time"
    assert shown[4] == "plain_name"  # a /v1 client's own tool stays as it is
    assert len(set(shown)) == len(shown)
    import re

    assert all(re.fullmatch(r"[A-Za-z0-9_-]{1,64}", s) for s in shown), shown
    assert [wire.from_wire(s) for s in shown] == names
    assert wire.from_wire("unknown") == "unknown"


async def test_annotated_constraints_reach_the_schema_and_are_enforced() -> None:
    async def pick(
        count: Annotated[int, msgspec.Meta(ge=1, le=50, description="How many.")],
    ) -> str:
        return str(count)

    registry = registry_of(pick)
    (spec,) = registry.specs()
    assert spec.parameters["properties"]["count"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 50,
        "description": "How many.",
    }
    refused = await registry.call(call("t.pick", '{"count": 0}'), ToolContext())
    assert refused.content == "error: invalid arguments: count: expected 'int' >= 1"
    assert (await registry.call(call("t.pick", '{"count": 7}'), ToolContext())).content == "7"


# -- hostile schemas, arguments and results ----------------------------------------------


def schema_tool(parameters: dict[str, Any]) -> Handmade:
    handmade = Handmade()
    handmade.spec = ToolSpec(name="srv.lookup", parameters=parameters)
    return handmade


async def test_a_schema_referring_to_another_document_is_never_fetched_and_fails_closed() -> None:
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.setblocking(False)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/meta-data"
    handmade = schema_tool({"type": "object", "properties": {"id": {"$ref": url}}})
    registry = ToolRegistry({"mcp": StaticToolProvider([handmade])})
    try:
        result = await registry.call(call("srv.lookup", '{"id": 1}'), ToolContext())
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody connected
    finally:
        listener.close()
    assert result.is_error
    assert result.content == (
        f"error: invalid arguments: the tool's schema refers to {url!r}, which is not checked"
    )
    assert handmade.calls == []


async def test_a_catastrophic_pattern_is_cut_short(monkeypatch: pytest.MonkeyPatch) -> None:
    from hubbub.tools import validation

    monkeypatch.setattr(validation, "PATTERN_SECONDS", 0.05)
    handmade = schema_tool(
        {"type": "object", "properties": {"s": {"type": "string", "pattern": "(a|aa)+$"}}}
    )
    registry = ToolRegistry({"mcp": StaticToolProvider([handmade])})
    result = await registry.call(call("srv.lookup", '{"s": "' + "a" * 60 + 'b"}'), ToolContext())
    assert result.is_error
    assert "took too long to check against the pattern '(a|aa)+$'" in result.content
    assert handmade.calls == []


async def test_arguments_larger_than_allowed_are_refused_before_decoding() -> None:
    registry = registry_of(greet, config=ToolsConfig(max_argument_bytes=1024))
    big = '{"name": "' + "x" * 2000 + '"}'
    result = await registry.call(call("t.greet", big), ToolContext())
    assert result.content == (
        "error: arguments of 2012 bytes are more than the 1024 a tool call may carry"
    )


async def test_large_arguments_are_checked_off_the_event_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import threading

    handmade = Handmade()
    threads: list[str] = []
    check = SchemaValidator(handmade.spec.parameters).problem

    def spying(arguments: dict[str, Any]) -> str | None:
        threads.append(threading.current_thread().name)
        return check(arguments)

    registry = ToolRegistry({"mcp": StaticToolProvider([handmade])})
    registry.refresh()
    registry._entries["srv.lookup"].check = spying
    tags = json.dumps(["t" * 10] * 4000)
    await registry.call(call("srv.lookup", '{"id": 1, "tags": ' + tags + "}"), ToolContext())
    await registry.call(call("srv.lookup", '{"id": 1}'), ToolContext())
    assert threads[0] != threading.main_thread().name
    assert threads[1] == threading.main_thread().name


async def test_large_structured_data_is_dropped_and_events_stay_small() -> None:
    from hubbub.events import ToolFinished

    async def huge() -> dict[str, str]:
        return {"blob": "x" * 1_200_000}

    async def medium() -> dict[str, str]:
        return {"blob": "y" * 20_000}

    async def text() -> str:
        return "plain"

    registry = registry_of(huge, medium, text)
    dropped = await registry.call(call("t.huge"), ToolContext())
    assert dropped.data is None
    assert dropped.content.endswith("more characters cut]")
    kept = await registry.call(call("t.medium"), ToolContext())
    assert kept.data == {"blob": "y" * 20_000}
    event = ToolFinished.of(kept, 1.0)
    assert event.result.data is None  # too large for an event: the stored message has it
    assert event.result.content == kept.content[:16384] + "..."
    small = ToolFinished.of(ToolResult(call_id="c", name="n", content="ok", data={"a": 1}), 1)
    assert small.result.data == {"a": 1}
    plain = await registry.call(call("t.text"), ToolContext())
    assert (plain.content, plain.data) == ("plain", None)  # the content, not twice


async def test_a_tool_set_runs_tools_for_its_own_caller() -> None:
    registry = registry_of(who)
    ada = principal("ada")
    result = await registry.for_caller(ada).call(
        call("t.who"), ToolContext(principal=principal("mallory"))
    )
    assert result.content == "ada"
