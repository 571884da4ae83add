"""Hubbub's tool specs and results in MCP's shape."""

from __future__ import annotations

from typing import Any

import mcp_types as types

from hubbub.models import ToolResult, ToolSpec

__all__ = ["mcp_result", "mcp_tool", "object_schema"]


def object_schema(schema: dict[str, Any] | None) -> dict[str, Any] | None:
    """``schema`` if MCP can carry it as a tool's ``outputSchema`` (an object schema: the
    ``structuredContent`` it describes must be a JSON object), else ``None``."""
    if schema is not None and schema.get("type") == "object":
        return schema
    return None


def mcp_tool(spec: ToolSpec) -> types.Tool:
    """The MCP tool for ``spec``: its full dotted name, description, ``inputSchema`` (the
    arguments' JSON Schema) and ``outputSchema`` when the tool declares an object schema."""
    return types.Tool(
        name=spec.name,
        description=spec.description or None,
        input_schema=spec.parameters,
        output_schema=object_schema(spec.output_schema),
    )


def mcp_result(result: ToolResult, spec: ToolSpec | None) -> types.CallToolResult:
    """The MCP result of a tool call: the text content, ``isError``, and the structured data
    as ``structuredContent`` when it is an object and the tool lists an output schema (MCP
    clients check it against that schema)."""
    structured = None
    declared = spec is not None and object_schema(spec.output_schema) is not None
    if declared and not result.is_error and isinstance(result.data, dict):
        structured = result.data
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=result.content)],
        structured_content=structured,
        is_error=result.is_error,
    )
