"""MCP tools as hubbub tools: names made safe and unique, specs from the server's listing,
results from MCP's content blocks."""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import mcp_types

from hubbub.contracts import ToolContext
from hubbub.models import ToolResult, ToolSpec
from hubbub.tools.names import MAX_NAME, matches

if TYPE_CHECKING:
    from hubbub.config import McpServerConfig

__all__ = [
    "MAX_DESCRIPTION",
    "MAX_SCHEMA_BYTES",
    "MAX_TOOLS",
    "Listing",
    "McpTool",
    "build_tools",
    "describe_block",
    "safe_names",
    "to_result",
]

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")

MAX_TOOLS = 256
"""The most tools hubbub takes from one MCP server (the first ones by name); the rest are left
out and its health says how many."""

MAX_DESCRIPTION = 4000
"""Characters of a tool's description kept; longer ones are cut (with an ellipsis)."""

MAX_SCHEMA_BYTES = 64 * 1024
"""The largest input (or output) schema of a tool, in bytes of JSON: a tool with a larger one
is hidden and its server's health says so."""


class Caller(Protocol):
    """What runs a call on a server (its supervisor)."""

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> mcp_types.CallToolResult:
        """Call the tool named ``name`` on the server (its own name there)."""


def safe_names(server: str, names: Sequence[str]) -> dict[str, str]:
    """The full hubbub name (``<server>.<tool>``) of each of the server's tool ``names``.

    Characters outside ``[A-Za-z0-9_.-]`` become ``_``, names are cut to fit
    :data:`MAX_NAME`; two names that end up the same are told apart by a suffix (``_2``,
    ``_3``...). Deterministic: names already safe keep their spelling, the others are settled
    in sorted order."""
    room = MAX_NAME - len(server) - 1
    taken: set[str] = set()
    result: dict[str, str] = {}

    def changed(name: str) -> bool:
        return not name or name.startswith(".") or len(name) > room or bool(_UNSAFE.search(name))

    safe_first = sorted(set(names), key=lambda n: (changed(n), n))
    for name in safe_first:
        base = _UNSAFE.sub("_", name)[:room] or "_"
        if base.startswith("."):  # a name may not start with one
            base = "_" + base[1:]
        candidate, number = base, 1
        while candidate in taken:
            number += 1
            suffix = f"_{number}"
            candidate = base[: room - len(suffix)] + suffix
        taken.add(candidate)
        result[name] = f"{server}.{candidate}"
    return result


def describe_block(block: Any) -> str:
    """One line for a content block that is not text (``[image image/png, 12034 bytes]``)."""
    if isinstance(block, mcp_types.ImageContent | mcp_types.AudioContent):
        return f"[{block.type} {block.mime_type}, {_decoded_size(block.data)} bytes]"
    if isinstance(block, mcp_types.ResourceLink):
        kind = f", {block.mime_type}" if block.mime_type else ""
        return f"[resource link {block.uri}{kind}]"
    if isinstance(block, mcp_types.EmbeddedResource):
        resource = block.resource
        kind = f", {resource.mime_type}" if resource.mime_type else ""
        if isinstance(resource, mcp_types.TextResourceContents):
            return f"[resource {resource.uri}{kind}, {len(resource.text)} characters]"
        size = _decoded_size(getattr(resource, "blob", ""))
        return f"[resource {resource.uri}{kind}, {size} bytes]"
    return f"[{getattr(block, 'type', type(block).__name__)} content]"


def _decoded_size(data: str) -> int:
    try:
        return len(base64.b64decode(data, validate=False))
    except (binascii.Error, ValueError):
        return len(data)


def to_result(name: str, result: mcp_types.CallToolResult) -> ToolResult:
    """A hubbub result from an MCP one: text blocks joined by newlines, other blocks described
    in a line each, ``isError`` as ``is_error``, ``structuredContent`` as ``data``."""
    parts = [
        block.text if isinstance(block, mcp_types.TextContent) else describe_block(block)
        for block in result.content
    ]
    return ToolResult(
        call_id="",
        name=name,
        content="\n".join(parts),
        is_error=bool(result.is_error),
        data=result.structured_content,
    )


class McpTool:
    """One tool of an MCP server, as hubbub offers it.

    :param spec: its spec (the full, safe name; the server's schemas).
    :param original: its name on the server: what is called.
    :param caller: the server's supervisor, which runs the call.
    """

    def __init__(self, spec: ToolSpec, original: str, caller: Caller) -> None:
        self._spec = spec
        self.original = original
        self.caller = caller

    @property
    def spec(self) -> ToolSpec:
        """Name, description, schemas and timeout."""
        return self._spec

    async def call(self, arguments: dict[str, Any], context: ToolContext) -> ToolResult:
        """Call the tool on its server. Arguments were validated against the input schema by
        the registry. Raises :class:`hubbub.errors.ToolError` when the server is down or goes
        down during the call."""
        result = await self.caller.call_tool(self.original, arguments)
        return to_result(self._spec.name, result)


@dataclass(frozen=True)
class Listing:
    """The tools hubbub takes from a server's listing, and what it left out."""

    tools: list[McpTool]
    """The tools offered, sorted by name."""
    problems: list[str] = field(default_factory=list)
    """What was left out or changed, in a few words each (for the server's health)."""


def _schema_size(schema: dict[str, Any] | None) -> int:
    if schema is None:
        return 0
    try:
        return len(json.dumps(schema, separators=(",", ":")).encode())
    except (TypeError, ValueError):
        return MAX_SCHEMA_BYTES + 1


def build_tools(
    config: McpServerConfig,
    listed: Sequence[mcp_types.Tool],
    caller: Caller,
    previous: Sequence[McpTool] = (),
) -> Listing:
    """The tools of a server's listing that its ``tools`` patterns let through, by name, within
    the limits (:data:`MAX_TOOLS`, :data:`MAX_DESCRIPTION`, :data:`MAX_SCHEMA_BYTES`).

    A tool of ``previous`` (the last listing) whose original name and spec did not change is
    reused as it is: the registry then keeps its state (its concurrency slots)."""
    unique = {tool.name: tool for tool in reversed(listed)}  # a name listed twice: the first
    offered = sorted(
        (
            tool
            for name, tool in unique.items()
            if config.tools is None or matches(config.tools, name)
        ),
        key=lambda tool: tool.name,
    )
    problems: list[str] = []
    oversized = [
        tool.name
        for tool in offered
        if max(_schema_size(tool.input_schema), _schema_size(tool.output_schema)) > MAX_SCHEMA_BYTES
    ]
    if oversized:
        offered = [tool for tool in offered if tool.name not in oversized]
        shown = ", ".join(repr(name[:64]) for name in oversized[:3])
        more = f" and {len(oversized) - 3} more" if len(oversized) > 3 else ""
        problems.append(
            f"{len(oversized)} hidden (schema over {MAX_SCHEMA_BYTES // 1024} KiB: {shown}{more})"
        )
    if len(offered) > MAX_TOOLS:
        problems.append(f"{len(offered) - MAX_TOOLS} left out (more than {MAX_TOOLS} tools)")
        offered = offered[:MAX_TOOLS]
    cut = 0
    names = safe_names(config.name, [tool.name for tool in offered])
    reusable = {tool.original: tool for tool in previous if tool.caller is caller}
    tools = []
    for tool in offered:
        description = tool.description or tool.title or ""
        if len(description) > MAX_DESCRIPTION:
            description = description[: MAX_DESCRIPTION - 1] + "…"
            cut += 1
        spec = ToolSpec(
            name=names[tool.name],
            description=description,
            parameters=dict(tool.input_schema),
            output_schema=dict(tool.output_schema) if tool.output_schema is not None else None,
            timeout=config.call_timeout,
        )
        old = reusable.get(tool.name)
        tools.append(
            old if old is not None and old.spec == spec else McpTool(spec, tool.name, caller)
        )
    if cut:
        problems.append(f"{cut} description{'s' * (cut != 1)} cut to {MAX_DESCRIPTION} characters")
    return Listing(sorted(tools, key=lambda t: t.spec.name), problems)
