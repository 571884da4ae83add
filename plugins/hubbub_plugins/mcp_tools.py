"""Tool provider ``mcp``: the tools of the MCP servers declared in ``[[mcp.servers]]``, named
``<server>.<tool>`` (``time.get_current_time``), each server supervised (reconnected with
back-off when it goes down, its tools hidden meanwhile) with a health line of its own.

stdio servers are programs hubbub runs on this host: only the configuration file declares
them, never an API call."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hubbub import hookimpl

if TYPE_CHECKING:
    from hubbub.registry import ComponentContext, Registrar
    from hubbub.tools.mcp import McpTools


def build(context: ComponentContext[None]) -> McpTools:
    """The provider, from ``[mcp]`` and ``[tools] call_timeout`` (the ``mcp`` package loads
    only now)."""
    from hubbub.tools.mcp import McpTools

    return McpTools(
        context.config.mcp,
        default_timeout=context.config.tools.call_timeout,
        tasks=context.tasks,
        logger=context.logger,
    )


@hookimpl
def register_tools(register: Registrar) -> None:
    """Register the ``mcp`` tool provider."""
    register(
        "mcp",
        build,
        description="tools of the MCP servers in [[mcp.servers]] (stdio or streamable HTTP)",
    )
