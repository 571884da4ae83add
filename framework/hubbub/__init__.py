"""Hubbub: a plugin-based framework for conversational LLM back ends.

The names most programs need are importable from here; everything else lives in a module named
for what it does (:mod:`hubbub.hookspecs`, :mod:`hubbub.contracts`, :mod:`hubbub.models`...).
Importing hubbub is cheap: heavy libraries load only when a component that needs them is built.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from hubbub.hookspecs import hookimpl

if TYPE_CHECKING:
    from hubbub.config import Config, load_config
    from hubbub.plugins import load_plugins
    from hubbub.runtime import Runtime

try:
    __version__ = version("hubbub")
except PackageNotFoundError:  # pragma: no cover - running from an uninstalled tree
    __version__ = "0.0.0"

__all__ = ["Config", "Runtime", "__version__", "hookimpl", "load_config", "load_plugins"]

_LAZY = {
    "Config": "hubbub.config",
    "load_config": "hubbub.config",
    "load_plugins": "hubbub.plugins",
    "Runtime": "hubbub.runtime",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'hubbub' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
