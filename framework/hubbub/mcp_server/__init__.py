"""Hubbub's own tools served over MCP (streamable HTTP, stateless).

The caller's tools (:meth:`hubbub.tools.ToolRegistry.for_caller`) are listed and called as MCP
tools, with the registry's permissions, validation, middleware and limits, plus a ``chat`` tool
that runs one turn of one of the caller's conversations (:mod:`hubbub.mcp_server.chat`).

This package knows nothing of the web framework around it. Whoever mounts the endpoint
(:class:`McpEndpoint`) authenticates each HTTP request first and leaves the caller in the ASGI
scope (:func:`set_caller`); the tool handlers read it back from the request that carries the
MCP message, so concurrent callers never see each other's identity, whichever task the MCP
session manager runs the handler in.
"""

from __future__ import annotations

from hubbub.mcp_server.caller import CALLER_KEY, McpCaller, caller_of, set_caller
from hubbub.mcp_server.chat import CHAT_TOOL
from hubbub.mcp_server.endpoint import McpEndpoint
from hubbub.mcp_server.server import build_server

__all__ = [
    "CALLER_KEY",
    "CHAT_TOOL",
    "McpCaller",
    "McpEndpoint",
    "build_server",
    "caller_of",
    "set_caller",
]
