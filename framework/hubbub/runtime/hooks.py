"""The ``before_llm_request`` and ``after_llm_response`` hooks, run as one LLM middleware."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from hubbub.contracts import CompleteNext, StreamNext
from hubbub.middleware import LLMMiddlewareBase, StreamedReply
from hubbub.models import ChatChunk, ChatRequest, ChatResponse

__all__ = ["HookCaller", "HookMiddleware"]

logger = logging.getLogger("hubbub.runtime")


HookCaller = Callable[..., Awaitable[Any]]
"""An async callable taking keyword arguments, such as one that runs a pluggy hook."""


class HookMiddleware(LLMMiddlewareBase):
    """The ``before_llm_request`` and ``after_llm_response`` hooks as one middleware.

    ``call_before(request=...)`` runs before the request goes on: it may change the request in
    place, and its :class:`hubbub.errors.HubbubError` refuses the request. ``call_after(
    request=..., response=...)`` runs once per reply: a whole reply when it has arrived, a
    streamed one when it ends, whole or not (``finish_reason`` ``cancelled`` when the reader
    left, ``error`` when it failed after its first chunk; a request that fails before any reply
    is not one). Its exceptions are logged and never reach the caller, who has the reply.
    Either may be ``None``.
    """

    def __init__(
        self,
        call_before: HookCaller | None,
        call_after: HookCaller | None,
        *,
        priority: int = 0,
    ) -> None:
        self.call_before = call_before
        self.call_after = call_after
        self.priority = priority

    async def _after(self, request: ChatRequest, response: ChatResponse) -> None:
        if self.call_after is None:
            return
        try:
            await self.call_after(request=request, response=response)
        except Exception:
            logger.exception("after_llm_response hook failed", extra={"model": request.model})

    async def complete(self, request: ChatRequest, call_next: CompleteNext) -> ChatResponse:
        """Run the before hooks, the rest of the chain, then the after hooks."""
        if self.call_before is not None:
            await self.call_before(request=request)
        response = await call_next(request)
        await self._after(request, response)
        return response

    async def stream(self, request: ChatRequest, call_next: StreamNext) -> AsyncIterator[ChatChunk]:
        """Run the before hooks, the chunks, then the after hooks with the reply as it ended."""
        if self.call_before is not None:
            await self.call_before(request=request)
        reply = StreamedReply()
        try:
            async for chunk in call_next(request):
                reply.add(chunk)
                yield chunk
        except (GeneratorExit, asyncio.CancelledError):
            await self._after(request, reply.response(request.model, "cancelled"))
            raise
        except Exception:
            if reply.chunks:
                await self._after(request, reply.response(request.model, "error"))
            raise
        await self._after(request, reply.response(request.model))
