"""Tools: writing them as typed ``async`` functions (:mod:`hubbub.tools.functions`), their names
(:mod:`hubbub.tools.names`), who may use which (:mod:`hubbub.tools.access`), and the registry the
runtime builds from tool providers, where every call runs (:mod:`hubbub.tools.registry`)."""

from __future__ import annotations

from hubbub.tools.access import ToolAccess
from hubbub.tools.functions import FunctionTool, StaticToolProvider, function_tools, tool
from hubbub.tools.names import WireNames
from hubbub.tools.registry import ToolRegistry, ToolSet

__all__ = [
    "FunctionTool",
    "StaticToolProvider",
    "ToolAccess",
    "ToolRegistry",
    "ToolSet",
    "WireNames",
    "function_tools",
    "tool",
]
