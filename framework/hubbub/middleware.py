"""Middleware around LLM requests and tool calls: base classes to write them, and the chains
that run them.

A middleware is a component (:class:`hubbub.contracts.LLMMiddleware` or
:class:`hubbub.contracts.ToolMiddleware`) registered with ``register_llm_middleware`` or
``register_tool_middleware``. Every one runs on every call, in increasing ``priority``: the
lowest is outermost, first to see the request and last to see the reply or the failure; equal
priorities keep registration order. Start from a base class and override only what you need::

    class Budget(LLMMiddlewareBase):
        priority = -100  # outside the others: refuse before anything else runs

        async def complete(self, request, call_next):
            await self.check(request.user)
            response = await call_next(request)
            await self.charge(request.user, response.usage)
            return response

        async def stream(self, request, call_next):
            await self.check(request.user)
            usage = None
            try:
                async for chunk in call_next(request):
                    usage = chunk.usage or usage
                    yield chunk
            finally:  # also when the reader leaves early
                await self.charge(request.user, usage)

When the same paired callbacks suit whole and streamed replies, subclass :class:`LLMCallbacks`
and write ``before`` / ``after`` / ``on_error`` once. The runtime builds each chain once with
:func:`chain_complete`, :func:`chain_stream` and :func:`chain_tool`; without middleware they
return the handler itself.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Iterable
from typing import Protocol, TypeVar

from hubbub.contracts import (
    CompleteNext,
    LLMMiddleware,
    StreamNext,
    ToolContext,
    ToolMiddleware,
    ToolNext,
)
from hubbub.errors import blame
from hubbub.models import ChatChunk, ChatRequest, ChatResponse, Health, ToolCall, ToolResult, Usage

__all__ = [
    "LLMCallbacks",
    "LLMMiddlewareBase",
    "StreamedReply",
    "ToolMiddlewareBase",
    "chain_complete",
    "chain_stream",
    "chain_tool",
    "close_stream",
]

logger = logging.getLogger("hubbub.middleware")


# -- base classes ------------------------------------------------------------------------------


class LLMMiddlewareBase:
    """An :class:`hubbub.contracts.LLMMiddleware` that passes everything through: override
    ``complete``, ``stream`` or both, and the lifecycle methods when there is something to
    acquire. A method left as it is adds no layer to its chain."""

    priority: int = 0
    """Position in the chain: lower runs first on the way in, last on the way out."""

    async def start(self) -> None:
        """Nothing to acquire."""

    async def health(self) -> Health:
        """Always ``ok``."""
        return Health()

    async def aclose(self) -> None:
        """Nothing to release."""

    async def complete(self, request: ChatRequest, call_next: CompleteNext) -> ChatResponse:
        """Pass the request on unchanged."""
        return await call_next(request)

    def stream(self, request: ChatRequest, call_next: StreamNext) -> AsyncIterator[ChatChunk]:
        """Pass the request on unchanged (override it as an ``async def`` generator)."""
        return call_next(request)


class ToolMiddlewareBase:
    """A :class:`hubbub.contracts.ToolMiddleware` that passes every call through: override
    ``call_tool``, and the lifecycle methods when there is something to acquire."""

    priority: int = 0
    """Position in the chain: lower runs first on the way in, last on the way out."""

    async def start(self) -> None:
        """Nothing to acquire."""

    async def health(self) -> Health:
        """Always ``ok``."""
        return Health()

    async def aclose(self) -> None:
        """Nothing to release."""

    async def call_tool(
        self, call: ToolCall, context: ToolContext, call_next: ToolNext
    ) -> ToolResult:
        """Pass the call on unchanged."""
        return await call_next(call, context)


class StreamedReply:
    """What a stream has delivered so far, to turn into a :class:`ChatResponse` at its end
    (whole or cut short): feed it every chunk with :meth:`add`."""

    __slots__ = ("calls", "chunks", "finish_reason", "parts", "usage")

    def __init__(self) -> None:
        self.parts: list[str] = []
        """The text deltas, in order."""
        self.calls: list[ToolCall] = []
        """The tool calls, in order."""
        self.finish_reason: str | None = None
        """The last ``finish_reason`` seen; ``None`` until the final chunk arrives."""
        self.usage: Usage | None = None
        """The last ``usage`` seen; ``None`` when the provider reported none (yet)."""
        self.chunks = 0
        """How many chunks arrived."""

    def add(self, chunk: ChatChunk) -> None:
        """Account for one chunk."""
        self.chunks += 1
        if chunk.delta:
            self.parts.append(chunk.delta)
        if chunk.tool_calls:
            self.calls.extend(chunk.tool_calls)
        if chunk.finish_reason:
            self.finish_reason = chunk.finish_reason
        if chunk.usage is not None:
            self.usage = chunk.usage

    def response(self, model: str, outcome: str | None = None) -> ChatResponse:
        """The reply so far. ``outcome`` is the ``finish_reason`` when the stream did not end
        on its own: ``error``, or ``cancelled`` (ignored then if the final chunk had already
        arrived: the reply was whole)."""
        finish = self.finish_reason
        if outcome == "error" or finish is None:
            finish = outcome or "stop"
        return ChatResponse.of(
            model, "".join(self.parts), self.calls, self.usage or Usage(), finish
        )


class LLMCallbacks(LLMMiddlewareBase):
    """LLM middleware written as three paired callbacks, the same for whole and streamed
    replies. For every ``before`` that returns, exactly one of ``after`` and ``on_error`` runs.

    * :meth:`before` may change the request in place or raise a
      :class:`hubbub.errors.HubbubError` to refuse it (then neither of the others runs);
    * :meth:`after` gets the reply: a streamed one once, assembled, when it ends, also when the
      reader leaves early (``finish_reason`` is then ``cancelled``). Raising from it turns the
      reply into that error (for a stream: at its end, after the chunks were delivered);
    * :meth:`on_error` gets the failure, which is re-raised afterwards (raise another to
      replace it).
    """

    async def before(self, request: ChatRequest) -> None:
        """Called before the request goes on."""

    async def after(self, request: ChatRequest, response: ChatResponse) -> None:
        """Called with the reply (for a stream, once it has ended)."""

    async def on_error(self, request: ChatRequest, exc: BaseException) -> None:
        """Called with what stopped the reply: a :class:`hubbub.errors.ProviderError`, a
        refusal from a middleware further in, or :class:`asyncio.CancelledError` when the task
        waiting for a whole reply was cancelled."""

    async def complete(self, request: ChatRequest, call_next: CompleteNext) -> ChatResponse:
        """``before``, the rest of the chain, then ``after`` or ``on_error``."""
        await self.before(request)
        try:
            response = await call_next(request)
        except BaseException as exc:
            await self.on_error(request, exc)
            raise
        await self.after(request, response)
        return response

    async def stream(self, request: ChatRequest, call_next: StreamNext) -> AsyncIterator[ChatChunk]:
        """``before``, the chunks, then ``after`` with the assembled reply or ``on_error``."""
        await self.before(request)
        reply = StreamedReply()
        try:
            async for chunk in call_next(request):
                reply.add(chunk)
                yield chunk
        except (GeneratorExit, asyncio.CancelledError):
            await self.after(request, reply.response(request.model, "cancelled"))
            raise
        except Exception as exc:
            await self.on_error(request, exc)
            raise
        await self.after(request, reply.response(request.model))


# -- chains ------------------------------------------------------------------------------------


class _Prioritised(Protocol):
    @property
    def priority(self) -> int: ...


P = TypeVar("P", bound=_Prioritised)


def _layers(middleware: Iterable[P], method: str, base: type) -> list[P]:
    """``middleware`` in chain order (``sorted`` is stable: ties keep registration order),
    without those whose ``method`` is ``base``'s pass-through."""
    passthrough = getattr(base, method)
    ordered = sorted(middleware, key=lambda m: m.priority)
    return [m for m in ordered if getattr(type(m), method, None) is not passthrough]


async def close_stream(chunks: object) -> None:
    """Close an async iterator if it can be closed; log (never raise) what its cleanup raised,
    so one faulty layer does not keep the others from closing."""
    closer = getattr(chunks, "aclose", None)
    if closer is None:
        return
    try:
        await closer()
    except Exception:
        logger.exception("a stream layer failed while closing")


def chain_complete(middleware: Iterable[LLMMiddleware], handler: CompleteNext) -> CompleteNext:
    """Build the chain for whole replies once: ``handler`` innermost, ``middleware`` around it
    in increasing priority (the lowest outermost). Returns ``handler`` itself when no
    middleware overrides ``complete``."""
    call = handler
    for layer in reversed(_layers(middleware, "complete", LLMMiddlewareBase)):
        call = _bind_complete(layer, call)
    return call


def _describe(layer: object) -> str:
    cls = type(layer)
    return f"LLM middleware {cls.__qualname__} ({cls.__module__})"


def _bind_complete(layer: LLMMiddleware, call_next: CompleteNext) -> CompleteNext:
    method = layer.complete

    async def run(request: ChatRequest) -> ChatResponse:
        try:
            return await method(request, call_next)
        except Exception as exc:  # inner layers' own failures arrive here as HubbubErrors
            raise blame(exc, f"{_describe(layer)} failed") from exc

    return run


def chain_stream(middleware: Iterable[LLMMiddleware], handler: StreamNext) -> StreamNext:
    """Build the chain for streamed replies once: ``handler`` innermost, ``middleware`` around
    it in increasing priority. Returns ``handler`` itself when no middleware overrides
    ``stream``; raises :class:`TypeError` for a ``stream`` written as a coroutine function.

    Closing the returned stream early (the reader left) closes every layer, innermost first,
    so each one's ``finally`` runs in order; so does a layer that stops reading its inner
    stream before the end. A failure travels outwards through each layer's ``except``."""
    call = handler
    for layer in reversed(_layers(middleware, "stream", LLMMiddlewareBase)):
        call = _bind_stream(layer, call)
    return call


def _bind_stream(layer: LLMMiddleware, call_next: StreamNext) -> StreamNext:
    method = layer.stream
    if inspect.iscoroutinefunction(method):
        raise TypeError(
            f"{type(layer).__qualname__}.stream is a coroutine function; it must return the "
            "chunks: write it as an async generator (async def with yield) or a plain def"
        )

    async def run(request: ChatRequest) -> AsyncIterator[ChatChunk]:
        opened: list[AsyncIterator[ChatChunk]] = []

        def tracked(request: ChatRequest) -> AsyncIterator[ChatChunk]:
            chunks = call_next(request)
            opened.append(chunks)
            return chunks

        chunks: AsyncIterator[ChatChunk] | None = None
        try:
            chunks = method(request, tracked)
            async for chunk in chunks:
                yield chunk
        except Exception as exc:  # inner layers' own failures arrive here as HubbubErrors
            raise blame(exc, f"{_describe(layer)} failed") from exc
        finally:
            # A plain ``async for`` leaves an unfinished inner stream suspended: close what
            # this layer opened (innermost first), then the layer itself.
            for inner in reversed(opened):
                await close_stream(inner)
            if chunks is not None:
                await close_stream(chunks)

    return run


def chain_tool(middleware: Iterable[ToolMiddleware], handler: ToolNext) -> ToolNext:
    """Build the chain for tool calls once: ``handler`` innermost, ``middleware`` around it in
    increasing priority. Returns ``handler`` itself when no middleware overrides
    ``call_tool``."""
    call = handler
    for layer in reversed(_layers(middleware, "call_tool", ToolMiddlewareBase)):
        call = _bind_tool(layer, call)
    return call


def _bind_tool(layer: ToolMiddleware, call_next: ToolNext) -> ToolNext:
    method = layer.call_tool
    return lambda call, context: method(call, context, call_next)
