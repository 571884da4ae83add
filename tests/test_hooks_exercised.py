"""Every hook spec is exercised, as datasette checks for its own hooks.

Two checks per hook in :mod:`hubbub.hookspecs`, parametrized over the specs found when the tests
run, so a hook added without tests fails by name:

* **implemented in a test**: some test module under ``tests/`` (this one aside), the plugin
  template, or a documentation example that ``tests/test_docs_examples.py`` runs has a
  ``@hookimpl`` function for it, or assigns one (``plugin.<hook> = hookimpl(function)``), as
  found in the syntax tree (comments and strings do not count);
* **called by the machinery**: :data:`EXERCISE` says how to run a probe plugin implementing only
  that hook through what calls it for real (a runtime from :func:`hubbub.testing.runtime_for`,
  the reference server's app, the ``hubbub`` command); the implementation must be called, with
  every parameter of the spec, each of the type its docstring (``:class:`...```) or annotation
  documents. A hook without an entry fails with what to add.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import types
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import click
import jinja2
import pytest
from docs_examples import ROOT, collect, implemented_hooks, isolate, run_hubbub
from litestar import get
from litestar.testing import AsyncTestClient
from support import NobodyAuth, echo_tool

import hubbub.cli
from hubbub import hookimpl, hookspecs
from hubbub.auth.tokens import Keyring, dump_keyring
from hubbub.contracts import ToolContext
from hubbub.errors import InvalidRequestError
from hubbub.events import MemoryEventLog, Status
from hubbub.models import ChatRequest, Message, ToolCall
from hubbub.registry import ComponentContext, Registrar
from hubbub.runtime import Runtime
from hubbub.testing import config_for, runtime_for
from hubbub.tools import StaticToolProvider, function_tools
from hubbub_plugins.log_sink import LogSink, LogSinkSettings
from hubbub_plugins.memory_cache import MemoryCache, MemoryCacheSettings
from hubbub_plugins.memory_ledger import MemoryLedger
from hubbub_plugins.offline_provider import OfflineProvider, OfflineSettings
from hubbub_plugins.sqlite_accounts import SQLiteAccountStore
from hubbub_plugins.sqlite_store import SQLiteStore

THIS = Path(__file__).resolve()

Calls = list[dict[str, Any]]
"""The arguments of each call of the probe's implementation, by parameter name."""
Exercise = Callable[[str, Calls, Path], Awaitable[None]]
"""``exercise(hook, calls, home)``: run a probe implementing ``hook`` that appends its
arguments to ``calls``, with the data directory ``home``."""


def hook_specs() -> dict[str, Callable[..., Any]]:
    marker = f"{hookspecs.hookspec.project_name}_spec"
    return {
        name: value
        for name, value in vars(hookspecs).items()
        if inspect.isfunction(value) and hasattr(value, marker)
    }


# -- implemented in a test ---------------------------------------------------------------------


def _template_source(path: Path) -> str:
    """A file of the cookiecutter template, with every ``{{ cookiecutter.x }}`` filled in."""
    anything: defaultdict[str, str] = defaultdict(lambda: "placeholder")
    return jinja2.Template(path.read_text(encoding="utf-8")).render(cookiecutter=anything)


def implementations() -> dict[str, list[str]]:
    """hook -> where a ``@hookimpl`` function implements it."""

    sources: list[tuple[str, str]] = [
        (path.relative_to(ROOT).as_posix(), path.read_text(encoding="utf-8"))
        for path in sorted((ROOT / "tests").rglob("*.py"))
        if path.resolve() != THIS
    ]
    sources += [
        (path.relative_to(ROOT).as_posix(), _template_source(path))
        for path in sorted((ROOT / "templates").rglob("*.py"))
    ]
    sources += [
        (example.id, example.source()) for example in collect() if "excerpt" not in example.markers
    ]
    found: dict[str, list[str]] = defaultdict(list)
    for where, source in sources:
        for hook in implemented_hooks(ast.parse(source)):
            found[hook].append(where)
    return found


@pytest.fixture(scope="module")
def implemented() -> dict[str, list[str]]:
    return implementations()


@pytest.mark.parametrize("hook", sorted(hook_specs()))
def test_hook_is_implemented_in_a_test(hook: str, implemented: dict[str, list[str]]) -> None:
    assert implemented.get(hook), (
        f"no test implements the hook {hook!r}: write one whose plugin has a @hookimpl "
        f"function {hook} (a test module under tests/, or a docs example that runs)"
    )


# -- documented arguments ----------------------------------------------------------------------


def _type_checking_names() -> dict[str, Any]:
    """What ``hubbub.hookspecs`` imports under ``if TYPE_CHECKING:``, for its annotations."""
    tree = ast.parse(inspect.getsource(hookspecs))
    namespace: dict[str, Any] = dict(vars(hookspecs))
    for node in tree.body:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            exec(compile(ast.Module(node.body, type_ignores=[]), "hookspecs", "exec"), namespace)
    return namespace


def _resolve(dotted: str) -> Any:
    """``package.module.Name`` -> the object."""
    module_name, _, attribute = dotted.rpartition(".")
    return getattr(importlib.import_module(module_name), attribute)


def documented_types(spec: Callable[..., Any]) -> dict[str, type | None]:
    """Each parameter of ``spec`` and the type it is documented to have: the first
    ``:class:`...``` of its ``:param:`` line, else its annotation; ``None`` for ``Any``."""
    doc = inspect.getdoc(spec) or ""
    names = _type_checking_names()
    types_: dict[str, type | None] = {}
    for name, parameter in inspect.signature(spec).parameters.items():
        line = re.search(rf"^:param {name}:(.*(?:\n(?!:|\.\.|\n).*)*)", doc, re.M)
        cls = re.search(r":class:`~?([\w.]+)`", line.group(1)) if line else None
        if cls is not None:
            types_[name] = _resolve(cls.group(1))
        else:
            annotation = eval(str(parameter.annotation), names)  # hubbub's own source
            types_[name] = None if annotation is Any else annotation
    return types_


def test_documented_types_are_read() -> None:
    specs = hook_specs()
    assert documented_types(specs["register_tools"]) == {"register": Registrar}
    assert documented_types(specs["register_commands"]) == {"cli": click.Group}
    assert documented_types(specs["after_llm_response"]) == {
        "request": ChatRequest,
        "response": _resolve("hubbub.models.ChatResponse"),
        "runtime": Runtime,
    }


# -- called by the machinery -------------------------------------------------------------------


def probe(hook: str, implementation: Callable[..., Any]) -> types.ModuleType:
    """A plugin named ``probe`` whose only hook implementation is ``implementation``."""
    plugin = types.ModuleType("probe")
    setattr(plugin, hook, hookimpl(implementation))
    return plugin


def logged(base: type, log: list[str]) -> type:
    """``base`` with ``start`` and ``aclose`` appending ``start`` and ``stop`` to ``log``."""

    class Logged(base):  # type: ignore[misc, valid-type]
        async def start(self) -> None:
            log.append("start")
            await super().start()

        async def aclose(self) -> None:
            log.append("stop")
            await super().aclose()

    return Logged


async def ask(runtime: Runtime, model: str = "offline/echo") -> str:
    """One whole LLM request through the runtime; the reply's text."""
    request = ChatRequest(model=model, messages=[Message(role="user", content="ping")])
    return (await runtime.llm.complete(request)).message.content


def component(
    toml: str,
    make: Callable[[ComponentContext[Any], list[str]], Any],
    use: Callable[[Runtime, list[str]], Awaitable[None]] | None = None,
    env: Callable[[], dict[str, str]] = dict,
) -> Exercise:
    """A registration hook: the probe registers ``probe``, built by ``make(context, log)``
    (a component that logs ``start`` and ``stop``); ``toml`` selects it. A runtime must build it
    once, start it, let ``use(runtime, log)`` use it, and stop it."""

    async def exercise(hook: str, calls: Calls, home: Path) -> None:
        log: list[str] = []
        contexts: list[ComponentContext[Any]] = []

        def factory(context: ComponentContext[Any]) -> Any:
            contexts.append(context)
            return make(context, log)

        def register_probe(register: Any) -> None:
            calls.append({"register": register})
            register("probe", factory, description="the probe")

        config = config_for(home, toml, env=env())
        async with runtime_for(config, [probe(hook, register_probe)]) as runtime:
            assert log == ["start"]
            if use is not None:
                await use(runtime, log)
        assert [context.name for context in contexts] == ["probe"]
        assert log[0] == "start"
        assert log[-1] == "stop"

    return exercise


async def use_accounts(runtime: Runtime, log: list[str]) -> None:
    await runtime.users.add("probe-user", None)
    assert [user.id for user in await runtime.users.list()] == ["probe-user"]


async def use_model(runtime: Runtime, log: list[str]) -> None:
    assert (await ask(runtime, "probe/echo")).startswith("[offline echo]")


async def use_budget_ledger(runtime: Runtime, log: list[str]) -> None:
    from hubbub.budgets import budget_ledger, counter

    request = ChatRequest(model="offline/echo", messages=[Message(role="user", content="ping")])
    request.user = "probe-user"
    await runtime.llm.complete(request)
    ledger = budget_ledger(runtime)
    assert ledger is runtime.components("budget_ledger")["probe"]
    import time

    [totals] = await ledger.totals([counter("user", "probe-user", "month", time.time()).key])
    assert totals.tokens > 0  # the budgets middleware counted the call in the probe


async def use_tool(runtime: Runtime, log: list[str]) -> None:
    call = ToolCall(id="call_1", name="probe.echo_tool", arguments='{"text": "hi"}')
    result = await runtime.tools.call(call, ToolContext())
    assert (result.content, result.is_error) == ("hi", False)


def llm_middleware(context: ComponentContext[Any], log: list[str]) -> Any:
    from hubbub.middleware import LLMMiddlewareBase

    class Seen(logged(LLMMiddlewareBase, log)):  # type: ignore[misc]
        async def complete(self, request: Any, call_next: Any) -> Any:
            log.append(f"complete {request.model}")
            return await call_next(request)

    return Seen()


async def use_llm_middleware(runtime: Runtime, log: list[str]) -> None:
    await ask(runtime)
    assert "complete offline/echo" in log


def tool_middleware(context: ComponentContext[Any], log: list[str]) -> Any:
    from hubbub.middleware import ToolMiddlewareBase

    class Seen(logged(ToolMiddlewareBase, log)):  # type: ignore[misc]
        async def call_tool(self, call: Any, context: Any, call_next: Any) -> Any:
            log.append(f"call_tool {call.name}")
            return await call_next(call, context)

    return Seen()


async def use_tool_middleware(runtime: Runtime, log: list[str]) -> None:
    await runtime.tools.call(ToolCall(id="call_1", name="no_such_tool"), ToolContext())
    assert "call_tool no_such_tool" in log


async def routes(hook: str, calls: Calls, home: Path) -> None:
    from hubbub_server.app import create_app

    contexts: list[ComponentContext[Any]] = []

    def build(context: ComponentContext[Any]) -> list[Any]:
        contexts.append(context)

        @get("/api/probe")
        async def answer() -> dict[str, str]:
            return {"probe": "here"}

        return [answer]

    def register_probe(register: Any) -> None:
        calls.append({"register": register})
        register("probe", build)

    async with runtime_for(config_for(home), [probe(hook, register_probe)]) as runtime:
        app = create_app(runtime=runtime)
        async with AsyncTestClient(app, base_url="http://127.0.0.1") as client:
            response = await client.get("/api/probe")
    assert (response.status_code, response.json()) == (200, {"probe": "here"})
    assert [context.runtime for context in contexts] == [runtime]


async def commands(hook: str, calls: Calls, home: Path) -> None:
    def register_commands(cli: Any) -> None:
        calls.append({"cli": cli})

        @cli.command()
        @click.argument("name")
        def probe_greet(name: str) -> None:
            click.echo(f"probed {name}")

    ran = run_hubbub(["probe-greet", "world"], [probe(hook, register_commands)])
    assert (ran.code, ran.output.splitlines()[-1]) == (0, "probed world"), ran.output
    assert "probe-greet" in ran.added
    assert "probe-greet" not in hubbub.cli.cli.commands  # added to a copy of the group only


async def startup(hook: str, calls: Calls, home: Path) -> None:
    def on_startup(runtime: Any) -> None:
        calls.append({"runtime": runtime})
        assert runtime.cache is not None  # every component has started

    async with runtime_for(config_for(home), [probe(hook, on_startup)]) as runtime:
        assert [call["runtime"] for call in calls] == [runtime]


async def shutdown(hook: str, calls: Calls, home: Path) -> None:
    async def on_shutdown(runtime: Any) -> None:
        calls.append({"runtime": runtime})
        await runtime.cache.set("last-words", b"bye")  # components still work

    async with runtime_for(config_for(home), [probe(hook, on_shutdown)]) as runtime:
        assert calls == []
    assert [call["runtime"] for call in calls] == [runtime]


async def before_request(hook: str, calls: Calls, home: Path) -> None:
    def before_llm_request(request: Any, runtime: Any) -> None:
        calls.append({"request": request, "runtime": runtime})
        request.messages[-1] = Message(role="user", content="rewritten")

    async with runtime_for(config_for(home), [probe(hook, before_llm_request)]) as runtime:
        assert "rewritten" in await ask(runtime)
    assert [call["runtime"] for call in calls] == [runtime]


async def new_password(hook: str, calls: Calls, home: Path) -> None:
    async def check_new_password(password: str, user: str) -> str | None:
        calls.append({"password": password, "user": user})
        return "it appears in a known data breach" if password == "password1234" else None

    async with runtime_for(config_for(home), [probe(hook, check_new_password)]) as runtime:
        with pytest.raises(InvalidRequestError, match="known data breach"):
            await runtime.users.add("alice", "password1234")
        await runtime.users.add("alice", "a much better passphrase")
        with pytest.raises(InvalidRequestError, match="known data breach"):
            await runtime.users.set_password("alice", "password1234")
        assert await runtime.users.exists()
    assert [call["user"] for call in calls] == ["alice", "alice", "alice"]


async def after_response(hook: str, calls: Calls, home: Path) -> None:
    async def after_llm_response(request: Any, response: Any, runtime: Any) -> None:
        calls.append({"request": request, "response": response, "runtime": runtime})

    async with runtime_for(config_for(home), [probe(hook, after_llm_response)]) as runtime:
        text = await ask(runtime)
    assert [call["response"].message.content for call in calls] == [text]
    assert [call["runtime"] for call in calls] == [runtime]


async def log_in_use(runtime: Runtime, log: list[str]) -> None:
    with runtime.events.subscribe() as subscription:
        published = runtime.events.publish(Status(state="idle"))
        assert await subscription.get() is published  # delivered by the probe log, with its id
    assert runtime.events.log.last_id == published.id


EXERCISE: dict[str, Exercise] = {
    "register_event_logs": component(
        '[events]\nbackend = "probe"',
        lambda c, log: logged(MemoryEventLog, log)(),
        log_in_use,
    ),
    "register_event_sinks": component(
        '[events]\nsinks = ["probe"]', lambda c, log: logged(LogSink, log)(LogSinkSettings())
    ),
    "register_cache_backends": component(
        '[cache]\nbackend = "probe"',
        lambda c, log: logged(MemoryCache, log)(MemoryCacheSettings()),
    ),
    "register_memory_stores": component(
        '[memory]\nbackend = "probe"',
        lambda c, log: logged(SQLiteStore, log)(str(c.data_dir / "probe.sqlite3")),
    ),
    "register_account_stores": component(
        '[accounts]\nbackend = "probe"',
        lambda c, log: logged(SQLiteAccountStore, log)(str(c.data_dir / "probe.sqlite3")),
        use_accounts,
        # an account store other than the built-in sqlite one may be shared: a keyring given
        lambda: {"HUBBUB_SIGNING_KEYS": dump_keyring(Keyring.generate()).decode()},
    ),
    "register_auth_methods": component(
        '[auth]\nmethods = ["probe"]', lambda c, log: logged(NobodyAuth, log)()
    ),
    "register_llm_providers": component(
        "",
        lambda c, log: logged(OfflineProvider, log)(c.name, OfflineSettings()),
        use_model,
    ),
    "register_tools": component(
        "",
        lambda c, log: logged(StaticToolProvider, log)(function_tools(echo_tool).tools()),
        use_tool,
    ),
    "register_budget_ledgers": component(
        '[budgets]\nbackend = "probe"',
        lambda c, log: logged(MemoryLedger, log)(),
        use_budget_ledger,
    ),
    "register_llm_middleware": component("", llm_middleware, use_llm_middleware),
    "register_tool_middleware": component("", tool_middleware, use_tool_middleware),
    "register_routes": routes,
    "register_commands": commands,
    "on_startup": startup,
    "on_shutdown": shutdown,
    "before_llm_request": before_request,
    "after_llm_response": after_response,
    "check_new_password": new_password,
}
"""How to exercise each hook: a hook spec without an entry here fails its test."""


@pytest.mark.parametrize("hook", sorted(hook_specs()))
async def test_hook_is_called_by_the_machinery(
    hook: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exercise = EXERCISE.get(hook)
    if exercise is None:
        pytest.fail(
            f"the hook {hook!r} is not exercised: add an entry to EXERCISE in "
            "tests/test_hooks_exercised.py"
        )
    home = tmp_path / "home"
    isolate(monkeypatch, home)
    calls: Calls = []
    await exercise(hook, calls, home)
    assert calls, f"the implementation of {hook} was never called"
    documented = documented_types(hook_specs()[hook])
    for call in calls:
        assert sorted(call) == sorted(documented), f"{hook} takes {sorted(documented)}"
        for name, expected in documented.items():
            if expected is not None:
                assert isinstance(call[name], expected), (
                    f"{hook}: {name} is a {type(call[name]).__name__}, documented as "
                    f"{getattr(expected, '__name__', expected)}"
                )


async def test_a_hook_without_an_exercise_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(pytest.fail.Exception, match="add an entry to EXERCISE"):
        await test_hook_is_called_by_the_machinery("register_everything", tmp_path, monkeypatch)


def test_every_exercise_is_for_a_hook() -> None:
    assert sorted(set(EXERCISE) - set(hook_specs())) == [], "EXERCISE entries for no hook"


def test_the_template_is_read_with_its_placeholders_filled(tmp_path: Path) -> None:
    template = tmp_path / "{{cookiecutter.module_name}}.py"
    template.write_text(
        "@hookimpl\nasync def {{ cookiecutter.tool_name }}(): ...\n"
        "@hookimpl\ndef register_tools(register): ...\n"
    )
    assert implemented_hooks(ast.parse(_template_source(template))) == {
        "placeholder",
        "register_tools",
    }
