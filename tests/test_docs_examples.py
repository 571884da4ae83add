"""The documentation's Python examples run, as Litestar's do: every ```python block of README.md
and docs/**/*.md is a test named ``page:line``, run offline with a temporary data directory.
A block that cannot run on its own says so with a marker before its fence (see
``tests/docs_examples.py``); any other block that fails, fails its test.

How a block runs depends on what it is:

* a **plugin** (it has ``@hookimpl`` functions) is loaded as a module named ``example`` and
  registered with the installed plugins into a runtime whose configuration selects every
  component it registers; the runtime must start with no component down. Then what it adds is
  used: a conversation turn when it registers a model or LLM middleware or intercepts LLM
  requests, a call of each of its tools (with sample arguments), a tool call through its tool
  middleware, a GET of each of its routes (without path parameters), ``hubbub <command> --help``
  for each command it adds.
  Nothing may be logged at ERROR level (hubbub logs, rather than raises, what ``on_shutdown`` and
  ``after_llm_response`` implementations raise);
* **tests** (``test_*`` functions) are called, with ``tmp_path``;
* a **program** (it calls ``asyncio.run``, or is marked ``server``) runs in a subprocess of this
  Python, in a temporary directory that is also its ``HUBBUB_HOME``; ``server`` programs talk to
  a real reference server started for them, in local mode;
* anything else (definitions) is executed in a fresh namespace.
"""

from __future__ import annotations

import ast
import inspect
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import types
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from docs_examples import PLUGIN, Example, collect, implemented_hooks, isolate, parse, run_hubbub

from hubbub.contracts import ToolContext
from hubbub.kinds import kinds_by_name
from hubbub.models import ChatRequest, Message, ToolCall
from hubbub.plugins import load_plugins
from hubbub.runtime import Runtime
from hubbub.testing import config_for, principal, runtime_for

DOCS_SERVER = "http://127.0.0.1:8000"
"""Where the examples expect the reference server."""

EXAMPLES = collect()


def examples() -> list[Any]:
    return [pytest.param(example, id=example.id) for example in EXAMPLES]


# -- what a block is ---------------------------------------------------------------------------


def _calls_asyncio_run(tree: ast.AST) -> bool:
    return any(
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "run"
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "asyncio"
        for node in ast.walk(tree)
    )


def _tests(tree: ast.Module) -> list[str]:
    return [
        node.name
        for node in tree.body
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.name.startswith("test_")
    ]


def kind_of(example: Example) -> str:
    """``plugin``, ``tests``, ``server``, ``program`` or ``namespace`` (see the module's
    docstring)."""
    tree = example.tree()
    if implemented_hooks(tree):
        return "plugin"
    if _tests(tree):
        return "tests"
    if "server" in example.markers_of_chain():
        return "server"
    if _calls_asyncio_run(tree):
        return "program"
    return "namespace"


# -- programs ----------------------------------------------------------------------------------


def run_program(example: Example, workdir: Path, *, server: str | None = None) -> None:
    """Run the block as ``python example.py`` in ``workdir`` with no ``HUBBUB_*`` or
    ``OPENAI_*`` setting but ``HUBBUB_HOME=workdir``; ``server`` replaces the docs' address."""
    source = example.source()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HUBBUB_", "OPENAI_"))}
    env.update({"HUBBUB_HOME": str(workdir), "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"})
    env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # litellm reads its bundled prices, offline
    if server is not None:
        source = source.replace(DOCS_SERVER, server)
        env["HUBBUB_API_KEY"] = "any-key-works-in-local-mode"
    script = workdir / "example.py"
    script.write_text(source, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    report = f"{example.id} (line numbers are the page's)\n{done.stdout}\n{done.stderr}"
    assert done.returncode == 0, report
    assert "Traceback" not in done.stderr, report


@pytest.fixture(scope="module")
def reference_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The reference server (``create_app``, uvicorn) on a free loopback port, in local mode:
    its address."""
    import uvicorn

    from hubbub_server.app import create_app

    home = tmp_path_factory.mktemp("server")
    with pytest.MonkeyPatch.context() as patch:
        isolate(patch, home)
        app = create_app(config_for(home))
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(app, log_config=None, log_level="warning"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        deadline = time.monotonic() + 20
        while not server.started:
            assert thread.is_alive(), "the reference server stopped while starting"
            assert time.monotonic() < deadline, "the reference server did not start in 20 s"
            time.sleep(0.02)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True
            thread.join(timeout=15)
            sock.close()


# -- plugins -----------------------------------------------------------------------------------


def load_module(example: Example, monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """The block executed as the module :data:`PLUGIN` (in ``sys.modules`` for the test)."""
    module = types.ModuleType(PLUGIN)
    module.__file__ = str(Path(example.page).resolve())
    monkeypatch.setitem(sys.modules, PLUGIN, module)
    exec(compile(example.tree(), example.page, "exec"), module.__dict__)
    return module


def registered_by(module: types.ModuleType) -> dict[str, list[str]]:
    """What the plugin registers: kind -> names."""
    plugins = load_plugins(extra=[module], entry_points=False, env={})
    return {
        kind: [registration.name for registration in registry]
        for kind, registry in plugins.registries().items()
        if len(registry)
    }


def selecting(registered: Mapping[str, list[str]]) -> str:
    """TOML that selects every registered component (kinds that start all need nothing)."""
    kinds = kinds_by_name()
    tables = []
    for kind, names in registered.items():
        spec = kinds[kind]
        if spec.selection == "one":
            tables.append(f"[{spec.section}]\n{spec.key} = {json.dumps(names[0])}\n")
        elif spec.selection == "listed":
            tables.append(f"[{spec.section}]\n{spec.key} = {json.dumps(names)}\n")
    return "".join(tables)


async def converse(runtime: Runtime, llm_names: list[str]) -> None:
    """One conversation turn, with a model of the example's providers if it has any, plus one
    direct request to each of those models."""
    models = [model.id for model in runtime.llm.models() if model.provider in llm_names]
    if llm_names:
        assert models, f"no model has provider {llm_names}: {runtime.llm.models()}"
    me = principal("docs")
    conversation = await runtime.conversations.create(me, model=models[0] if models else None)
    await runtime.conversations.send(me, conversation.id, "Hello from the docs")
    reply = await runtime.conversations.reply(me, conversation.id)
    assert reply.content
    for model in models:
        request = ChatRequest(model=model, messages=[Message(role="user", content="hi there")])
        assert (await runtime.llm.complete(request)).message.content


INTERCEPTION = {"before_llm_request", "after_llm_response"}

SAMPLE_ARGUMENTS = {"number": 2, "integer": 2, "string": "docs", "boolean": True}
"""A value for a tool argument of each JSON Schema type."""


async def call_tools(runtime: Runtime, tool_names: list[str]) -> None:
    """Call every tool of the example's tool providers, with a sample value for each argument
    (required or not); none may fail."""
    specs = [spec for spec in runtime.tools.specs() if spec.source in tool_names]
    for spec in specs:
        properties = spec.parameters.get("properties", {})
        arguments = {
            name: SAMPLE_ARGUMENTS[schema["type"]]
            for name, schema in properties.items()
            if schema.get("type") in SAMPLE_ARGUMENTS
        }
        call = ToolCall(id=f"call_{spec.name}", name=spec.name, arguments=json.dumps(arguments))
        result = await runtime.tools.call(call, ToolContext(principal=principal("docs")))
        assert not result.is_error, f"{spec.name}({arguments}): {result.content}"


async def get_routes(runtime: Runtime) -> None:
    """GET each route the example mounts (those without path parameters)."""
    from litestar.testing import AsyncTestClient

    from hubbub_server.app import create_app

    app = create_app(runtime=runtime)
    mine = [
        (route.path, handler)
        for route in app.routes
        for handler in getattr(route, "route_handlers", ())
        if getattr(handler.fn, "__module__", None) == PLUGIN
    ]
    assert mine, "the example registers routes, but none is mounted"
    async with AsyncTestClient(app, base_url="http://127.0.0.1") as client:
        for path, handler in mine:
            if "GET" in handler.http_methods and "{" not in path:
                response = await client.get(path)
                assert response.status_code == 200, (path, response.text)


async def run_plugin(
    example: Example, home: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    module = load_module(example, monkeypatch)
    hooks = implemented_hooks(example.tree())
    registered = registered_by(module)
    selected = {} if "register-only" in example.markers_of_chain() else registered
    config = config_for(home, selecting(selected) + example.toml_of_chain())
    caplog.set_level(logging.WARNING)
    async with runtime_for(config, [module]) as runtime:
        health = await runtime.health()
        down = {label: part for label, part in health.components.items() if part.status == "down"}
        assert not down, f"components down: {down}"
        if {"llm", "llm_middleware"} & set(selected) or hooks & INTERCEPTION:
            await converse(runtime, selected.get("llm", []))
        if "tools" in selected:
            await call_tools(runtime, selected["tools"])
        if "tool_middleware" in selected:  # a call of no tool goes through the middleware too
            call = ToolCall(id="call_docs", name="no_such_tool")
            assert (await runtime.tools.call(call, ToolContext())).is_error
        if "routes" in registered:
            await get_routes(runtime)
    if "register_commands" in hooks:
        listed = run_hubbub(["--help"], [module])
        assert listed.code == 0, listed.output
        added = sorted(set(listed.added) - set(run_hubbub(["--help"], []).added))
        assert added, f"no command added by the example:\n{listed.output}"
        for command in added:
            ran = run_hubbub([command, "--help"], [module])
            assert ran.code == 0, ran.output
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert not errors, "logged: " + "; ".join(
        f"{record.name}: {record.getMessage()}"
        + (f" ({record.exc_info[1]!r})" if record.exc_info else "")
        for record in errors
    )


# -- tests and definitions ---------------------------------------------------------------------


async def run_tests(example: Example, workdir: Path) -> None:
    namespace: dict[str, Any] = {"__name__": PLUGIN}
    exec(compile(example.tree(), example.page, "exec"), namespace)
    fixtures = {"tmp_path": workdir}
    for name in _tests(example.tree()):
        test = namespace[name]
        wanted = list(inspect.signature(test).parameters)
        missing = [p for p in wanted if p not in fixtures]
        assert not missing, f"{name} needs fixtures this runner lacks: {missing}"
        result = test(**{p: fixtures[p] for p in wanted})
        if inspect.isawaitable(result):
            await result


async def run_example(
    example: Example,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    request: pytest.FixtureRequest,
) -> None:
    home = tmp_path / "home"
    isolate(monkeypatch, home)
    kind = kind_of(example)
    if kind == "plugin":
        await run_plugin(example, home, monkeypatch, caplog)
    elif kind == "tests":
        await run_tests(example, tmp_path / "test")
    elif kind == "server":
        run_program(example, home, server=request.getfixturevalue("reference_server"))
    elif kind == "program":
        run_program(example, home)
    else:
        exec(compile(example.tree(), example.page, "exec"), {"__name__": PLUGIN})


# -- the tests ---------------------------------------------------------------------------------


@pytest.mark.parametrize("example", examples())
async def test_example_runs(
    example: Example,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    request: pytest.FixtureRequest,
) -> None:
    assert example.problem is None, f"{example.id}: {example.problem}"
    if "excerpt" in example.markers:
        pytest.skip("an excerpt (<!-- example: excerpt -->)")
    await run_example(example, tmp_path, monkeypatch, caplog, request)


def test_examples_are_found() -> None:
    pages = {example.page for example in EXAMPLES}
    assert {"README.md", "docs/plugins/hooks.md", "docs/getting-started.md"} <= pages
    assert len({example.id for example in EXAMPLES}) == len(EXAMPLES)


# -- the runner can fail -----------------------------------------------------------------------

SHUTDOWN = """
from hubbub import hookimpl


@hookimpl
def on_shutdown(runtime):
    runtime.no_such_thing
"""

SINK = """
from hubbub import hookimpl
from hubbub.models import Health


class Sink:
    async def start(self):
        raise OSError("disk full")

    async def health(self):
        return Health()

    async def aclose(self):
        pass

    async def handle(self, event):
        pass


@hookimpl
def register_event_sinks(register):
    register("full", lambda context: Sink())
"""

MODEL = """
from hubbub import hookimpl
from hubbub.models import Health, ModelInfo


class Mute:
    async def start(self):
        pass

    async def health(self):
        return Health()

    async def aclose(self):
        pass

    async def list_models(self):
        return [ModelInfo(id="mute/v1", provider="mute")]

    async def complete(self, request):
        raise ValueError("no words")

    async def stream(self, request):
        raise ValueError("no words")
        yield


@hookimpl
def register_llm_providers(register):
    register("mute", lambda context: Mute())
"""

ROUTE = """
from litestar import get

from hubbub import hookimpl


@hookimpl
def register_routes(register):
    @get("/api/broken")
    async def broken() -> dict[str, str]:
        raise RuntimeError("a bug")

    register("broken", lambda context: [broken])
"""

TOOL = """
from hubbub import hookimpl
from hubbub.tools import function_tools


async def divide(a: float, b: float) -> float:
    \"\"\"Divide a by nothing.\"\"\"
    return a / (b - b)


@hookimpl
def register_tools(register):
    register("divide", lambda context: function_tools(divide))
"""

PROGRAM = "import asyncio\n\nasyncio.run(asyncio.sleep(-1, result=1 / 0))\n"

BROKEN = [
    pytest.param("ratio = 1 / 0\n", ZeroDivisionError, "division", id="definitions"),
    pytest.param(PROGRAM, AssertionError, "ZeroDivisionError", id="program"),
    pytest.param(SHUTDOWN, AssertionError, "logged: .*no_such_thing", id="on_shutdown-logged"),
    pytest.param(SINK, AssertionError, "components down: .*disk full", id="sink-down"),
    pytest.param(MODEL, Exception, "no words", id="model-fails"),
    pytest.param(ROUTE, AssertionError, "/api/broken", id="route-fails"),
    pytest.param(TOOL, AssertionError, "divide", id="tool-fails"),
]


@pytest.mark.parametrize(("code", "error", "match"), BROKEN)
async def test_a_broken_example_fails(
    code: str,
    error: type[BaseException],
    match: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    request: pytest.FixtureRequest,
) -> None:
    (example,) = parse(f"```python\n{code}```\n", "broken.md")
    with pytest.raises(error, match=match):
        await run_example(example, tmp_path, monkeypatch, caplog, request)


PAGE = """\
# A page

```python
print("runs")
```

<!-- example: excerpt (a method) -->
```python
def method(self): ...
```

!!! note
    <!-- example: register-only
    [plugins.example]
    token = "t"
    -->

    ```py title="x.py"
    from hubbub import hookimpl
    ```

<!-- example: continues -->
~~~~python
print("more")
~~~~

```toml
[python]
```

<!-- example: except -->
```python
pass
```
"""


def test_blocks_and_markers_are_read() -> None:
    first, excerpt, plugin, more, typo = parse(PAGE, "page.md")
    assert (first.line, first.code, first.markers) == (3, 'print("runs")', frozenset())
    assert excerpt.markers == {"excerpt"}
    assert excerpt.problem is None
    assert (plugin.line, plugin.code) == (18, "from hubbub import hookimpl")
    assert plugin.markers == {"register-only"}
    assert plugin.toml == '[plugins.example]\ntoken = "t"'
    assert [e.line for e in more.chain()] == [18, 23]
    assert more.source().splitlines()[18] == "from hubbub import hookimpl"
    assert more.source().splitlines()[23] == 'print("more")'
    assert "'except'" in (typo.problem or "")


def test_hookimpls_are_found_by_the_syntax_tree() -> None:
    tree = ast.parse(
        "from hubbub import hookimpl\n"
        "import hubbub\n"
        "@hookimpl\ndef register_tools(register): ...\n"
        "@hubbub.hookimpl(tryfirst=True)\nasync def on_startup(runtime): ...\n"
        "class P:\n"
        "    @hookimpl(specname='on_shutdown')\n    def stop(self, runtime): ...\n"
        "    def register_routes(self, register): ...\n"
        "p = P()\np.after_llm_response = hookimpl(lambda request, response: None)\n"
        "# @hookimpl\n# def register_commands(cli): ...\n"
    )
    assert implemented_hooks(tree) == {
        "register_tools",
        "on_startup",
        "on_shutdown",
        "after_llm_response",
    }
