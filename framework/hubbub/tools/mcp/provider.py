"""The MCP tool provider: every configured MCP server's tools, each server supervised by a
task of its own, with a health line per server."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from hubbub.config import McpConfig
from hubbub.contracts import Tool
from hubbub.models import Health, HealthStatus
from hubbub.services import Tasks
from hubbub.tools.mcp.supervisor import STOP_GRACE, ServerSupervisor

__all__ = ["McpTools"]


class McpTools:
    """The tools of the ``[[mcp.servers]]``, named ``<server>.<tool>``.

    :meth:`start` starts one supervised task per enabled server and waits (in parallel) at most
    each server's ``connect_timeout`` for its first connection; a server not up by then is
    ``down`` (hubbub starts anyway) and retried with back-off. :meth:`tools` offers the tools of
    the servers that are up now.

    :param config: the ``[mcp]`` section.
    :param default_timeout: ``[tools] call_timeout``, for servers without a ``call_timeout``.
    :param tasks: where the supervisors run (the runtime's tasks for this component); a set of
        its own when not given.
    :param logger: where the servers' connections and failures are logged.
    """

    def __init__(
        self,
        config: McpConfig,
        *,
        default_timeout: float = 30.0,
        tasks: Tasks | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        self.config = config
        self._log = logger or logging.getLogger("hubbub.tools.mcp")
        self.tasks = tasks or Tasks("mcp", log=self._log)
        self.servers: dict[str, ServerSupervisor] = {
            server.name: ServerSupervisor(
                server,
                reconnect_delay=config.reconnect_delay,
                reconnect_max_delay=config.reconnect_max_delay,
                ping_interval=config.ping_interval,
                default_timeout=default_timeout,
                logger=self._log,
            )
            for server in config.servers
            if server.enabled
        }
        """The supervisor of each enabled server, by name, in configuration order."""
        self.disabled = [server.name for server in config.servers if not server.enabled]
        """Names of the servers configured with ``enabled = false``."""

    async def start(self) -> None:
        """Start every server's supervisor; wait for their first connections (each at most
        its ``connect_timeout``)."""
        for name, supervisor in self.servers.items():
            self.tasks.start(f"mcp server {name}", supervisor.run, restart=True)

        async def first(supervisor: ServerSupervisor) -> None:
            try:
                await asyncio.wait_for(
                    supervisor.attempted.wait(), supervisor.config.connect_timeout
                )
            except TimeoutError:
                supervisor.reason = "not up within its connect_timeout; still trying"

        await asyncio.gather(*(first(supervisor) for supervisor in self.servers.values()))

    def tools(self) -> Sequence[Tool]:
        """The tools of the servers up now, server by server in configuration order."""
        return [tool for supervisor in self.servers.values() for tool in supervisor.tools]

    async def health(self) -> Health:
        """``ok`` when every server is up, ``degraded`` when some are down, ``down`` when all
        are; one part per server."""
        parts = {name: supervisor.health() for name, supervisor in self.servers.items()}
        up = sum(1 for part in parts.values() if part.status == "ok")
        down = len(parts) - up
        if not parts:
            detail = "no MCP servers configured"
            if self.disabled:
                detail = f"no MCP servers enabled ({len(self.disabled)} disabled)"
            return Health(detail=detail)
        detail = f"{up} server{'s' * (up != 1)} up, {down} down"
        if self.disabled:
            detail += f", {len(self.disabled)} disabled"
        status: HealthStatus = "ok" if not down else ("down" if not up else "degraded")
        return Health(status=status, detail=detail, parts=parts)

    async def aclose(self) -> None:
        """Stop every server (closing its connection, stopping its process)."""
        await self.tasks.aclose(grace=STOP_GRACE + 1)  # each supervisor stops in order
        await asyncio.gather(*(supervisor.stop() for supervisor in self.servers.values()))
