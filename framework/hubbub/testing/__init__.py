"""Test helpers for plugin authors, loaded by pytest automatically (entry point ``pytest11``).

A test loads only the plugins it names: hubbub's built-in ones by default, never a third-party
plugin that merely happens to be installed. Fixtures (async ones need pytest-asyncio:
``pip install 'hubbub[testing]'``):

* ``hubbub_config``: a :class:`~hubbub.config.Config` whose data directory is the test's
  ``tmp_path``. Change it in your test or override the fixture.
* ``hubbub_plugins``: the entry points to load, by name (default :func:`builtin_plugins`).
  Override it to add yours: ``return [*builtin_plugins(), "my_plugin"]``.
* ``hubbub_extra_plugins``: plugin objects to register as well (default none).
* ``hubbub_fake_llm``: a :class:`FakeLLM` whose replies the test scripts; asking for it adds it
  to ``hubbub_runtime`` and makes its model the default one.
* ``hubbub_runtime``: a started :class:`~hubbub.runtime.Runtime` built from those; stopped
  after the test.

Plain helpers: :func:`config_for`, :func:`plugins_for`, :func:`runtime_for` (an async context
manager, for tests that build several runtimes) and :func:`principal`. The reference server adds
a ``hubbub_client`` fixture in :mod:`hubbub_server.testing`::

    @pytest.fixture
    def hubbub_plugins():
        return [*builtin_plugins(), "my_plugin"]

    async def test_my_tool(hubbub_runtime):
        assert "my_tool" in [spec.name for spec in hubbub_runtime.tools.specs()]

A scripted model, :class:`FakeLLM`, answers with the steps the test gives it: :func:`reply`,
:func:`tool_call`, :func:`error` and :func:`delay`::

    async def test_the_model_calls_my_tool(hubbub_runtime, hubbub_fake_llm):
        hubbub_fake_llm.script(tool_call("my_tool", {"x": 1}), reply("Done."))
        ...
        assert hubbub_fake_llm.requests[1].messages[-1].role == "tool"
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import inspect
import re
import tomllib
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeAlias

import msgspec
import pytest

from hubbub import errors, hookimpl
from hubbub.config import Config, LLMConfig, load_config
from hubbub.errors import HubbubError, PluginError, ProviderError, did_you_mean
from hubbub.events import EventBus
from hubbub.models import (
    ChatChunk,
    ChatRequest,
    ChatResponse,
    Health,
    ModelInfo,
    Principal,
    ToolCall,
    Usage,
    new_id,
)
from hubbub.plugins import BUILTIN_DISTRIBUTION, ENTRY_POINT_GROUP, Plugins, load_plugins
from hubbub.registry import ComponentContext, Registrar
from hubbub.runtime import Runtime
from hubbub.services import SharedResources, Tasks
from hubbub.testing.accounts import AccountStoreContract
from hubbub.testing.stores import MemoryStoreContract

__all__ = [
    "AccountStoreContract",
    "Delay",
    "Fail",
    "FakeLLM",
    "MemoryStoreContract",
    "Reply",
    "ScriptExhausted",
    "Step",
    "builtin_plugins",
    "config_for",
    "context_for",
    "delay",
    "error",
    "fixture_needs",
    "plugins_for",
    "principal",
    "reply",
    "runtime_for",
    "tool_call",
]

_FIXTURE_PLUGINS: dict[str, tuple[str, ...]] = {}
"""Entry points a fixture needs besides those the test names (see :func:`fixture_needs`)."""


def fixture_needs(fixture: str, *plugins: str) -> None:
    """Declare that tests using ``fixture`` need the entry points ``plugins`` loaded into
    ``hubbub_runtime`` besides the ones they name: the reference server's testing module says
    ``fixture_needs("hubbub_client", "server")``, since its client serves an app."""
    known = _FIXTURE_PLUGINS.get(fixture, ())
    _FIXTURE_PLUGINS[fixture] = (*known, *(p for p in plugins if p not in known))


def config_for(home: Path, toml: str = "", env: Mapping[str, str] | None = None) -> Config:
    """A configuration from ``toml`` text with its data directory at ``home``; environment
    overrides come from ``env`` only (never from the real environment).

    Unless ``toml`` sets ``[llm] retries``, failed LLM calls are not retried (``retries =
    0``), so that each step of a :class:`FakeLLM` script answers exactly one call."""
    defaults = {"HUBBUB_HOME": str(home)}
    if "retries" not in tomllib.loads(toml).get("llm", {}):
        defaults["HUBBUB_LLM__RETRIES"] = "0"
    return load_config(text=toml, env={**defaults, **(env or {})})


def context_for(
    config: Config,
    *,
    kind: str = "cache",
    name: str = "test",
    plugin: str = "test",
    settings: Any = None,
) -> ComponentContext[Any]:
    """A :class:`~hubbub.registry.ComponentContext` to call a factory with outside a runtime
    (a unit test of the factory). Close ``context.tasks`` and ``context.resources`` after it:
    ``await context.tasks.aclose(); await context.resources.release_all()``."""
    label = f"{kind}.{name}"
    return ComponentContext(
        name=name,
        kind=kind,
        plugin=plugin,
        settings=settings,
        config=config,
        data_dir=config.data_dir,
        tasks=Tasks(label),
        resources=SharedResources().for_user(label),
        events=EventBus(),
    )


def principal(name: str = "tester", *roles: str) -> Principal:
    """A principal to act as in tests."""
    return Principal(id=name, name=name, roles=frozenset(roles), auth_method="test")


def _entry_points() -> list[importlib.metadata.EntryPoint]:
    return list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))


def builtin_plugins() -> list[str]:
    """The entry-point names of hubbub's own plugins (those its distribution declares), sorted:
    what the fixtures load unless a test names others."""
    return sorted(
        {
            entry_point.name
            for entry_point in _entry_points()
            if entry_point.dist is not None
            and entry_point.dist.metadata["Name"] == BUILTIN_DISTRIBUTION
        }
    )


def plugins_for(
    config: Config, names: Iterable[str] | None = None, extra: Iterable[object] = ()
) -> Plugins:
    """Load the entry points ``names`` (default :func:`builtin_plugins`), minus ``[plugins]
    disabled``, then the plugin objects ``extra``; no other installed plugin.

    Raises :class:`~hubbub.errors.PluginError` for a name no installed distribution declares
    (a typo, or a plugin that is not installed)."""
    wanted = builtin_plugins() if names is None else list(dict.fromkeys(names))
    plugins = load_plugins(
        disabled=config.plugins.disabled, extra=extra, only=wanted, env=config.env
    )
    disabled = set(config.plugins.disabled)
    missing = [name for name in wanted if name not in plugins.info and name not in disabled]
    if missing:
        installed = sorted({entry_point.name for entry_point in _entry_points()})
        raise PluginError(
            "; ".join(
                f"no installed distribution declares the plugin {name!r}"
                + did_you_mean(name, installed)
                for name in missing
            )
            + " (install it, e.g. pip install -e ., or fix the name)"
        )
    return plugins


@contextlib.asynccontextmanager
async def runtime_for(
    config: Config, extra_plugins: Iterable[object] = (), *, plugins: Iterable[str] | None = None
) -> AsyncIterator[Runtime]:
    """Build and start a runtime with the entry points named in ``plugins`` (default
    :func:`builtin_plugins`) plus the plugin objects ``extra_plugins``; stop it on exit."""
    loaded = plugins_for(config, plugins, extra_plugins)
    async with Runtime.from_config(config, plugins=loaded) as runtime:
        yield runtime


# -- the fake LLM ----------------------------------------------------------------------------

_PIECES = re.compile(r"\s*\S+|\s+$")


class Reply(msgspec.Struct, frozen=True, kw_only=True):
    """A scripted answer: its text streamed in chunks, then its tool calls."""

    chunks: tuple[str, ...] = ()
    """The text, as the stream delivers it."""
    tool_calls: tuple[ToolCall, ...] = ()
    """Tools the model asks for after the text."""
    delay: float = 0.0
    """Seconds to wait before each chunk of a stream."""
    usage: Usage | None = None
    """What the reply reports it cost; ``None``: words counted, cost zero."""
    finish_reason: str | None = None
    """``None``: ``tool_calls`` when there are some, else ``stop``."""

    @property
    def text(self) -> str:
        """The whole text."""
        return "".join(self.chunks)


class Fail(msgspec.Struct, frozen=True, kw_only=True):
    """A scripted failure: the provider raises ``error`` (a stream after ``partial``)."""

    error: Exception
    """What the provider raises; the LLM client turns anything but a
    :class:`~hubbub.errors.HubbubError` into :class:`~hubbub.errors.ProviderError`."""
    partial: tuple[str, ...] = ()
    """Chunks a stream delivers before failing."""


class Delay(msgspec.Struct, frozen=True, kw_only=True):
    """A scripted pause before the next step's output."""

    seconds: float
    """How long the provider waits."""


Step: TypeAlias = Reply | Fail | Delay | Callable[[ChatRequest], Reply | Fail | Delay]
"""One entry of a :class:`FakeLLM`'s script; a function of the request computes the step when
the request arrives."""


def _pieces(text: str) -> tuple[str, ...]:
    return tuple(_PIECES.findall(text))


def reply(
    text: str = "",
    *,
    chunks: Sequence[str] | None = None,
    tool_calls: Sequence[ToolCall] = (),
    delay: float = 0.0,
    usage: Usage | None = None,
    finish_reason: str | None = None,
) -> Reply:
    """The model answers ``text``, streamed word by word unless ``chunks`` (which must join to
    ``text``, or give it) split it otherwise, waiting ``delay`` seconds before each chunk."""
    if chunks is None:
        parts = _pieces(text)
    else:
        parts = tuple(chunks)
        if text and "".join(parts) != text:
            raise ValueError(f"the chunks {parts!r} do not join to the text {text!r}")
    return Reply(
        chunks=parts,
        tool_calls=tuple(tool_calls),
        delay=delay,
        usage=usage,
        finish_reason=finish_reason,
    )


def tool_call(
    name: str,
    arguments: Mapping[str, Any] | str | None = None,
    *,
    call_id: str | None = None,
    text: str = "",
) -> Reply:
    """The model asks for the tool ``name`` with ``arguments`` (a mapping, or JSON text as the
    model wrote it, valid or not), after saying ``text``; the engine runs the tool and asks the
    model again."""
    if arguments is None or isinstance(arguments, str):
        encoded = arguments or "{}"
    else:
        encoded = msgspec.json.encode(dict(arguments)).decode()
    call = ToolCall(id=call_id or new_id("call_"), name=name, arguments=encoded)
    return reply(text, tool_calls=[call])


def _error_classes() -> dict[str, type[HubbubError]]:
    """The errors of :mod:`hubbub.errors` that take a message alone, by ``code``."""
    return {
        value.code: value
        for value in vars(errors).values()
        if inspect.isclass(value)
        and issubclass(value, HubbubError)
        and value is not errors.ConfigError  # built from issues, not a message
    }


def error(
    failure: Exception | type[Exception] | str, message: str = "", *, partial: str = ""
) -> Fail:
    """The provider fails with ``failure``: an exception, an exception class (given
    ``message``), or the ``code`` of a :mod:`hubbub.errors` class (``provider_timeout``,
    ``model_not_found``...). A stream delivers ``partial`` first."""
    exception: Exception
    if isinstance(failure, str):
        classes = _error_classes()
        if failure not in classes:
            raise ValueError(
                f"no hubbub error has the code {failure!r}{did_you_mean(failure, classes)} "
                f"(known: {', '.join(sorted(classes))})"
            )
        exception = classes[failure](message or f"fake LLM error ({failure})")
    elif isinstance(failure, type):
        exception = failure(message or "fake LLM error")
    else:
        exception = failure
    return Fail(error=exception, partial=_pieces(partial))


def delay(seconds: float) -> Delay:
    """The provider waits ``seconds`` before the next step's output (past ``[llm]
    request_timeout``, the request fails with :class:`~hubbub.errors.ProviderTimeoutError`)."""
    return Delay(seconds=seconds)


class ScriptExhausted(ProviderError, AssertionError):
    """A :class:`FakeLLM` received a request its script has no step for. An
    :class:`AssertionError` for pytest, a :class:`~hubbub.errors.ProviderError` for hubbub (so
    it reaches the test unchanged)."""

    code = "fake_llm_script_exhausted"


def _words(text: str) -> int:
    return len(text.split())


class FakeLLM:
    """A fake LLM provider for tests, and the plugin that registers it: the provider
    ``fake`` serving ``fake/model``, whose replies are the steps of a script, one request at a
    time, in order.

    Each request consumes :func:`delay` steps (waiting) up to and including one :func:`reply`,
    :func:`tool_call` or :func:`error` step. Every request is recorded in :attr:`requests`; one
    that finds the script exhausted raises :class:`ScriptExhausted`. Register it like any plugin
    object (``hubbub_extra_plugins``, ``runtime_for(config, [fake])``) or use the
    ``hubbub_fake_llm`` fixture.
    """

    def __init__(
        self, *steps: Step, name: str = "fake", models: Sequence[str] = ("model",)
    ) -> None:
        """Script ``steps``; serve ``<name>/<model>`` for each of ``models``."""
        self.__name__ = f"{name}_llm"
        """The plugin's name."""
        self.name = name
        """The provider's registered name."""
        self.models = [f"{name}/{model}" for model in models]
        """The model ids served."""
        self.requests: list[ChatRequest] = []
        """Every request received, in order (copies, as they arrived)."""
        self._script: deque[Step] = deque(steps)
        self._scripted = len(steps)

    @property
    def model(self) -> str:
        """The first model id (``fake/model``)."""
        return self.models[0]

    @property
    def pending(self) -> list[Step]:
        """The steps not used yet."""
        return list(self._script)

    def script(self, *steps: Step) -> FakeLLM:
        """Append ``steps`` to the script; returns the fake."""
        self._script.extend(steps)
        self._scripted += len(steps)
        return self

    @hookimpl
    def register_llm_providers(self, register: Registrar) -> None:
        """Register this fake as the provider :attr:`name`."""

        def build(context: ComponentContext[Any]) -> FakeLLM:
            return self

        register(self.name, build, description="fake LLM for tests: scripted replies")

    # -- the LLMProvider contract --------------------------------------------------------------

    async def start(self) -> None:
        """Nothing to acquire."""

    async def health(self) -> Health:
        """Always ok; says how much script is left."""
        return Health(detail=f"fake LLM for tests; {len(self._script)} scripted steps left")

    async def aclose(self) -> None:
        """Nothing to release."""

    async def list_models(self) -> Sequence[ModelInfo]:
        """:attr:`models`, each able to call tools."""
        return [
            ModelInfo(
                id=model,
                provider=self.name,
                supports_tools=True,
                description="Fake model for tests: its replies are scripted.",
            )
            for model in self.models
        ]

    async def complete(self, request: ChatRequest) -> ChatResponse:
        """The next scripted reply, whole."""
        step = await self._next(request)
        if isinstance(step, Fail):
            raise step.error
        return ChatResponse.of(
            request.model,
            step.text,
            list(step.tool_calls) or None,
            self._usage(request, step),
            step.finish_reason,
        )

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        """The next scripted reply, chunk by chunk; the last chunk has ``finish_reason``."""
        step = await self._next(request)
        for chunk in step.partial if isinstance(step, Fail) else step.chunks:
            if isinstance(step, Reply) and step.delay:
                await asyncio.sleep(step.delay)
            yield ChatChunk(delta=chunk)
        if isinstance(step, Fail):
            raise step.error
        if step.tool_calls:
            yield ChatChunk(tool_calls=list(step.tool_calls))
        yield ChatChunk(
            finish_reason=step.finish_reason or ("tool_calls" if step.tool_calls else "stop"),
            usage=self._usage(request, step),
        )

    # -- the script ------------------------------------------------------------------------------

    async def _next(self, request: ChatRequest) -> Reply | Fail:
        self.requests.append(
            msgspec.structs.replace(
                request, messages=list(request.messages), metadata=dict(request.metadata)
            )
        )
        while self._script:
            step = self._script.popleft()
            if callable(step):
                step = step(request)
            if not isinstance(step, Delay):
                return step
            await asyncio.sleep(step.seconds)
        raise ScriptExhausted(self._exhausted(request))

    def _exhausted(self, request: ChatRequest) -> str:
        last = request.messages[-1] if request.messages else None
        said = f"{last.role} {last.content[:60]!r}" if last is not None else "none"
        return (
            f"the fake LLM got request {len(self.requests)} (model {request.model!r}, last "
            f"message: {said}) but its script has no step left ({self._scripted} scripted); "
            "expected another reply(...), tool_call(...) or error(...): add it with "
            "fake.script(...)"
        )

    def _usage(self, request: ChatRequest, step: Reply) -> Usage:
        if step.usage is not None:
            return step.usage
        prompt = sum(_words(message.content) for message in request.messages)
        completion = _words(step.text) + sum(_words(call.arguments) + 1 for call in step.tool_calls)
        return Usage(
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=prompt + completion,
            cost=Decimal(0),
        )


def _with_fake(config: Config, fake: FakeLLM) -> Config:
    """``config`` with ``fake`` among the LLM providers and its model the default (unless the
    configuration chose another default)."""
    llm = config.llm
    default = fake.model if llm.default_model == LLMConfig().default_model else llm.default_model
    providers = llm.providers
    if providers is not None and fake.name not in providers:
        providers = [*providers, fake.name]
    llm = msgspec.structs.replace(llm, default_model=default, providers=providers)
    return msgspec.structs.replace(config, llm=llm)


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture
def hubbub_config(tmp_path: Path) -> Config:
    """Default configuration with the data directory in ``tmp_path``."""
    return config_for(tmp_path)


@pytest.fixture
def hubbub_plugins() -> list[str]:
    """Entry points to load, by name: hubbub's built-in plugins."""
    return builtin_plugins()


@pytest.fixture
def hubbub_extra_plugins() -> list[object]:
    """Plugin objects to register besides the named entry points."""
    return []


@pytest.fixture
def hubbub_fake_llm() -> FakeLLM:
    """A :class:`FakeLLM` with an empty script; ``hubbub_runtime`` serves it, as the default
    model unless ``hubbub_config`` chose another."""
    return FakeLLM()


try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - the async fixtures need pytest-asyncio
    pytest_asyncio = None  # type: ignore[assignment]

if pytest_asyncio is not None:

    @pytest_asyncio.fixture
    async def hubbub_runtime(
        request: pytest.FixtureRequest,
        hubbub_config: Config,
        hubbub_plugins: list[str],
        hubbub_extra_plugins: list[object],
    ) -> AsyncIterator[Runtime]:
        """A started runtime with only the named plugins, stopped after the test."""
        config, names, extra = hubbub_config, list(hubbub_plugins), list(hubbub_extra_plugins)
        if "hubbub_fake_llm" in request.fixturenames:
            fake: FakeLLM = request.getfixturevalue("hubbub_fake_llm")
            config = _with_fake(config, fake)
            if fake not in extra:
                extra.append(fake)
        for fixture, needed in _FIXTURE_PLUGINS.items():
            if fixture in request.fixturenames:
                names += [name for name in needed if name not in names]
        async with runtime_for(config, extra, plugins=names) as runtime:
            yield runtime

else:  # pragma: no cover

    @pytest.fixture
    def hubbub_runtime() -> Any:
        """Needs pytest-asyncio."""
        raise RuntimeError(
            "the hubbub_runtime fixture needs pytest-asyncio: pip install 'hubbub[testing]'"
        )
