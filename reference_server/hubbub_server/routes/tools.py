"""``GET /api/tools``."""

from __future__ import annotations

from litestar import get

from hubbub.models import ToolSpec
from hubbub_server.problems import PROBLEM_RESPONSES
from hubbub_server.security import Caller, RuntimeDep

__all__ = ["list_tools"]


@get(
    "/api/tools",
    tags=["tools"],
    summary="The tools you may use, with JSON Schemas",
    responses=PROBLEM_RESPONSES,
)
async def list_tools(runtime: RuntimeDep, principal: Caller) -> dict[str, list[ToolSpec]]:
    return {"tools": runtime.tools.for_caller(principal).specs()}
