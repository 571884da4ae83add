"""The LLM client: one front for every provider.

It routes a request to the provider that serves its model, runs the ``before_llm_request`` and
``after_llm_response`` hooks around it, publishes a ``usage`` event for every reply (also one
cut short: a client that leaves mid-stream still used tokens), and turns a provider that is too
slow into :class:`hubbub.errors.ProviderTimeoutError` (for a stream: too slow between chunks).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from hubbub.contracts import LLMProvider
from hubbub.errors import (
    ConfigError,
    ConfigIssue,
    HubbubError,
    ProviderError,
    ProviderTimeoutError,
    UnknownModelError,
)
from hubbub.events import EventBus, UsageRecorded
from hubbub.models import (
    ChatChunk,
    ChatRequest,
    ChatResponse,
    Health,
    ModelInfo,
    ToolCall,
    Usage,
)

__all__ = ["LLMClient"]

logger = logging.getLogger("hubbub.llm")

Hook = Callable[..., Awaitable[None]]


class LLMClient:
    """Routes chat requests to providers by model id."""

    def __init__(
        self,
        providers: Mapping[str, LLMProvider],
        *,
        default_model: str,
        timeout: float,
        before_request: Hook | None = None,
        after_response: Hook | None = None,
        events: EventBus | None = None,
    ) -> None:
        self.providers = dict(providers)
        self.default_model = default_model
        self.timeout = timeout
        self._before = before_request
        self._after = after_response
        self.events = events
        """Where a ``usage`` event is published for every reply (budgets, metrics, clients)."""
        self._models: dict[str, tuple[LLMProvider, ModelInfo]] = {}

    async def start(self) -> None:
        """Ask every provider for its models; the first provider to claim an id serves it."""
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

    async def health(self) -> Health:
        return Health(detail=f"{len(self._models)} models from {len(self.providers)} providers")

    async def aclose(self) -> None:
        """The providers are components of their own; nothing to release here."""

    def models(self) -> list[ModelInfo]:
        """Every model available, sorted by id."""
        return [info for _, info in sorted(self._models.values(), key=lambda p: p[1].id)]

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

    async def _prepare(self, request: ChatRequest) -> LLMProvider:
        if not request.model:
            request.model = self.default_model
        if self._before is not None:
            await self._before(request=request)
        provider, _ = self.resolve(request.model)  # after the hooks: they may change the model
        return provider

    async def _record(self, request: ChatRequest, response: ChatResponse) -> None:
        """Account for one reply, whole or not: a ``usage`` event, then the hooks."""
        if self.events is not None:
            self.events.publish(
                UsageRecorded(
                    model=request.model,
                    usage=response.usage,
                    owner=request.user,
                    conversation_id=request.metadata.get("conversation_id"),
                )
            )
        if self._after is None:
            return
        try:
            await self._after(request=request, response=response)
        except Exception:
            logger.exception("after_llm_response hook failed", extra={"model": request.model})

    async def complete(self, request: ChatRequest) -> ChatResponse:
        """Send ``request`` and wait for the whole reply."""
        provider = await self._prepare(request)
        try:
            async with asyncio.timeout(self.timeout):
                response = await provider.complete(request)
        except TimeoutError:
            raise ProviderTimeoutError(
                f"model {request.model!r} did not answer within {self.timeout:g} s"
            ) from None
        except HubbubError:
            raise
        except Exception as exc:
            raise ProviderError(f"model {request.model!r} failed: {exc}") from exc
        await self._record(request, response)
        return response

    async def open_stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        """Run the ``before_llm_request`` hooks and choose the provider now, then return the
        stream: a refusal or an unknown model is raised before anything is sent to a client."""
        provider = await self._prepare(request)
        return self._stream(provider, request)

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        """Send ``request`` and yield the reply as it arrives. The last chunk has
        ``finish_reason`` and ``usage``."""
        async for chunk in await self.open_stream(request):
            yield chunk

    async def _stream(
        self, provider: LLMProvider, request: ChatRequest
    ) -> AsyncIterator[ChatChunk]:
        text: list[str] = []
        calls: list[ToolCall] = []
        finish = "stop"
        outcome = "cancelled"  # until the stream ends one way or the other
        usage = Usage()
        iterator = aiter(provider.stream(request))
        try:
            while True:
                try:
                    async with asyncio.timeout(self.timeout):
                        chunk = await anext(iterator)
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    raise ProviderTimeoutError(
                        f"model {request.model!r} stopped answering for {self.timeout:g} s"
                    ) from None
                except HubbubError:
                    raise
                except Exception as exc:
                    raise ProviderError(f"model {request.model!r} failed: {exc}") from exc
                text.append(chunk.delta)
                calls.extend(chunk.tool_calls or ())
                finish = chunk.finish_reason or finish
                usage = chunk.usage or usage
                yield chunk
            outcome = finish
        except Exception:
            outcome = "error"
            raise
        finally:
            closer: Any = getattr(iterator, "aclose", None)
            if closer is not None:
                await closer()
            # Recorded however the stream ended (a client that leaves still used tokens).
            await self._record(
                request, ChatResponse.of(request.model, "".join(text), calls, usage, outcome)
            )
