"""One connection to one MCP server, over stdio (a child process) or streamable HTTP.

:func:`connect` is an async context manager: entered and left in the one task that owns the
connection (the server's supervisor), as the ``mcp`` package requires of its transports and
sessions. Other tasks use the :class:`Connection`'s session, which is safe to share.

Limits on what a server sends: over HTTP every response body is bounded by
:data:`~hubbub.tools.mcp.http_limits.MAX_RESPONSE_BYTES` (:mod:`hubbub.tools.mcp.http_limits`),
and each event of an event stream too; over stdio each message (line) by
:data:`~hubbub.tools.mcp.stdio.MAX_MESSAGE_BYTES` (:mod:`hubbub.tools.mcp.stdio`, which spawns
the server and reads its stdout in linear time). Lines of a stdio server's stdout that are not
JSON-RPC are reported as warnings, at most :data:`NOISE_BURST` per :data:`STDERR_WINDOW`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import anyio
import httpx2
import mcp_types
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.message import SessionMessage

from hubbub.config import McpServerConfig
from hubbub.tools.mcp.http_limits import MAX_RESPONSE_BYTES, BoundedTransport
from hubbub.tools.mcp.oauth import BearerAuth, ClientCredentials
from hubbub.tools.mcp.stdio import stdio_transport

__all__ = [
    "CLIENT_INFO",
    "Connection",
    "ServerDown",
    "StderrLog",
    "child_environment",
    "connect",
]

CLIENT_INFO = mcp_types.Implementation(name="hubbub", version="1")
"""How hubbub introduces itself to MCP servers."""

INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "TZ")
"""Variables of hubbub's environment a stdio server gets (when set); nothing else of it.
(The transport adds ``LOGNAME``, ``SHELL``, ``TERM`` and ``USER`` when set, as the ``mcp``
package does.)"""

STDERR_LINE_MAX = 2000
"""Characters of one stderr line logged; the rest is cut."""
STDERR_BURST = 100
"""Lines of a server's stderr logged per :data:`STDERR_WINDOW`; more are counted, not logged."""
STDERR_WINDOW = 60.0
"""Seconds of the window :data:`STDERR_BURST` counts lines in."""
NOISE_BURST = 10
"""Warnings about what a server sent that is not a message (a stdout line that is not JSON,
a transport error) logged per :data:`STDERR_WINDOW`; more are counted, then reported in one."""
STDERR_DRAIN = 0.5
"""Seconds given to log a stopped server's last stderr lines."""

HTTP_READ_TIMEOUT = 300.0
"""Seconds an HTTP read may wait (a server streams a long call's answer, or holds the event
stream open); calls are bounded by their own timeouts."""


class ServerDown(Exception):
    """The connection to a server failed or ended; the message says why."""


def child_environment(
    config: McpServerConfig, environ: dict[str, str] | None = None
) -> dict[str, str]:
    """The environment a stdio server runs with: :data:`INHERITED` from ``environ`` (hubbub's,
    by default) plus the server's configured ``env``; never hubbub's whole environment."""
    source = os.environ if environ is None else environ
    env = {name: source[name] for name in INHERITED if name in source}
    env.update({name: secret.reveal() for name, secret in config.env.items()})
    return env


class Throttle:
    """Lets at most ``burst`` events through per :data:`STDERR_WINDOW`; counts the others."""

    def __init__(self, burst: int) -> None:
        self.burst = burst
        self._window = time.monotonic()
        self._count = 0
        self.dropped = 0
        """Events held back since the last :meth:`take_dropped`."""

    def allow(self) -> bool:
        """Whether one more event may be logged now (else it is counted)."""
        now = time.monotonic()
        if now - self._window > STDERR_WINDOW:
            self._window, self._count = now, 0
        if self._count >= self.burst:
            self.dropped += 1
            return False
        self._count += 1
        return True

    def take_dropped(self) -> int:
        """How many were held back since the last call (and reset that count)."""
        dropped, self.dropped = self.dropped, 0
        return dropped


class StderrLog:
    """Logs a child's stderr, line by line, bounded: long lines cut, at most
    :data:`STDERR_BURST` lines per :data:`STDERR_WINDOW` (the rest counted and reported)."""

    def __init__(self, logger: logging.Logger, server: str) -> None:
        self.logger = logger
        self.server = server
        self._window = time.monotonic()
        self._count = 0
        self._dropped = 0

    def line(self, text: str) -> None:
        """Log one line (without its newline)."""
        now = time.monotonic()
        if now - self._window > STDERR_WINDOW:
            self.flush()
            self._window, self._count = now, 0
        if self._count >= STDERR_BURST:
            self._dropped += 1
            return
        self._count += 1
        if len(text) > STDERR_LINE_MAX:
            text = text[:STDERR_LINE_MAX] + "…"
        self.logger.info("%s", text, extra={"mcp_server": self.server, "stream": "stderr"})

    def flush(self) -> None:
        """Say how many lines were not logged since the last time, if any."""
        if self._dropped:
            self.logger.warning(
                "%d stderr lines of MCP server %s were not logged (more than %d a minute)",
                self._dropped,
                self.server,
                STDERR_BURST,
                extra={"mcp_server": self.server},
            )
            self._dropped = 0

    async def pump(self, pipe: BinaryIO, done: anyio.Event | None = None) -> None:
        """Read ``pipe`` (taking ownership of it) until its end, logging each line; set
        ``done`` at the end."""
        transport: asyncio.ReadTransport | None = None
        try:
            loop = asyncio.get_running_loop()
            reader = asyncio.StreamReader()
            transport, _ = await loop.connect_read_pipe(
                lambda: asyncio.StreamReaderProtocol(reader), pipe
            )
            buffer = b""
            while chunk := await reader.read(65536):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for raw in lines:
                    self.line(raw.decode("utf-8", "replace").rstrip("\r"))
                if len(buffer) > STDERR_LINE_MAX * 4:  # a line without end: log what came
                    self.line(buffer.decode("utf-8", "replace"))
                    buffer = b""
            if buffer:
                self.line(buffer.decode("utf-8", "replace"))
        finally:
            self.flush()
            if transport is not None:
                transport.close()
            pipe.close()
            if done is not None:
                done.set()


@dataclass
class Connection:
    """A connected, initialised session to one server."""

    session: ClientSession
    """The MCP session; its requests may be sent from any task."""
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the server ends the connection (its process exited, its stream closed)."""
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the server says its tool list changed; whoever reads the list again clears
    it first."""
    failure: list[str] = field(default_factory=list)
    """Why the transport ended the connection, when it knows (a message too large)."""

    def why_closed(self, default: str) -> str:
        """Why the connection ended: what the transport said, else ``default``."""
        return self.failure[-1] if self.failure else default


async def _relay(
    source: MemoryObjectReceiveStream[SessionMessage | Exception],
    sink: MemoryObjectSendStream[SessionMessage | Exception],
    closed: asyncio.Event,
) -> None:
    """Forward the transport's messages to the session, and say when they end."""
    try:
        async with sink:
            async for item in source:
                await sink.send(item)
    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
        pass
    finally:
        closed.set()


@contextlib.asynccontextmanager
async def connect(
    config: McpServerConfig,
    *,
    logger: logging.Logger,
    credentials: ClientCredentials | None = None,
    call_timeout: float = 30.0,
) -> AsyncIterator[Connection]:
    """Open a session to the server of ``config`` and initialise it (bounded by its
    ``connect_timeout``). Leaving the context closes the session and the transport: a stdio
    server's process is told to stop, then terminated, then killed."""
    closed, changed = asyncio.Event(), asyncio.Event()
    noise = Throttle(NOISE_BURST)

    def report_noise() -> None:
        if dropped := noise.take_dropped():
            logger.warning(
                "MCP server %s: %d more transport errors (unparsable lines...) not logged "
                "(more than %d a minute)",
                config.name,
                dropped,
                NOISE_BURST,
                extra={"mcp_server": config.name},
            )

    async def on_message(message: Any) -> None:
        if isinstance(message, mcp_types.ToolListChangedNotification):
            changed.set()
        elif isinstance(message, Exception):
            if not noise.allow():
                return
            report_noise()
            logger.warning(
                "MCP server %s: transport error: %s",
                config.name,
                str(message)[:STDERR_LINE_MAX],
                extra={"mcp_server": config.name},
            )

    async with contextlib.AsyncExitStack() as stack:
        stack.callback(report_noise)  # the last count, when the connection ends
        refused: list[int] = []  # HTTP statuses >= 400 the server answered with
        failure: list[str] = []  # why the transport ended the connection, when it knows
        if config.transport == "stdio":
            read, write = await _open_stdio(config, stack, logger, failure)
        else:
            read, write = await _open_http(config, stack, credentials, call_timeout, refused)
        relay_send, relay_receive = anyio.create_memory_object_stream[SessionMessage | Exception](0)
        stack.callback(relay_receive.close)  # (both idempotent) after everything below
        stack.callback(relay_send.close)
        group: TaskGroup = await stack.enter_async_context(anyio.create_task_group())
        stack.callback(group.cancel_scope.cancel)  # runs before the group's exit
        group.start_soon(_relay, read, relay_send, closed)
        session = await stack.enter_async_context(
            ClientSession(relay_receive, write, message_handler=on_message, client_info=CLIENT_INFO)
        )
        try:
            with anyio.fail_after(config.connect_timeout):
                await session.initialize()
        except Exception as exc:
            if refused:
                raise ServerDown(f"the server answered HTTP {refused[-1]}") from exc
            raise
        yield Connection(session=session, closed=closed, changed=changed, failure=failure)


async def _open_stdio(
    config: McpServerConfig,
    stack: contextlib.AsyncExitStack,
    logger: logging.Logger,
    failure: list[str],
) -> Any:
    assert config.command is not None
    stderr = StderrLog(logging.getLogger(f"hubbub.tools.mcp.{config.name}"), config.name)
    read_fd, write_fd = os.pipe()
    try:
        errlog = os.fdopen(write_fd, "w")
    except BaseException:
        os.close(read_fd)
        os.close(write_fd)
        raise
    pump_started = False
    try:
        group: TaskGroup = await stack.enter_async_context(anyio.create_task_group())
        pump_done = anyio.Event()

        async def stop_pump() -> None:
            # After the child is gone: let the pump log what is left, then stop it (a
            # grandchild may hold the pipe open).
            with anyio.move_on_after(STDERR_DRAIN):
                await pump_done.wait()
            group.cancel_scope.cancel()

        stack.push_async_callback(stop_pump)
        streams = await stack.enter_async_context(
            stdio_transport(
                config.command,
                list(config.args),
                env=child_environment(config),
                cwd=config.cwd,
                errlog=errlog,
                failure=failure,
            )
        )
        errlog.close()  # the child has its copy; the pipe ends when the child (tree) exits
        pipe = os.fdopen(read_fd, "rb", buffering=0)
        pump_started = True
        group.start_soon(stderr.pump, pipe, pump_done)
    finally:
        if not errlog.closed:
            errlog.close()
        if not pump_started:
            os.close(read_fd)
    logger.debug("started MCP server %s", config.name, extra={"mcp_server": config.name})
    return streams


async def _open_http(
    config: McpServerConfig,
    stack: contextlib.AsyncExitStack,
    credentials: ClientCredentials | None,
    call_timeout: float,
    refused: list[int],
) -> Any:
    assert config.url is not None
    headers = {name: secret.reveal() for name, secret in config.headers.items()}

    async def note(response: httpx2.Response) -> None:
        if response.status_code >= 400:
            refused.append(response.status_code)
            del refused[:-1]

    client = await stack.enter_async_context(
        httpx2.AsyncClient(
            headers=headers,
            timeout=httpx2.Timeout(
                config.connect_timeout, read=max(HTTP_READ_TIMEOUT, call_timeout + 5)
            ),
            auth=BearerAuth(credentials) if credentials is not None else None,
            event_hooks={"response": [note]},
            transport=BoundedTransport(limit=MAX_RESPONSE_BYTES),
        )
    )
    return await stack.enter_async_context(
        streamable_http_client(
            config.url, http_client=client, max_sse_event_size=MAX_RESPONSE_BYTES
        )
    )
