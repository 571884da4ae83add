"""``GET /api/tools``."""

from __future__ import annotations

from litestar import get

from hubbub.models import Principal, ToolSpec
from hubbub.runtime import Runtime

__all__ = ["list_tools"]


@get("/api/tools", tags=["tools"], summary="Tools models may call, with JSON Schemas")
async def list_tools(runtime: Runtime, principal: Principal) -> dict[str, list[ToolSpec]]:
    return {"tools": runtime.tools.specs()}
