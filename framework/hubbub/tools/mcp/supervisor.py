"""The runtime task of one MCP server: connects, lists its tools, watches it (the connection's
end, ``list_changed`` notifications, periodic pings) and reconnects with back-off when it goes
down. Calls from other tasks go through :meth:`ServerSupervisor.call_tool`."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

import anyio
import mcp_types
from mcp.shared.exceptions import MCPError

from hubbub.config import McpServerConfig
from hubbub.errors import HubbubError, ToolError
from hubbub.models import Health
from hubbub.redaction import describe_error
from hubbub.tools.mcp.connection import Connection, ServerDown, connect
from hubbub.tools.mcp.oauth import ClientCredentials
from hubbub.tools.mcp.tools import McpTool, build_tools

__all__ = ["ServerDown", "ServerSupervisor"]

STOP_GRACE = 10.0
"""Seconds the supervisor waits for its connection to close when stopped (a stdio server gets
2 s to exit after its stdin closes, 2 more after SIGTERM, then SIGKILL)."""

MAX_PAGES = 100
"""Pages of a tool listing read at most: a server that never stops paging is cut there."""

MAX_LISTED = 10_000
"""Tools of one listing read at most (before the server's ``tools`` patterns and the limits of
:mod:`hubbub.tools.mcp.tools` apply): paging stops there."""

REFRESH_INTERVAL = 1.0
"""The least seconds between two listings of a server's tools: ``list_changed`` notifications
arriving faster are coalesced into one listing per interval."""


def _reason(error: BaseException) -> str:
    """Why a connection failed, in a few words."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    if isinstance(error, ServerDown | HubbubError):
        return str(error)
    if isinstance(error, TimeoutError):
        return "no answer in time"
    if isinstance(error, FileNotFoundError):
        return f"command not found: {error.filename}" if error.filename else str(error)
    return describe_error(error)


class ServerSupervisor:
    """Keeps one MCP server connected while hubbub runs.

    :param config: the server's ``[[mcp.servers]]`` entry.
    :param reconnect_delay: seconds before the first reconnection; doubles on each failure.
    :param reconnect_max_delay: the longest wait between two attempts.
    :param ping_interval: seconds between liveness pings (0: none).
    :param default_timeout: ``[tools] call_timeout``, for calls of a server without its own.
    :param logger: where connections, failures and reconnections are logged.
    """

    def __init__(
        self,
        config: McpServerConfig,
        *,
        reconnect_delay: float = 0.5,
        reconnect_max_delay: float = 30.0,
        ping_interval: float = 15.0,
        default_timeout: float = 30.0,
        logger: logging.Logger | None = None,
    ) -> None:
        self.config = config
        self.name = config.name
        self.reconnect_delay = reconnect_delay
        self.reconnect_max_delay = reconnect_max_delay
        self.ping_interval = ping_interval
        self.call_timeout = config.call_timeout or default_timeout
        self._log = logger or logging.getLogger("hubbub.tools.mcp")
        self._extra = {"mcp_server": config.name}
        self.credentials = (
            ClientCredentials(config.oauth, timeout=config.connect_timeout, logger=self._log)
            if config.oauth is not None
            else None
        )
        self.connection: Connection | None = None
        """The live connection, while the server is up."""
        self.tools: list[McpTool] = []
        """Its tools while it is up (empty while down)."""
        self.problems: list[str] = []
        """What the last listing left out or changed (too many tools, schemas too large...)."""
        self.listings = 0
        """How many times its tools were listed."""
        self._listed_at = -REFRESH_INTERVAL
        self.reason = "not connected yet"
        """Why it is down, while it is."""
        self.next_try: float | None = None
        """When (``time.monotonic()``) the next connection attempt starts, while down."""
        self.connections = 0
        """How many times it came up."""
        self.attempted = asyncio.Event()
        """Set once the first connection attempt ended (up or not)."""
        self._scope: anyio.CancelScope | None = None
        self._runner: asyncio.Task[None] | None = None
        self._was_up = False
        self._logged: str | None = None  # the last failure logged as a warning

    @property
    def up(self) -> bool:
        """Whether the server is connected now."""
        return self.connection is not None

    # -- running ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until cancelled. A native cancellation (the runtime stopping its tasks) is turned
        into an orderly stop: the connection is closed inside anyio's cancel scope, so a stdio
        server's process is always stopped and reaped."""
        self._runner = asyncio.create_task(self._run(), name=f"mcp server {self.name}")
        try:
            await asyncio.shield(self._runner)
        except asyncio.CancelledError:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Close the connection and end :meth:`run` (waits at most :data:`STOP_GRACE`)."""
        runner = self._runner
        if runner is None or runner.done():
            return
        if self._scope is not None:
            self._scope.cancel()
        else:
            runner.cancel()
        done, _ = await asyncio.wait({runner}, timeout=STOP_GRACE)
        if not done:
            self._log.error("MCP server %s did not stop in time", self.name, extra=self._extra)
            runner.cancel()

    async def _run(self) -> None:
        failures = 0
        with anyio.CancelScope() as scope:
            self._scope = scope
            while True:
                try:
                    await self._connect_and_watch()
                    reason = "the connection ended"  # (it raises)
                except Exception as exc:  # every way a connection fails: try again later
                    reason = _reason(exc)
                failures = 1 if self._was_up else failures + 1
                self._was_up = False
                delay = self.reconnect_delay * 2.0 ** min(failures - 1, 32)
                # jitter, so that servers that fell together do not come back in step
                delay = min(self.reconnect_max_delay, delay) * random.uniform(0.8, 1.0)
                self.reason = reason
                self.next_try = time.monotonic() + delay
                self.attempted.set()
                # a warning when it goes down or fails differently; the same failure again
                # (a server down for hours) is not worth one every retry
                level = logging.WARNING if reason != self._logged else logging.DEBUG
                self._logged = reason
                self._log.log(
                    level,
                    "MCP server %s is down: %s; next try in %.1f s",
                    self.name,
                    reason,
                    delay,
                    extra={**self._extra, "retry_in": round(delay, 2)},
                )
                await anyio.sleep(delay)

    async def _connect_and_watch(self) -> None:
        """Connect, list the tools, watch the connection; raise why it ended. Closing the
        connection is bounded by the server's ``connect_timeout`` (an HTTP server that no
        longer answers would hold its session's ``DELETE``); a stdio server is stopped
        whatever happens (:func:`~hubbub.tools.mcp.stdio.stdio_transport` shields that)."""
        self.next_try = None
        failure = "the connection ended"
        with anyio.CancelScope() as teardown:
            async with connect(
                self.config,
                logger=self._log,
                credentials=self.credentials,
                call_timeout=self.call_timeout,
            ) as connection:
                try:
                    with anyio.fail_after(self.config.connect_timeout):
                        tools = await self._list(connection)
                    self.tools = tools
                    self.connection = connection
                    self.connections += 1
                    self._was_up = True
                    self._logged = None
                    self.attempted.set()
                    self._log.info(
                        "MCP server %s is up: %d tools",
                        self.name,
                        len(tools),
                        extra={**self._extra, "tools": len(tools)},
                    )
                    await self._watch(connection)
                except Exception as exc:
                    failure = _reason(exc)
                    self.reason = f"{failure}; disconnecting"
                    raise
                finally:
                    self.connection = None
                    self.tools = []
                    self.problems = []
                    teardown.deadline = anyio.current_time() + self.config.connect_timeout
        if teardown.cancelled_caught:
            self._log.warning(
                "MCP server %s: closing the connection took longer than %g s; abandoned",
                self.name,
                self.config.connect_timeout,
                extra=self._extra,
            )
        raise ServerDown(failure)

    async def _watch(self, connection: Connection) -> None:
        """Return (raise :class:`ServerDown`) when the connection is no longer usable."""
        interval = self.ping_interval or None
        while True:
            waits = [
                asyncio.ensure_future(connection.closed.wait()),
                asyncio.ensure_future(connection.changed.wait()),
            ]
            try:
                await asyncio.wait(waits, timeout=interval, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waits:
                    waiter.cancel()
                await asyncio.gather(*waits, return_exceptions=True)
            if connection.closed.is_set():
                raise ServerDown(connection.why_closed("the server closed the connection"))
            if connection.changed.is_set():
                # at most one listing per REFRESH_INTERVAL: notifications arriving meanwhile
                # are answered by the one listing after the wait
                wait = self._listed_at + REFRESH_INTERVAL - time.monotonic()
                if wait > 0:
                    try:
                        await asyncio.wait_for(connection.closed.wait(), wait)
                    except TimeoutError:
                        pass
                    else:
                        raise ServerDown(connection.why_closed("the server closed the connection"))
                connection.changed.clear()
                with anyio.fail_after(self.config.connect_timeout):
                    self.tools = await self._list(connection)
                self._log.info(
                    "MCP server %s changed its tools: %d now",
                    self.name,
                    len(self.tools),
                    extra={**self._extra, "tools": len(self.tools)},
                )
                continue
            try:
                with anyio.fail_after(self.config.connect_timeout):
                    await connection.session.send_ping()
            except TimeoutError:
                raise ServerDown(
                    f"no answer to a ping within {self.config.connect_timeout:g} s"
                ) from None

    async def _list(self, connection: Connection) -> list[McpTool]:
        """Read the server's tools (its pages, within :data:`MAX_PAGES` and
        :data:`MAX_LISTED`); note what was left out in :attr:`problems`."""
        self._listed_at = time.monotonic()
        self.listings += 1
        listed: list[mcp_types.Tool] = []
        cursor: str | None = None
        cut: str | None = None
        for _ in range(MAX_PAGES):
            params = mcp_types.PaginatedRequestParams(cursor=cursor) if cursor else None
            page = await connection.session.list_tools(params=params)
            listed.extend(page.tools)
            cursor = page.next_cursor
            if not cursor:
                break
            if len(listed) >= MAX_LISTED:
                cut = f"listing cut after {len(listed)} tools"
                break
        else:
            cut = f"listing cut after {MAX_PAGES} pages"
        listing = build_tools(self.config, listed[:MAX_LISTED], self, previous=self.tools)
        problems = ([cut] if cut else []) + listing.problems
        if problems and problems != self.problems:  # once, not at every listing
            self._log.warning(
                "MCP server %s: %s",
                self.name,
                "; ".join(problems),
                extra={**self._extra, "tools": len(listing.tools)},
            )
        self.problems = problems
        return listing.tools

    # -- calls --------------------------------------------------------------------------------

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> mcp_types.CallToolResult:
        """Call the tool ``name`` (its name on the server). Raises :class:`ToolError` when the
        server is down, goes down during the call, or refuses it."""
        connection = self.connection
        if connection is None:
            raise ToolError(f"MCP server {self.name!r} is down: {self.reason}")
        try:
            return await connection.session.call_tool(name, arguments)
        except MCPError as exc:
            if exc.error.code == mcp_types.CONNECTION_CLOSED or connection.closed.is_set():
                raise self._went_down(connection) from None
            raise ToolError(
                f"MCP server {self.name!r} refused the call: {exc.error.message}"
            ) from None
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            raise self._went_down(connection) from None
        except Exception as exc:
            if connection.closed.is_set() or self.connection is not connection:
                raise self._went_down(connection) from None
            raise ToolError(
                f"MCP server {self.name!r} sent an unusable answer: {describe_error(exc)}"
            ) from None

    def _went_down(self, connection: Connection) -> ToolError:
        message = f"MCP server {self.name!r} went down during the call"
        if connection.failure:
            message = f"{message}: {connection.failure[-1]}"
        return ToolError(message)

    # -- health -------------------------------------------------------------------------------

    def health(self) -> Health:
        """``ok`` with its tool count, or ``down`` with why and when the next try is."""
        backend = self.config.transport
        if self.up:
            count = len(self.tools)
            detail = "; ".join([f"{count} tool{'s' * (count != 1)}", *self.problems])
            return Health(status="ok", backend=backend, detail=detail)
        detail = self.reason
        if self.next_try is not None:
            wait = max(0.0, self.next_try - time.monotonic())
            detail = f"{detail}; next try in {wait:.1f} s"
        elif self.attempted.is_set():
            detail = f"{detail}; trying again now"
        return Health(status="down", backend=backend, detail=detail)
