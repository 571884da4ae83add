"""The MCP server (the ``mcp`` package's low-level :class:`~mcp.server.lowlevel.Server`) that
lists and calls the caller's tools.

``tools/list``: the ``chat`` tool (unless the caller's tool filters leave it out: ``[tools]
allow``/``deny``, ``[tools.users.<id>]``, a credential's ``tool:`` scopes) and every tool
:meth:`~hubbub.tools.ToolRegistry.for_caller` gives the caller, by their full dotted names.
``tools/call``: ``chat`` runs a conversation turn (:mod:`hubbub.mcp_server.chat`); any other
name goes through the caller's tool set, so permissions, argument validation, tool middleware,
concurrency limits and timeouts apply as they do to a model's calls; a tool the caller may not
use answers as an unknown one does.
"""

from __future__ import annotations

import logging
from typing import Any

import mcp_types as types
import msgspec
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server

from hubbub import __version__
from hubbub.contracts import ToolContext
from hubbub.log import log_context
from hubbub.mcp_server.caller import McpCaller, caller_of
from hubbub.mcp_server.catalog import mcp_result, mcp_tool
from hubbub.mcp_server.chat import CHAT_TOOL, chat_tool, run_chat
from hubbub.models import Principal, ToolCall, ToolSpec, new_id
from hubbub.runtime import Runtime
from hubbub.tools.access import ToolAccess

__all__ = ["build_server"]

logger = logging.getLogger("hubbub.mcp.server")

_CHAT_SPEC = ToolSpec(name=CHAT_TOOL)
"""What the tool filters judge the ``chat`` tool by."""


class _Handlers:
    """The request handlers of one server, over one runtime."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def chat_spec(self) -> ToolSpec:
        """The ``chat`` tool's effective spec: the first ``[[tools.rules]]`` matching ``chat``
        applied, as the registry applies them to every tool."""
        return self.runtime.tools.with_rules(_CHAT_SPEC)

    def chat_allowed(self, principal: Principal) -> bool:
        """Whether the caller's tool filters and the rules about ``chat`` (its roles and
        scopes) let ``chat`` through."""
        return ToolAccess.of(principal, self.runtime.config.tools).allows(self.chat_spec())

    async def list_tools(
        self, ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        caller = caller_of(ctx.request)
        principal = caller.principal
        tools = [mcp_tool(spec) for spec in self.runtime.tools.for_caller(principal).specs()]
        if self.chat_allowed(principal):
            tools.insert(0, chat_tool())
        # The list is the caller's own: a cache may not share it with anybody else.
        return types.ListToolsResult(tools=tools, cache_scope="private", ttl_ms=0)

    async def call_tool(
        self, ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        caller = caller_of(ctx.request)
        with log_context(
            request_id=caller.request_id, principal=caller.principal.id, mcp_tool=params.name
        ):
            if params.name == CHAT_TOOL and self.chat_allowed(caller.principal):
                result = await run_chat(
                    self.runtime.conversations,
                    caller.principal,
                    params.arguments,
                    request_id=caller.request_id,
                )
            else:
                result = await self._call(caller, params)
            logger.debug("MCP tools/call %s: %s", params.name, "error" if result.is_error else "ok")
            return result

    async def _call(
        self, caller: McpCaller, params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        toolset = self.runtime.tools.for_caller(caller.principal)
        call = ToolCall(
            id=new_id("mcp_"),
            name=params.name,
            arguments=msgspec.json.encode(params.arguments or {}).decode(),
        )
        context = ToolContext(principal=caller.principal, request_id=caller.request_id)
        result = await toolset.call(call, context)
        spec = next((s for s in toolset.specs() if s.name == params.name), None)
        return mcp_result(result, spec)


def build_server(runtime: Runtime) -> Server[Any]:
    """The MCP server of ``runtime``'s tools. Its handlers expect each request's caller in the
    HTTP request's scope (:func:`hubbub.mcp_server.set_caller`) and refuse to run without one."""
    handlers = _Handlers(runtime)
    return Server(
        "hubbub",
        version=__version__,
        instructions="Hubbub's tools, and `chat` to talk in your hubbub conversations.",
        on_list_tools=handlers.list_tools,
        on_call_tool=handlers.call_tool,
    )
