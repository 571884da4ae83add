"""Helpers for the MCP client tests: configurations for the knobs server, an HTTP knobs server
in a child process, and finding (and killing) the processes a test started."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hubbub.config import McpConfig, McpServerConfig
from hubbub.contracts import ToolContext
from hubbub.models import ToolResult
from hubbub.tools.mcp import McpTool, McpTools

KNOBS = Path(__file__).with_name("knobs.py")
"""The knobs server's script."""


def knobs_stdio(tag: str, name: str = "knobs", **fields: Any) -> McpServerConfig:
    """A stdio ``[[mcp.servers]]`` entry running the knobs server, tagged ``tag``."""
    fields.setdefault("connect_timeout", 10.0)
    return McpServerConfig(
        name=name,
        transport="stdio",
        command=sys.executable,
        args=[str(KNOBS), "stdio", "--tag", tag],
        **fields,
    )


def free_port() -> int:
    """A TCP port nobody listens on now (from the OS)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tagged_pids(tag: str) -> list[int]:
    """Live processes whose command line or environment holds ``tag``."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            with contextlib.suppress(OSError):  # another user's process
                cmdline += Path(f"/proc/{entry}/environ").read_bytes()
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if tag.encode() in cmdline and state != "Z":
            pids.append(int(entry))
    return pids


def zombie_children() -> list[int]:
    """This process's children that exited and were never reaped."""
    zombies = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z" and int(fields[1]) == os.getpid():
            zombies.append(int(entry))
    return zombies


def kill_tagged(tag: str) -> list[int]:
    """Kill every process tagged ``tag``; return their ids."""
    pids = tagged_pids(tag)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pids


async def eventually(
    check: Callable[[], bool | Awaitable[bool]], *, within: float = 20.0, what: str = "it"
) -> None:
    """Wait until ``check()`` is true (polled), failing after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {within} s")
        await asyncio.sleep(0.05)


class HttpKnobs:
    """The knobs server over streamable HTTP, in a child process on a free port."""

    def __init__(self, tag: str, *args: str) -> None:
        self.tag = tag
        self.args = args
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Its MCP endpoint."""
        return f"http://127.0.0.1:{self.port}/mcp"

    def start(self) -> None:
        """Start it and wait until it accepts connections."""
        command = [sys.executable, str(KNOBS), "http", "--port", str(self.port)]
        self.process = subprocess.Popen(
            [*command, "--tag", self.tag, *self.args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the HTTP knobs server exited: {self.process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        """Stop it (and reap it)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
        if self.process is not None:
            self.process.wait(10)


# -- fixtures and helpers shared by the MCP client tests -------------------------------------------

CONTEXT = ToolContext()
TIME_SERVER = Path(sys.executable).with_name("mcp-server-time")


@pytest.fixture
def tag() -> Iterator[str]:
    """A tag for this test's server processes: none may outlive the test."""
    value = f"mcp-test-{uuid.uuid4().hex}"
    yield value
    left = kill_tagged(value)
    assert not left, f"server processes left running: {left}"


def mcp_config(*servers: McpServerConfig, **fields: Any) -> McpConfig:
    """``[mcp]`` with short delays, for tests."""
    fields.setdefault("reconnect_delay", 0.1)
    fields.setdefault("reconnect_max_delay", 0.5)
    fields.setdefault("ping_interval", 0)
    return McpConfig(servers=list(servers), **fields)


@pytest.fixture
async def started(tag: str) -> AsyncIterator[list[McpTools]]:
    """Providers a test starts; stopped after it (before the processes of ``tag`` are looked
    for), checking nothing is left behind."""
    providers: list[McpTools] = []
    before = asyncio.all_tasks()
    yield providers
    current = asyncio.current_task()
    for provider in providers:
        await provider.aclose()
    await asyncio.sleep(0)
    leaked = [t for t in asyncio.all_tasks() - before if not t.done() and t is not current]
    assert not leaked, f"tasks left running: {leaked}"
    assert not zombie_children()


async def start(started: list[McpTools], config: McpConfig, **kwargs: Any) -> McpTools:
    provider = McpTools(config, **kwargs)
    started.append(provider)
    await provider.start()
    return provider


def tool(provider: McpTools, name: str) -> McpTool:
    found = {t.spec.name: t for t in provider.tools()}
    assert name in found, sorted(found)
    result = found[name]
    assert isinstance(result, McpTool)
    return result


async def call(provider: McpTools, name: str, **arguments: Any) -> ToolResult:
    return await tool(provider, name).call(arguments, CONTEXT)


def part(health: Any, name: str) -> Any:
    """The health of the part ``name``."""
    return health.parts[name]
