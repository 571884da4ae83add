"""Plugins: in-test plugins and an installed third-party distribution are discovered, selected by
configuration and used; broken plugins give errors naming them."""

from __future__ import annotations

import json
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from support import RecordingPlugin, run_cli, toml

import hubbub
from hubbub import hookimpl
from hubbub.config import Config, load_config
from hubbub.errors import ConfigError, PluginError
from hubbub.models import Health
from hubbub.plugins import Plugins, load_plugins
from hubbub.runtime import Runtime

BUILT_INS = {"memory_cache", "sqlite_store", "offline_provider", "log_sink", "basic_tools"}


class TallyCache:
    """A real (dict-backed) cache backend that counts its calls."""

    def __init__(self, settings: Any = None) -> None:
        self.settings = settings
        self.calls: list[str] = []
        self.data: dict[str, bytes] = {}

    async def start(self) -> None:
        self.calls.append("start")

    async def health(self) -> Health:
        return Health(detail="tally")

    async def aclose(self) -> None:
        self.calls.append("aclose")

    async def get(self, key: str) -> bytes | None:
        self.calls.append(f"get {key}")
        return self.data.get(key)

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        self.calls.append(f"set {key}")
        self.data[key] = value

    async def delete(self, key: str) -> bool:
        return self.data.pop(key, None) is not None

    async def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        value = int(self.data.get(key, b"0")) + amount
        self.data[key] = str(value).encode()
        return value

    async def add(self, key: str, value: bytes, ttl: float | None = None) -> bool:
        if key in self.data:
            return False
        self.data[key] = value
        return True

    async def compare_and_set(
        self, key: str, expected: bytes, value: bytes | None, ttl: float | None = None
    ) -> bool:
        if self.data.get(key) != expected:
            return False
        if value is None:
            del self.data[key]
        else:
            self.data[key] = value
        return True


class TallySettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    label: str = "plain"


class MinePlugin:
    """Registers cache backend ``mine`` (plugin ``mine``) and remembers what it built."""

    __name__ = "mine"

    def __init__(self) -> None:
        self.built: list[TallyCache] = []

    @hookimpl
    def register_cache_backends(self, register: Any) -> None:
        def build(context: Any) -> TallyCache:
            cache = TallyCache(context.settings)
            self.built.append(cache)
            return cache

        register("mine", build, settings=TallySettings, description="a tally cache")


def module_plugin(name: str, **hooks: Callable[..., Any]) -> types.ModuleType:
    """A plugin module made in the test: each keyword is a hook implementation."""
    module = types.ModuleType(name)
    for hook_name, function in hooks.items():
        setattr(module, hook_name, hookimpl(function))
    return module


# -- plugins defined in the test --------------------------------------------------------------


async def test_in_test_plugin_is_selected_by_config_and_used(
    make_runtime: Callable[..., Runtime],
) -> None:
    plugin = MinePlugin()
    runtime = make_runtime('[cache]\nbackend = "mine"\n[plugins.mine]\nlabel = "fancy"\n', plugin)
    assert runtime.plugins.info["mine"].hooks == ["register_cache_backends"]
    assert runtime.plugins.info["mine"].source == "registered"
    async with runtime:
        await runtime.cache.set("k", b"v")
        assert await runtime.cache.get("k") == b"v"
        (built,) = plugin.built
        assert runtime.cache is built
        assert built.settings == TallySettings(label="fancy")
        health = await runtime.health()
        assert health.components["cache"].backend == "mine"
    assert built.calls == ["start", "set k", "get k", "aclose"]


async def test_unselected_plugin_component_is_not_built(
    make_runtime: Callable[..., Runtime],
) -> None:
    plugin = MinePlugin()
    async with make_runtime("", plugin) as runtime:
        assert "mine" in runtime.plugins.registries()["cache"]
        assert runtime.cache is not None
    assert plugin.built == []


class Typo:
    __name__ = "typo_plugin"

    @hookimpl
    def register_cache_backend(self, register: Any) -> None:
        pass


def test_misspelled_hook_is_an_error_naming_the_plugin() -> None:
    with pytest.raises(PluginError) as caught:
        load_plugins(extra=[Typo()], entry_points=False, env={})
    message = str(caught.value)
    assert message.startswith("plugin 'typo_plugin': ")
    assert "unknown hook 'register_cache_backend'" in message


def test_misspelled_hook_suggests_the_right_hook() -> None:
    with pytest.raises(PluginError) as caught:
        load_plugins(extra=[Typo()], entry_points=False, env={})
    assert str(caught.value).endswith("(did you mean 'register_cache_backends'?)")


def test_misspelled_argument_is_a_plugin_error() -> None:
    plugin = module_plugin("bad_args", register_tools=lambda registr: None)
    plugins = Plugins()
    with pytest.raises(PluginError, match="plugin 'bad_args'"):
        plugins.register(plugin)
    assert plugins.info["bad_args"].error is not None
    assert not plugins.pm.is_registered(plugin)


def test_plugin_raising_in_register_hook_is_named(make_config: Callable[..., Config]) -> None:
    def register_cache_backends(register: Any) -> None:
        raise RuntimeError("the tea is cold")

    plugin = module_plugin("grumpy", register_cache_backends=register_cache_backends)
    with pytest.raises(PluginError) as caught:
        Runtime.from_config(make_config(), extra_plugins=[plugin])
    assert str(caught.value) == (
        "plugin 'grumpy' failed in register_cache_backends: RuntimeError: the tea is cold"
    )


def test_bad_registration_arguments_are_named() -> None:
    plugin = module_plugin(
        "sloppy", register_tools=lambda register: register("has space", lambda c: None)
    )
    plugins = load_plugins(extra=[plugin], entry_points=False, env={})
    with pytest.raises(PluginError, match="plugin 'sloppy' registering tools 'has space'"):
        plugins.registries()


def test_same_name_from_two_plugins_names_both() -> None:
    first = module_plugin(
        "first_plugin", register_cache_backends=lambda register: register("dup", TallyCache)
    )
    second = module_plugin(
        "second_plugin", register_cache_backends=lambda register: register("dup", TallyCache)
    )
    plugins = load_plugins(extra=[first, second], entry_points=False, env={})
    with pytest.raises(PluginError) as caught:
        plugins.registries()
    message = str(caught.value)
    assert "cache 'dup' is registered twice" in message
    assert "'first_plugin'" in message
    assert "'second_plugin'" in message


def test_same_name_as_a_built_in_is_a_conflict(make_config: Callable[..., Config]) -> None:
    clash = module_plugin(
        "clash", register_cache_backends=lambda register: register("memory", TallyCache)
    )
    with pytest.raises(
        PluginError,
        match=r"cache 'memory' is registered twice: by plugin 'clash' and by plugin 'memory_cache'",
    ):
        Runtime.from_config(make_config(), extra_plugins=[clash])


def test_two_plugins_with_one_name_cannot_both_register() -> None:
    plugins = load_plugins(extra=[module_plugin("twin")], entry_points=False, env={})
    with pytest.raises(PluginError, match="plugin 'twin' cannot be registered"):
        plugins.register(module_plugin("twin"))


# -- entry points, allow-list and deny-list ---------------------------------------------------


def registries_of(plugins: Any) -> Any:
    return plugins.registries()


def test_built_ins_come_from_entry_points_of_the_hubbub_distribution() -> None:
    plugins = load_plugins(env={})
    assert set(plugins.info) >= BUILT_INS
    for name in BUILT_INS:
        info = plugins.info[name]
        assert (info.source, info.distribution, info.version) == (
            "built-in",
            "hubbub",
            hubbub.__version__,
        )
        assert info.module == f"hubbub_plugins.{name}"
        assert info.error is None
    assert plugins.info["sqlite_store"].hooks == [
        "register_account_stores",
        "register_memory_stores",
    ]
    assert registries_of(plugins)["accounts"].get("sqlite").plugin == "sqlite_store"
    registries = plugins.registries()
    assert registries["memory"].get("sqlite").plugin == "sqlite_store"
    assert registries["llm"].get("offline").plugin == "offline_provider"


def test_hubbub_load_plugins_limits_loading() -> None:
    plugins = load_plugins(env={"HUBBUB_LOAD_PLUGINS": "memory_cache, log_sink"})
    assert set(plugins.info) == {"memory_cache", "log_sink"}
    assert plugins.registries()["memory"].names() == []


def test_empty_hubbub_load_plugins_loads_no_entry_point() -> None:
    plugins = load_plugins(env={"HUBBUB_LOAD_PLUGINS": ""}, extra=[MinePlugin()])
    assert set(plugins.info) == {"mine"}


def test_disabled_plugins_are_not_loaded() -> None:
    plugins = load_plugins(disabled=["log_sink", "mine"], extra=[MinePlugin()], env={})
    assert "log_sink" not in plugins.info
    assert "mine" not in plugins.info
    assert set(plugins.info) >= BUILT_INS - {"log_sink"}
    assert plugins.pm.is_blocked("log_sink")


def test_disabled_in_config_makes_its_names_unknown(make_config: Callable[..., Config]) -> None:
    config = make_config('[plugins]\ndisabled = ["log_sink"]\n')
    with pytest.raises(ConfigError) as caught:
        Runtime.from_config(config)
    (issue,) = caught.value.issues
    assert issue.path == "events.sinks[0]"
    assert "'log'" in issue.message


async def test_disabled_in_config_with_its_use_removed(
    make_runtime: Callable[..., Runtime],
) -> None:
    runtime = make_runtime('[plugins]\ndisabled = ["log_sink"]\n[events]\nsinks = []\n')
    assert "log_sink" not in runtime.plugins.info
    async with runtime:
        assert "events.log" not in (await runtime.health()).components


# -- an installed third-party distribution ----------------------------------------------------


async def test_installed_distribution_is_discovered_selected_and_used(
    acme_site: Path, monkeypatch: pytest.MonkeyPatch, home: Path
) -> None:
    monkeypatch.syspath_prepend(str(acme_site))
    plugins = load_plugins(env={})
    info = plugins.info["acme"]
    assert (info.source, info.distribution, info.version) == ("acme-hubbub", "acme-hubbub", "1.2.3")
    assert info.hooks == ["register_cache_backends"]
    assert info.describe() == "plugin 'acme' (distribution acme-hubbub 1.2.3)"

    config = load_config(
        text=toml(
            '[cache]\nbackend = "acme"\n[plugins.acme]\nprefix = "x:"\n'
            'api_key = { env = "ACME_KEY" }\n'
        ),
        env={"HUBBUB_HOME": str(home), "ACME_KEY": "acme-secret"},
    )
    async with Runtime.from_config(config, plugins=plugins) as runtime:
        assert type(runtime.cache).__module__ == "acme_hubbub_plugin"
        await runtime.cache.set("k", b"v")
        assert await runtime.cache.get("k") == b"v"
        data = runtime.cache.data  # type: ignore[attr-defined]
        # hubbub's own keys (the sweeper's lease...) share the prefix
        assert {k: v for k, v in data.items() if not k.startswith("x:hubbub:")} == {"x:k": b"v"}
        assert all(key.startswith("x:") for key in data)
        assert runtime.settings["acme"].api_key.reveal() == "acme-secret"
        assert (await runtime.health()).components["cache"].backend == "acme"


def test_installed_distribution_is_listed_by_the_cli(acme_site: Path, tmp_path: Path) -> None:
    result = run_cli(["plugins", "--json"], cwd=tmp_path, pythonpath=acme_site)
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["acme"]["source"] == "acme-hubbub"
    assert rows["acme"]["distribution"] == "acme-hubbub"
    assert rows["acme"]["version"] == "1.2.3"
    assert rows["acme"]["hooks"] == ["register_cache_backends"]
    assert rows["acme"]["provides"] == ["cache:acme"]
    assert rows["memory_cache"]["source"] == "built-in"


def test_broken_distribution_is_reported_and_others_still_load(
    broken_site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(broken_site))
    plugins = load_plugins(env={})
    info = plugins.info["broken"]
    assert info.distribution == "broken-hubbub"
    assert "failed to import acme_broken: ImportError: acme_broken needs libfrobnicate" in (
        info.error or ""
    )
    assert set(plugins.info) >= BUILT_INS
    assert [f.name for f in plugins.failures] == ["broken"]
    with pytest.raises(PluginError) as caught:
        plugins.raise_for_failures()
    assert "plugin 'broken' (distribution broken-hubbub 0.0.1)" in str(caught.value)
    # Disabling it is the way out.
    assert "broken" not in load_plugins(disabled=["broken"], env={}).info


def test_broken_distribution_in_the_cli(broken_site: Path, tmp_path: Path) -> None:
    listed = run_cli(["plugins", "--json"], cwd=tmp_path, pythonpath=broken_site)
    assert listed.returncode == 1
    rows = {row["name"]: row for row in json.loads(listed.stdout)}
    assert set(rows) >= BUILT_INS | {"broken"}
    assert rows["broken"]["distribution"] == "broken-hubbub"
    assert "libfrobnicate" in rows["broken"]["error"]
    assert all(rows[name]["error"] is None for name in BUILT_INS)

    text = run_cli(["plugins"], cwd=tmp_path, pythonpath=broken_site)
    assert "broken 0.0.1 (broken-hubbub)" in text.stdout
    assert "sqlite_store" in text.stdout

    (tmp_path / "hubbub.toml").write_text(toml(""))
    checked = run_cli(["config", "check"], cwd=tmp_path, pythonpath=broken_site)
    assert checked.returncode != 0
    assert "plugin 'broken' (distribution broken-hubbub 0.0.1)" in checked.stderr
    assert "Traceback" not in checked.stderr


def test_entry_point_name_clash_is_reported(
    impostor_site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(impostor_site))
    plugins = load_plugins(env={})
    with pytest.raises(PluginError) as caught:
        plugins.raise_for_failures()
    assert "'log_sink'" in str(caught.value)
    assert "impostor-hubbub" in str(caught.value)


def test_recording_plugin_registers_every_kind() -> None:
    plugins = load_plugins(extra=[RecordingPlugin([])], entry_points=False, env={})
    registries = plugins.registries()
    for kind in ("events", "cache", "memory", "auth", "llm", "tools"):
        assert registries[kind].names() == ["rec"]
    assert registries["routes"].names() == []
