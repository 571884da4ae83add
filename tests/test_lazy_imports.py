"""Importing hubbub and loading every installed plugin stays cheap: the heavy libraries load
only when a component that needs them is built (bench/import_time.py measures the time)."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = [
    "litellm",
    "tiktoken",
    "litestar",
    "aiocache",
    "redis",
    "mcp",
    "authlib",
    "openai",
    "uvicorn",
    "prometheus_client",
]


def test_loading_every_plugin_imports_no_heavy_library() -> None:
    code = (
        "import json, sys\n"
        "import hubbub, hubbub.runtime\n"
        "from hubbub.plugins import load_plugins\n"
        "plugins = load_plugins()\n"
        "assert not plugins.failures, plugins.failures\n"
        "assert 'server' in plugins.info and 'litellm_provider' in plugins.info\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(result.stdout) == []
