"""Tools: helpers to write tools as plain ``async`` functions (:mod:`hubbub.tools.functions`) and
the registry the runtime builds from tool providers (:mod:`hubbub.tools.registry`)."""

from __future__ import annotations

from hubbub.tools.functions import FunctionTool, StaticToolProvider, function_tools
from hubbub.tools.registry import ToolRegistry

__all__ = ["FunctionTool", "StaticToolProvider", "ToolRegistry", "function_tools"]
