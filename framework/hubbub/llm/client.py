"""The LLM client: one front for every provider.

A request goes through the LLM middleware (:mod:`hubbub.middleware`, lowest ``priority``
outermost; the ``before_llm_request`` and ``after_llm_response`` hooks are one of them), then to
the client's own handler, innermost: the router (:mod:`hubbub.llm.routing`) tries the models of
the request's chain (after every middleware, which may have changed the model) with retries,
breakers and deadlines, turning a provider that is too slow into
:class:`hubbub.errors.ProviderTimeoutError` (for a stream: too slow between chunks) and any other
provider failure into :class:`hubbub.errors.ProviderError`. Every reply a provider produced
(also one cut short: a reader that leaves mid-stream still used tokens) is accounted for: the
tokens the provider did not report are counted, the cost comes from the price table
(:mod:`hubbub.llm.pricing`), and a ``usage`` event is published.

A provider that streams without ever waiting cannot hold the event loop: the client yields to it
every :data:`YIELD_EVERY` chunks (readers that publish or send every chunk merge them first with
:func:`hubbub.llm.coalesce.coalesce`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from typing import Any

import msgspec

from hubbub.contracts import LLMMiddleware, LLMProvider
from hubbub.errors import (
    ConfigError,
    ConfigIssue,
    HubbubError,
    ProviderError,
    ProviderTimeoutError,
    UnknownModelError,
)
from hubbub.events import EventBus, UsageRecorded
from hubbub.llm.pricing import PriceTable
from hubbub.llm.routing import RoutePolicy, Router
from hubbub.llm.streams import prime
from hubbub.llm.tokens import TokenCounter
from hubbub.middleware import StreamedReply, chain_complete, chain_stream, close_stream
from hubbub.models import ChatChunk, ChatRequest, ChatResponse, Health, ModelInfo, Usage
from hubbub.redaction import public_message

__all__ = ["LLMClient"]

logger = logging.getLogger("hubbub.llm")

YIELD_EVERY = 32
"""Chunks of a stream between two yields to the event loop: a provider that never waits (one
replaying a long answer word by word) must not keep every other request waiting."""


class LLMClient:
    """Routes chat requests to providers by model id, through the LLM middleware.

    :param providers: the started providers, by registered name; the first to claim a model id
        serves it.
    :param default_model: the model of requests that name none.
    :param timeout: seconds a provider may take to answer (for a stream: between chunks).
    :param middleware: the LLM middleware, in registration order (the chain orders them by
        ``priority``; ties keep this order). The client only calls them: they are components
        their owner starts and stops.
    :param events: where a ``usage`` event is published for every reply.
    """

    def __init__(
        self,
        providers: Mapping[str, LLMProvider],
        *,
        default_model: str,
        timeout: float,
        middleware: Sequence[LLMMiddleware] = (),
        events: EventBus | None = None,
        policy: RoutePolicy | None = None,
        fallbacks: Mapping[str, Sequence[str]] | None = None,
        counter: TokenCounter | None = None,
        prices: PriceTable | None = None,
    ) -> None:
        self.providers = dict(providers)
        self.default_model = default_model
        self.policy = policy or RoutePolicy(attempt_timeout=timeout, deadline=max(timeout, 120.0))
        """Retries, deadlines and breakers (``[llm]``)."""
        self._fallbacks = dict(fallbacks or {})
        self.counter = counter or TokenCounter()
        """Counts the tokens of replies whose provider reported none."""
        self.prices = prices
        """Prices every reply; the bundled price table is loaded at start when ``None``."""
        self.middleware: tuple[LLMMiddleware, ...] = tuple(
            sorted(middleware, key=lambda m: m.priority)
        )
        """The middleware every request goes through, in chain order: outermost first."""
        self.events = events
        """Where a ``usage`` event is published for every reply (budgets, metrics, clients)."""
        self._models: dict[str, tuple[LLMProvider, ModelInfo]] = {}
        self.router = Router(self._models, self._fallbacks, self.policy, events=events)
        """Tries the models of a request's chain (see :mod:`hubbub.llm.routing`)."""
        self._complete = chain_complete(self.middleware, self._provider_complete)
        self._stream = chain_stream(self.middleware, self._provider_stream)

    @property
    def timeout(self) -> float:
        """Seconds one try may take (for a stream: until its first chunk, then between
        chunks)."""
        return self.policy.attempt_timeout

    @timeout.setter
    def timeout(self, seconds: float) -> None:
        self.policy = dataclasses.replace(self.policy, attempt_timeout=seconds)
        self.router.policy = self.policy

    async def start(self) -> None:
        """Ask every provider for its models (the first provider to claim an id serves it) and
        load the price table."""
        if self.prices is None:
            self.prices = await PriceTable.load()
        for name, provider in self.providers.items():
            for info in await provider.list_models():
                if info.id in self._models:
                    logger.warning(
                        "model %s from provider %s is already served by %s",
                        info.id,
                        name,
                        self._models[info.id][1].provider,
                    )
                    continue
                self._models[info.id] = (provider, info)
        if self.default_model not in self._models:
            known = ", ".join(sorted(self._models)) or "none"
            raise ConfigError(
                [
                    ConfigIssue(
                        path="llm.default_model",
                        message=f"no provider serves {self.default_model!r} (available: {known})",
                    )
                ]
            )
        self.router = Router(self._models, self._fallbacks, self.policy, events=self.events)
        self.router.check()

    async def health(self) -> Health:
        """``degraded`` while a model's upstream keeps failing (its breaker is open)."""
        health = self.router.health()
        if health.status != "ok":
            return health
        return Health(detail=f"{len(self._models)} models from {len(self.providers)} providers")

    async def aclose(self) -> None:
        """The providers are components of their own; nothing to release here."""

    def models(self) -> list[ModelInfo]:
        """Every model available, sorted by id."""
        return [info for _, info in sorted(self._models.values(), key=lambda p: p[1].id)]

    def model(self, model_id: str) -> ModelInfo:
        """What is known of the model ``model_id``; :class:`UnknownModelError` when no provider
        serves it (an empty id included: this never falls back to the default model)."""
        if not model_id:
            raise UnknownModelError("a model id is required", field="model")
        return self.resolve(model_id)[1]

    def chain(self, model: str | None) -> list[ModelInfo]:
        """The models that may answer a request naming ``model`` (the default model when
        ``None``), in the order they are tried: itself, then its ``[llm.fallbacks]``. Budgets
        reserve for the dearest of them."""
        first = self.resolve(model)[1]
        return [first, *(self._models[name][1] for name in self.router.chain(first.id)[1:])]

    def resolve(self, model: str | None) -> tuple[LLMProvider, ModelInfo]:
        """The provider and model info for ``model`` (the default model when ``None``)."""
        model_id = model or self.default_model
        found = self._models.get(model_id)
        if found is None:
            known = ", ".join(sorted(self._models)) or "none"
            raise UnknownModelError(
                f"model {model_id!r} is not available (available: {known})", field="model"
            )
        return found

    async def _record(self, request: ChatRequest, response: ChatResponse) -> None:
        """Account for one reply a provider produced, whole or not: fill in the tokens the
        provider did not report (counted here), price it, and publish a ``usage`` event."""
        found = self._models.get(request.model)
        info = found[1] if found is not None else None
        usage = response.usage
        if info is not None:
            usage = await self._accounted(request, response, info)
            response.usage = response.message.usage = usage
        if self.events is not None:
            self.events.publish(
                UsageRecorded(
                    model=request.model,
                    usage=usage,
                    owner=request.user,
                    conversation_id=request.metadata.get("conversation_id"),
                    provider=info.provider if info is not None else None,
                    key_id=request.metadata.get("key_id"),
                    request_id=request.metadata.get("request_id"),
                )
            )

    async def _accounted(
        self, request: ChatRequest, response: ChatResponse, info: ModelInfo
    ) -> Usage:
        """``response``'s usage with its tokens counted when the provider reported none (a
        stream cut short, a provider that never says) and its cost from the price table."""
        usage = response.usage
        if not usage.prompt_tokens and not usage.completion_tokens and self.counter is not None:
            model = info.pricing_id
            message = response.message
            prompt = await self.counter.count_prompt(model, request.messages, request.tools)
            completion = await self.counter.count_completion(
                model, message.content, message.tool_calls
            )
            usage = Usage(
                prompt_tokens=prompt,
                completion_tokens=completion,
                total_tokens=prompt + completion,
                cost=usage.cost,
            )
        return self._priced(info, usage)

    def _priced(self, info: ModelInfo, usage: Usage) -> Usage:
        """``usage`` with its cost at ``info``'s prices (unchanged when they are unknown)."""
        if self.prices is not None:
            cost = self.prices.cost(info, usage)
            if cost is not None:
                return msgspec.structs.replace(usage, cost=cost)
        return usage

    def _own(self, request: ChatRequest) -> ChatRequest:
        """Fill in the default model and, when middleware may change the request in place, give
        it messages of its own: the caller's (a conversation's history, messages already
        published in events) stay as they are."""
        if not request.model:
            request.model = self.default_model
        if self.middleware:
            request.messages = [msgspec.structs.replace(m) for m in request.messages]
        return request

    async def complete(self, request: ChatRequest) -> ChatResponse:
        """Send ``request`` through the middleware and wait for the whole reply."""
        return await self._complete(self._own(request))

    async def open_stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        """Send ``request`` through the middleware and wait for the first chunk, then return
        the stream (which yields that chunk first): a refusal, an unknown model or a provider
        that fails before answering is raised here, before anything is sent to a client. Close
        the stream (``aclose()``) when leaving it early."""
        return await prime(self._stream(self._own(request)))

    async def stream(self, request: ChatRequest) -> AsyncGenerator[ChatChunk, None]:
        """Send ``request`` through the middleware and yield the reply as it arrives. The last
        chunk has ``finish_reason`` and ``usage``. Closing this generator early closes every
        layer of the chain."""
        chunks = await self.open_stream(request)
        try:
            async for chunk in chunks:
                yield chunk
        finally:
            closer: Any = getattr(chunks, "aclose", None)
            if closer is not None:
                await closer()

    # -- innermost: the provider, through the router -----------------------------------------

    async def _provider_complete(self, request: ChatRequest) -> ChatResponse:
        self.resolve(request.model)  # after the middleware: they may have changed it
        return await self.router.run(request, self._attempt_complete)

    async def _attempt_complete(
        self, provider: LLMProvider, request: ChatRequest, seconds: float
    ) -> ChatResponse:
        async with asyncio.timeout(seconds):
            response = await provider.complete(request)
        await self._record(request, response)
        return response

    async def _attempt_open(
        self, provider: LLMProvider, request: ChatRequest, seconds: float
    ) -> tuple[ChatRequest, ChatChunk | None, AsyncIterator[ChatChunk]]:
        """Open a stream and wait for its first chunk: until then a failure can still be
        retried or fall back."""
        iterator = aiter(provider.stream(request))
        try:
            async with asyncio.timeout(seconds):
                first: ChatChunk | None = await anext(iterator)
        except StopAsyncIteration:
            first = None
        except BaseException:
            await close_stream(iterator)
            raise
        return request, first, iterator

    async def _provider_stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        self.resolve(request.model)  # after the middleware: they may have changed it
        routed, first, iterator = await self.router.run(request, self._attempt_open)
        info = self._models[routed.model][1]
        reply = StreamedReply()
        outcome = "cancelled"  # until the stream ends one way or the other
        count = 0
        try:
            if first is not None:
                if first.usage is not None:
                    first.usage = self._priced(info, first.usage)
                reply.add(first)
                yield first
            while first is not None:
                try:
                    async with asyncio.timeout(self.timeout):
                        chunk = await anext(iterator)
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    raise self._failed(
                        routed,
                        ProviderTimeoutError(
                            f"model {routed.model!r} stopped answering for {self.timeout:g} s"
                        ),
                    ) from None
                except HubbubError as exc:
                    raise self._failed(routed, exc) from None
                except Exception as exc:
                    raise self._failed(
                        routed,
                        ProviderError(f"model {routed.model!r} failed: {public_message(exc)}"),
                    ) from exc
                if chunk.usage is not None:  # priced at the model that answered
                    chunk.usage = self._priced(info, chunk.usage)
                reply.add(chunk)
                yield chunk
                count += 1
                if count % YIELD_EVERY == 0:
                    await asyncio.sleep(0)  # let the loop serve others, however fast the provider
            outcome = "stop"
        except Exception:
            outcome = "error"
            raise
        finally:
            # Closing the provider's stream closes its connection: the upstream stops working
            # (and billing) for a reader that left.
            await close_stream(iterator)
            # Recorded however the stream ended (a reader that leaves still used tokens), and
            # shielded: a cancelled reader does not cancel its own accounting.
            await asyncio.shield(self._record(routed, reply.response(routed.model, outcome)))

    def _failed(self, request: ChatRequest, exc: HubbubError) -> HubbubError:
        """A stream that failed after its first chunk: counted against its upstream."""
        breaker = self.router.breakers.get(request.model)
        if breaker is not None:
            breaker.record(exc)
        return exc
