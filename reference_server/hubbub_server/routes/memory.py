"""Long-term memory under ``/api/memory``: what the caller's conversations know about them.

Each caller sees and deletes only their own memories (another's id is a 404). Memories are shown
to models in every conversation of theirs (``[context] memories``), newest first.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, delete, get, post
from litestar.params import FromPath, JSONBody, Parameter

from hubbub.memory.facts import MAX_MEMORY_CHARS
from hubbub.models import MemoryItem, Page
from hubbub_server.problems import PROBLEM_RESPONSES
from hubbub_server.security import Caller, RuntimeDep

__all__ = ["MemoryController"]

Limit = Annotated[int, Parameter(ge=1, le=200, description="Page size.")]
Cursor = Annotated[str | None, Parameter(description="next_cursor of the previous page.")]


class AddMemory(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Body of ``POST /api/memory``."""

    content: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_MEMORY_CHARS)]
    """The fact to remember, in plain words."""
    source_conversation_id: str | None = None
    """One of your conversations it comes from."""
    expires_at: Annotated[float, msgspec.Meta(gt=0)] | None = None
    """When to forget it (Unix seconds); default: ``[retention] memory_days``, else never."""
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)
    """Free-form data kept with it (at most 4 KiB as JSON)."""


class Forgotten(msgspec.Struct, kw_only=True):
    """Body of ``DELETE /api/memory``'s answer."""

    deleted: int
    """How many memories were forgotten."""


class MemoryController(Controller):
    path = "/api/memory"
    tags = ["memory"]

    @get("/", summary="List your long-term memories, newest first", responses=PROBLEM_RESPONSES)
    async def list_memories(
        self, runtime: RuntimeDep, principal: Caller, limit: Limit = 100, cursor: Cursor = None
    ) -> Page[MemoryItem]:
        return await runtime.conversations.memories.list_memories(
            principal, limit=limit, cursor=cursor
        )

    @post("/", summary="Remember something about you", responses=PROBLEM_RESPONSES)
    async def add_memory(
        self, runtime: RuntimeDep, principal: Caller, data: JSONBody[AddMemory]
    ) -> MemoryItem:
        return await runtime.conversations.memories.add(
            principal,
            data.content,
            source_conversation_id=data.source_conversation_id,
            expires_at=data.expires_at,
            metadata=data.metadata,
        )

    @delete("/{memory_id:str}", summary="Forget one memory", responses=PROBLEM_RESPONSES)
    async def delete_memory(
        self, runtime: RuntimeDep, principal: Caller, memory_id: FromPath[str]
    ) -> None:
        await runtime.conversations.memories.delete(principal, memory_id)

    @delete(
        "/",
        summary="Forget all your memories",
        status_code=200,
        responses=PROBLEM_RESPONSES,
    )
    async def forget_all(self, runtime: RuntimeDep, principal: Caller) -> Forgotten:
        return Forgotten(deleted=await runtime.conversations.memories.clear(principal))
