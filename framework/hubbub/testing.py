"""Test helpers for plugin authors, loaded by pytest automatically (entry point ``pytest11``).

Fixtures (async ones need pytest-asyncio: ``pip install 'hubbub[testing]'``):

* ``hubbub_config``: a :class:`~hubbub.config.Config` whose data directory is the test's
  ``tmp_path``. Change it in your test or override the fixture.
* ``hubbub_extra_plugins``: plugin objects to register besides the installed ones (default none);
  override it in a ``conftest.py`` or per module.
* ``hubbub_runtime``: a started :class:`~hubbub.runtime.Runtime` built from those two; stopped
  after the test.

Plain helpers: :func:`config_for`, :func:`runtime_for` (an async context manager, for tests
that build several runtimes) and :func:`principal`. The reference server adds a
``hubbub_client`` fixture in :mod:`hubbub_server.testing`::

    async def test_my_tool(hubbub_runtime):
        assert "my_tool" in [spec.name for spec in hubbub_runtime.tools.specs()]
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest

from hubbub.config import Config, load_config
from hubbub.models import Principal
from hubbub.plugins import load_plugins
from hubbub.runtime import Runtime

__all__ = ["config_for", "principal", "runtime_for"]


def config_for(home: Path, toml: str = "", env: Mapping[str, str] | None = None) -> Config:
    """A configuration from ``toml`` text with its data directory at ``home``; environment
    overrides come from ``env`` only (never from the real environment)."""
    return load_config(text=toml, env={"HUBBUB_HOME": str(home), **(env or {})})


def principal(name: str = "tester", *roles: str) -> Principal:
    """A principal to act as in tests."""
    return Principal(id=name, name=name, roles=frozenset(roles), auth_method="test")


@contextlib.asynccontextmanager
async def runtime_for(
    config: Config, extra_plugins: Iterable[object] = ()
) -> AsyncIterator[Runtime]:
    """Build and start a runtime with the installed plugins plus ``extra_plugins``; stop it on
    exit."""
    plugins = load_plugins(disabled=config.plugins.disabled, extra=extra_plugins)
    async with Runtime.from_config(config, plugins=plugins) as runtime:
        yield runtime


@pytest.fixture
def hubbub_config(tmp_path: Path) -> Config:
    """Default configuration with the data directory in ``tmp_path``."""
    return config_for(tmp_path)


@pytest.fixture
def hubbub_extra_plugins() -> list[object]:
    """Plugin objects registered in addition to the installed ones."""
    return []


try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - the async fixtures need pytest-asyncio
    pytest_asyncio = None  # type: ignore[assignment]

if pytest_asyncio is not None:

    @pytest_asyncio.fixture
    async def hubbub_runtime(
        hubbub_config: Config, hubbub_extra_plugins: list[object]
    ) -> AsyncIterator[Runtime]:
        """A started runtime, stopped after the test."""
        async with runtime_for(hubbub_config, hubbub_extra_plugins) as runtime:
            yield runtime

else:  # pragma: no cover

    @pytest.fixture
    def hubbub_runtime() -> Any:
        """Needs pytest-asyncio."""
        raise RuntimeError(
            "the hubbub_runtime fixture needs pytest-asyncio: pip install 'hubbub[testing]'"
        )
