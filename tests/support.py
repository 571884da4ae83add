"""Helpers for the tests: in-test plugins whose real components record what the runtime does to
them, throwaway installed distributions, and running the ``hubbub`` command."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec

from hubbub import hookimpl
from hubbub.contracts import Credentials
from hubbub.models import Health, Principal
from hubbub.tools import StaticToolProvider, function_tools
from hubbub_plugins.log_sink import LogSink, LogSinkSettings
from hubbub_plugins.memory_cache import MemoryCache, MemoryCacheSettings
from hubbub_plugins.offline_provider import OfflineProvider, OfflineSettings
from hubbub_plugins.sqlite_store import SQLiteStore

# Tests enable auth methods explicitly, so they do not depend on which auth plugins exist.
BASE_TOML = "[auth]\nmethods = []\n"

HUBBUB = str(Path(sys.executable).parent / "hubbub")


def toml(text: str) -> str:
    return BASE_TOML + textwrap.dedent(text)


# -- components that record what happens to them -------------------------------------------


class Behaviour(msgspec.Struct, kw_only=True):
    """How a recorded component misbehaves."""

    fail_start: bool = False
    hang_close: bool = False
    hang_health: bool = False
    fail_health: bool = False
    health: Health | None = None


def recorded(base: type, label: str, log: list[str], behaviour: Behaviour | None) -> type:
    """A subclass of the real component ``base`` that appends ``start <label>`` and
    ``stop <label>`` to ``log`` and misbehaves as told."""
    how = behaviour or Behaviour()

    class Recorded(base):  # type: ignore[misc, valid-type]
        async def start(self) -> None:
            log.append(f"start {label}")
            if how.fail_start:
                raise RuntimeError(f"{label} refuses to start")
            await super().start()

        async def aclose(self) -> None:
            log.append(f"stop {label}")
            if how.hang_close:
                await asyncio.sleep(3600)
            await super().aclose()

        async def health(self) -> Health:
            if how.hang_health:
                await asyncio.sleep(3600)
            if how.fail_health:
                raise OSError("socket closed")
            if how.health is not None:
                return how.health
            return await super().health()  # type: ignore[no-any-return]

    Recorded.__name__ = f"Recorded{base.__name__}"
    return Recorded


class NobodyAuth:
    """An auth method that recognises nobody."""

    async def start(self) -> None:
        pass

    async def health(self) -> Health:
        return Health()

    async def aclose(self) -> None:
        pass

    async def authenticate(self, credentials: Credentials) -> Principal | None:
        return None

    async def is_provisioned(self) -> bool:
        return False


async def echo_tool(text: str) -> str:
    """Say ``text`` back."""
    return text


class RecordingPlugin:
    """A plugin named ``name`` that registers one component of every kind under ``name``, each
    recording its start and stop in ``log``. ``behaviour`` maps a kind to how it misbehaves."""

    def __init__(self, log: list[str], name: str = "rec", **behaviour: Behaviour | None) -> None:
        self.__name__ = name
        self.log = log
        self.behaviour = behaviour

    def _build(self, kind: str, base: type, make: Callable[[type, Any], Any]) -> Callable[..., Any]:
        def factory(context: Any) -> Any:
            return make(recorded(base, kind, self.log, self.behaviour.get(kind)), context)

        return factory

    @hookimpl
    def register_event_sinks(self, register: Any) -> None:
        register(self.__name__, self._build("sink", LogSink, lambda c, _: c(LogSinkSettings())))

    @hookimpl
    def register_cache_backends(self, register: Any) -> None:
        register(
            self.__name__,
            self._build("cache", MemoryCache, lambda c, _: c(MemoryCacheSettings())),
        )

    @hookimpl
    def register_memory_stores(self, register: Any) -> None:
        register(
            self.__name__,
            self._build(
                "memory", SQLiteStore, lambda c, ctx: c(str(ctx.data_dir / f"{ctx.name}.sqlite3"))
            ),
        )

    @hookimpl
    def register_auth_methods(self, register: Any) -> None:
        register(self.__name__, self._build("auth", NobodyAuth, lambda c, _: c()))

    @hookimpl
    def register_llm_providers(self, register: Any) -> None:
        register(
            self.__name__,
            self._build("llm", OfflineProvider, lambda c, ctx: c(ctx.name, OfflineSettings())),
        )

    @hookimpl
    def register_tools(self, register: Any) -> None:
        register(
            self.__name__,
            self._build(
                "tools",
                StaticToolProvider,
                lambda c, _: c(function_tools(echo_tool).tools()),
            ),
        )


def recording_toml(name: str = "rec", **extra_sections: str) -> str:
    """Configuration selecting every component of :class:`RecordingPlugin` ``name``."""
    return toml(
        f"""
        [events]
        sinks = ["{name}"]
        [cache]
        backend = "{name}"
        [memory]
        backend = "{name}"
        [llm]
        providers = ["{name}"]
        default_model = "{name}/echo"
        [tools]
        providers = ["{name}"]
        """
    ).replace("methods = []", f'methods = ["{name}"]')


# -- throwaway distributions and the CLI ------------------------------------------------------


def install_distribution(
    root: Path, name: str, version: str, modules: dict[str, str], entry_points: dict[str, str]
) -> Path:
    """Build the project ``name`` (``modules``: module name -> source; ``entry_points``: entry
    point name -> module) under ``root`` and install it into ``root / "site"`` the way an
    installer does (``uv pip install --target``); returns the directory to put on the path."""
    project = root / "project"
    project.mkdir(parents=True)
    for module, source in modules.items():
        (project / f"{module}.py").write_text(textwrap.dedent(source))
    points = "\n".join(f'{ep} = "{module}"' for ep, module in entry_points.items())
    (project / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""
            [build-system]
            requires = ["hatchling"]
            build-backend = "hatchling.build"

            [project]
            name = "{name}"
            version = "{version}"

            [project.entry-points.hubbub]
            """
        )
        + points
        + "\n\n[tool.hatch.build.targets.wheel]\nonly-include = ["
        + ", ".join(f'"{m}.py"' for m in modules)
        + "]\n"
    )
    site = root / "site"
    uv = shutil.which("uv")
    if uv is not None:
        result = subprocess.run(
            [
                uv,
                "pip",
                "install",
                "--quiet",
                "--no-deps",
                "--python",
                sys.executable,
                "--target",
                str(site),
                str(project),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode == 0:
            return site
    # No uv (or no index to fetch hatchling from): write what an installer writes.
    site.mkdir(exist_ok=True)
    for module, source in modules.items():
        (site / f"{module}.py").write_text(textwrap.dedent(source))
    dist_info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    )
    (dist_info / "entry_points.txt").write_text(
        "[hubbub]\n" + "\n".join(f"{ep} = {m}" for ep, m in entry_points.items()) + "\n"
    )
    return site


ACME_MODULE = '''
"""A third-party plugin: cache backend ``acme`` with settings, including a secret."""
import msgspec

from hubbub import hookimpl
from hubbub.config import Secret
from hubbub.models import Health


class AcmeSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    prefix: str = "acme:"
    api_key: Secret | None = None


class AcmeCache:
    def __init__(self, settings):
        self.settings = settings
        self.data = {}

    async def start(self):
        pass

    async def health(self):
        return Health(detail="acme cache")

    async def aclose(self):
        self.data.clear()

    async def get(self, key):
        return self.data.get(self.settings.prefix + key)

    async def set(self, key, value, ttl=None):
        self.data[self.settings.prefix + key] = value

    async def delete(self, key):
        return self.data.pop(self.settings.prefix + key, None) is not None

    async def incr(self, key, amount=1, ttl=None):
        value = int(self.data.get(self.settings.prefix + key, b"0")) + amount
        self.data[self.settings.prefix + key] = str(value).encode()
        return value

    async def add(self, key, value, ttl=None):
        if self.settings.prefix + key in self.data:
            return False
        self.data[self.settings.prefix + key] = value
        return True

    async def compare_and_set(self, key, expected, value, ttl=None):
        if self.data.get(self.settings.prefix + key) != expected:
            return False
        if value is None:
            del self.data[self.settings.prefix + key]
        else:
            self.data[self.settings.prefix + key] = value
        return True


@hookimpl
def register_cache_backends(register):
    register("acme", lambda context: AcmeCache(context.settings), settings=AcmeSettings)
'''

BROKEN_MODULE = """
raise ImportError("acme_broken needs libfrobnicate, which is not installed")
"""


def run_cli(
    args: Sequence[str],
    *,
    cwd: Path,
    env: dict[str, str] | None = None,
    pythonpath: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the installed ``hubbub`` console script in ``cwd`` with a clean ``HUBBUB_*``
    environment (``HUBBUB_HOME`` inside ``cwd``)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("HUBBUB_")}
    environ.pop("PYTHONPATH", None)
    environ["HUBBUB_HOME"] = str(cwd / "home")
    if pythonpath is not None:
        environ["PYTHONPATH"] = str(pythonpath)
    environ.update(env or {})
    return subprocess.run(
        [HUBBUB, *args], cwd=cwd, env=environ, capture_output=True, text=True, timeout=60
    )


def keyring_toml(directory: Path) -> str:
    """A ``[sessions]`` table naming a signing keyring made in ``directory`` (once): what
    servers whose account store is shared (PostgreSQL, Redis) must be given, since only the
    one-host SQLite store gets one generated."""
    from hubbub.auth.keyfiles import write_keyring
    from hubbub.auth.tokens import Keyring

    path = directory / "signing-keys.shared.json"
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        write_keyring(path, Keyring.generate(), replace=False)
    return f'\n[sessions]\nsigning_keys = "{path}"\n'
