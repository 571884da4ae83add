"""The kinds table: everything about a kind of component is declared once (hubbub.kinds), and
registration checks, configuration checks, start order, health and ``hubbub plugins`` follow."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Protocol

import pytest

from hubbub import hookimpl
from hubbub.contracts import AuthMethod, CacheBackend, Component, RedirectAuthMethod
from hubbub.errors import ComponentError
from hubbub.kinds import KINDS, KindSpec, Member, protocol_members
from hubbub.models import Health
from hubbub.plugins import load_plugins
from hubbub.registry import Registration, check_component
from hubbub.runtime import Runtime
from hubbub.runtime.stages import stages
from hubbub.testing import config_for


class BudgetStore(Component, Protocol):
    """A kind the core does not know: budgets kept somewhere."""

    async def spend(self, who: str, tokens: int) -> int:
        """Add ``tokens`` to ``who``'s spending; return the total."""


BUDGETS = KindSpec(
    "budgets",
    "register_budget_stores",
    BudgetStore,
    "budget store",
    "all",
    stage=25,  # after the cache, before the memory store
    description="Where spending is counted.",
)


class Budgets:
    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.spent: dict[str, int] = {}

    async def start(self) -> None:
        self.log.append("start budgets")

    async def health(self) -> Health:
        return Health(detail=f"{len(self.spent)} spenders")

    async def aclose(self) -> None:
        self.log.append("stop budgets")

    async def spend(self, who: str, tokens: int) -> int:
        self.spent[who] = self.spent.get(who, 0) + tokens
        return self.spent[who]


class BudgetPlugin:
    __name__ = "budget_plugin"

    def __init__(self, log: list[str]) -> None:
        self.log = log

    @hookimpl
    def register_budget_stores(self, register: Any) -> None:
        register("counted", lambda context: Budgets(self.log), description="in memory")

    @hookimpl
    def register_cache_backends(self, register: Any) -> None:
        log = self.log

        class Cache:
            async def start(self) -> None:
                log.append("start cache")

            async def health(self) -> Health:
                return Health()

            async def aclose(self) -> None:
                log.append("stop cache")

            async def get(self, key: str) -> bytes | None:
                return None

            async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
                return None

            async def delete(self, key: str) -> bool:
                return False

            async def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
                return amount

            async def add(self, key: str, value: bytes, ttl: float | None = None) -> bool:
                return True

            async def compare_and_set(
                self, key: str, expected: bytes, value: bytes | None, ttl: float | None = None
            ) -> bool:
                return True

        register("logged", lambda context: Cache())


async def test_a_kind_added_in_one_place_is_registered_checked_started_and_reported(
    tmp_path: Path,
) -> None:
    log: list[str] = []
    kinds = (*KINDS, BUDGETS)
    plugins = load_plugins(
        entry_points=True, only=[], extra=[BudgetPlugin(log)], kinds=kinds, env={}
    )
    # the hook exists (declared from the table) and the plugin's implementation was accepted
    assert "register_budget_stores" in plugins.info["budget_plugin"].hooks
    assert plugins.registries()["budgets"].names() == ["counted"]

    config = config_for(tmp_path, '[cache]\nbackend = "logged"\n')
    # start order: cache (20) < budgets (25) < memory (30)
    names = [stage.name for stage in stages(kinds)]
    assert names.index("cache components") < names.index("budgets components")
    assert names.index("budgets components") < names.index("memory components")

    runtime = Runtime(config, plugins, {})
    with pytest.raises(ComponentError, match="no memory store is registered as 'sqlite'"):
        await runtime.start()  # no memory store loaded: startup stops there and unwinds
    assert log == ["start cache", "start budgets", "stop budgets", "stop cache"]


async def test_a_new_kind_serves_and_reports_health(tmp_path: Path) -> None:
    log: list[str] = []
    kinds = (*KINDS, BUDGETS)
    plugins = load_plugins(
        only=["offline_provider", "sqlite_store", "memory_cache"],
        extra=[BudgetPlugin(log)],
        kinds=kinds,
        env={},
    )
    config = config_for(tmp_path, "[events]\nsinks = []\n[auth]\nmethods = []\n")
    async with Runtime.from_config(config, plugins=plugins) as runtime:
        budgets = runtime.components("budgets")["counted"]
        assert await budgets.spend("ada", 5) == 5
        health = await runtime.health()
    assert health.components["budgets.counted"].status == "ok"
    assert health.components["budgets.counted"].detail == "1 spenders"
    assert health.components["budgets.counted"].backend == "counted"


def test_registration_check_reads_the_protocol() -> None:
    members = {m.name: m.form for m in protocol_members(CacheBackend)}
    assert members == {
        "start": "coroutine",
        "health": "coroutine",
        "aclose": "coroutine",
        "get": "coroutine",
        "set": "coroutine",
        "delete": "coroutine",
        "incr": "coroutine",
        "add": "coroutine",
        "compare_and_set": "coroutine",
    }
    assert Member("spend", "coroutine") in protocol_members(BudgetStore)

    class Half:
        async def start(self) -> None: ...
        async def health(self) -> Health: ...
        def aclose(self) -> None: ...  # not async

    registration = Registration(kind="budgets", name="half", factory=Half, plugin="p")
    with pytest.raises(ComponentError) as caught:
        check_component(BUDGETS, registration, Half())
    message = str(caught.value)
    assert "does not satisfy BudgetStore" in message
    assert "aclose() must be async" in message
    assert "spend() is missing" in message


def test_a_redirect_auth_method_must_be_whole() -> None:
    auth = next(spec for spec in KINDS if spec.name == "auth")
    assert RedirectAuthMethod in auth.variants
    assert auth.protocol is AuthMethod

    class HalfRedirect:
        async def start(self) -> None: ...
        async def health(self) -> Health: ...
        async def aclose(self) -> None: ...
        async def authenticate(self, credentials: Any) -> None: ...
        async def is_provisioned(self) -> bool: ...
        async def login_url(self, attempt: Any) -> str: ...

    registration = Registration(kind="auth", name="sso", factory=HalfRedirect, plugin="p")
    with pytest.raises(ComponentError, match=r"complete_login\(\) is missing \(for Redire"):
        check_component(auth, registration, HalfRedirect())


def test_every_kind_has_its_hook_spec_and_docs() -> None:
    from hubbub import hookspecs

    for spec in KINDS:
        assert hasattr(hookspecs, spec.hook), f"{spec.hook} has no hook spec"
        assert spec.description, f"kind {spec.name} has no description"
    assert [s.stage for s in KINDS if s.managed] == sorted(s.stage for s in KINDS if s.managed)


def test_plugin_logger_is_named_for_the_plugin(tmp_path: Path) -> None:
    plugins = load_plugins(only=[], extra=[BudgetPlugin([])], kinds=(*KINDS, BUDGETS), env={})
    runtime = Runtime(config_for(tmp_path), plugins, {})
    registration = plugins.registries()["budgets"].get("counted")
    assert registration is not None
    context = runtime.context(registration)
    assert context.logger is logging.getLogger("hubbub.plugins.budget_plugin")
    assert context.kind == "budgets"
