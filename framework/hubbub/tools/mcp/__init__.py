"""The MCP client: tools of MCP servers (``[[mcp.servers]]``, over stdio or streamable HTTP)
offered as hubbub tools named ``<server>.<tool>``.

* :mod:`~hubbub.tools.mcp.provider`: :class:`McpTools`, the tool provider.
* :mod:`~hubbub.tools.mcp.supervisor`: the task that keeps one server connected.
* :mod:`~hubbub.tools.mcp.connection`: one session over stdio or HTTP.
* :mod:`~hubbub.tools.mcp.tools`: MCP tools and results as hubbub's.
* :mod:`~hubbub.tools.mcp.oauth`: client-credentials tokens for HTTP servers.
"""

from __future__ import annotations

from hubbub.tools.mcp.connection import child_environment
from hubbub.tools.mcp.oauth import BearerAuth, ClientCredentials, TokenError
from hubbub.tools.mcp.provider import McpTools
from hubbub.tools.mcp.supervisor import ServerDown, ServerSupervisor
from hubbub.tools.mcp.tools import McpTool, describe_block, safe_names, to_result

__all__ = [
    "BearerAuth",
    "ClientCredentials",
    "McpTool",
    "McpTools",
    "ServerDown",
    "ServerSupervisor",
    "TokenError",
    "child_environment",
    "describe_block",
    "safe_names",
    "to_result",
]
