"""LLM provider ``litellm``: any model litellm supports (OpenAI, Anthropic, Azure, Ollama, ...).

Each model is one entry of ``[plugins.litellm_provider]``::

    [[plugins.litellm_provider.models]]
    name = "gpt-4o-mini"                  # the id clients use
    model = "openai/gpt-4o-mini"          # litellm's model string (default: name)
    api_key = { env = "OPENAI_API_KEY" }

litellm is imported only when at least one model is configured (it takes seconds and ~200 MB),
on a thread, never at hubbub's import. It runs offline: its bundled price table is used
(``LITELLM_LOCAL_MODEL_COST_MAP``) and tiktoken reads the encodings litellm ships.

litellm gives its loggers (``LiteLLM``, ``LiteLLM Router``, ``LiteLLM Proxy``) handlers of its own
that print plain text to stdout; they are removed once it is imported, so its records reach the
log only through hubbub's handler, once, in hubbub's format.

What hubbub does itself is not done twice: litellm's retries are off (``max_retries = 0``
unless a model's ``options`` say otherwise: the LLM client retries and falls back, within its
deadline), and the provider reports the upstream's usage without pricing it (the LLM client
prices every reply, once, from the price table or the model's own prices). litellm's errors
become hubbub's, with ``retryable`` set: 429 (with the upstream's ``Retry-After``), 5xx,
timeouts and connection failures are retried; a context window overflow falls back; a refused
key and other 4xx are final.

litellm's own work per request (a thread hop per call, its response metadata, pricing and
logging payload, pydantic objects) costs milliseconds and cannot be switched off from outside;
models on OpenAI-compatible upstreams are much faster through the native ``openai_provider``
(see the providers page).

For tests and demos without a provider, a model can answer with canned text through litellm's
``mock_response`` option (``options = { mock_response = "Hello!" }``): nothing is sent anywhere.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from hubbub import hookimpl
from hubbub.config import Secret
from hubbub.errors import (
    ContextWindowExceededError,
    ProviderError,
    ProviderRateLimitedError,
    ProviderTimeoutError,
    UnknownModelError,
)
from hubbub.llm.tokens import offline_encodings
from hubbub.models import (
    ChatChunk,
    ChatRequest,
    ChatResponse,
    Health,
    Message,
    ModelInfo,
    ToolCall,
    Usage,
)
from hubbub.redaction import public_message
from hubbub.resilience import parse_retry_after
from hubbub.tools import WireNames
from hubbub_plugins.openai_provider.wire import upstream_user

if TYPE_CHECKING:
    from hubbub.registry import ComponentContext, Registrar


class LiteLLMModel(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One model served through litellm."""

    name: str
    """The model id clients use (``model`` in requests, listed by ``/v1/models``)."""
    model: str | None = None
    """litellm's model string, e.g. ``openai/gpt-4o-mini``; defaults to ``name``."""
    api_key: Secret | None = None
    """The provider's key: ``{ env = "NAME" }`` or ``{ file = "PATH" }``."""
    api_base: str | None = None
    """Base URL for OpenAI-compatible or self-hosted endpoints."""
    description: str = ""
    """Shown in model listings."""
    context_window: int | None = None
    """Tokens the model accepts; default: what litellm's bundled model table says for
    ``model`` (conversations keep what a model is shown within it, see ``[context]``)."""
    supports_tools: bool = True
    """Whether tools are offered to this model."""
    send_user: bool = False
    """Send the upstream an opaque, stable id of who asks (``user``): the first 32 hex digits of
    the SHA-256 of the principal's id, never the id itself. Off by default."""
    options: dict[str, Any] = msgspec.field(default_factory=dict)
    """Extra keyword arguments for ``litellm.acompletion`` (``top_p``, ``seed``...);
    ``max_retries`` is 0 unless set here (hubbub's ``[llm] retries`` apply)."""


class LiteLLMSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Settings of the ``litellm_provider`` plugin (``[plugins.litellm_provider]``)."""

    models: list[LiteLLMModel] = msgspec.field(default_factory=list)
    """The models to serve; none by default (then litellm is never imported)."""
    timeout: float = 60.0
    """Seconds litellm waits for the provider (hubbub's ``[llm] request_timeout`` also applies)."""


def _import_litellm() -> Any:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    offline_encodings()  # tiktoken reads the encodings litellm ships, never downloads them
    # litellm's own handler prints what it logs while it is imported to stdout; its threshold
    # comes from LITELLM_LOG, read once at import: keep it silent until it is removed below.
    saved = os.environ.get("LITELLM_LOG")
    os.environ["LITELLM_LOG"] = "CRITICAL"
    try:
        import litellm
    finally:
        if saved is None:
            del os.environ["LITELLM_LOG"]
        else:
            os.environ["LITELLM_LOG"] = saved

    litellm.telemetry = False
    litellm.suppress_debug_info = True
    _route_litellm_logs()
    return litellm


def _route_litellm_logs() -> None:
    """Remove the handlers litellm adds to its own loggers and let their records propagate to
    the root logger, where hubbub's handler formats them (their filters, which redact secrets,
    stay)."""
    loggers = logging.Logger.manager.loggerDict
    for name in [n for n in loggers if n.split(".", 1)[0].startswith("LiteLLM")]:
        foreign = logging.getLogger(name)
        foreign.handlers.clear()
        foreign.propagate = True


def _vendor(model: str) -> str | None:
    """The vendor a litellm model string names (``anthropic`` for ``anthropic/claude-...``):
    its models share one circuit breaker. ``None`` without a prefix."""
    return f"litellm:{model.split('/', 1)[0]}" if "/" in model else None


def _wire(message: Message) -> dict[str, Any]:
    data: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.name:
        data["name"] = message.name
    if message.tool_calls:
        data["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in message.tool_calls
        ]
    if message.tool_call_id:
        data["tool_call_id"] = message.tool_call_id
    return data


class LiteLLMProvider:
    """A :class:`hubbub.contracts.LLMProvider` over ``litellm.acompletion``."""

    def __init__(self, name: str, settings: LiteLLMSettings) -> None:
        self.name = name
        self.settings = settings
        self.models = {m.name: m for m in settings.models}
        self._litellm: Any = None

    async def start(self) -> None:
        if self.models:
            self._litellm = await asyncio.to_thread(_import_litellm)

    async def health(self) -> Health:
        if not self.models:
            return Health(detail="no models configured")
        return Health(detail=f"{len(self.models)} models via litellm")

    async def aclose(self) -> None:
        """litellm keeps no connections hubbub owns."""

    async def list_models(self) -> Sequence[ModelInfo]:
        return [
            ModelInfo(
                id=m.name,
                provider=self.name,
                description=m.description,
                context_window=m.context_window or self._known_window(m.model or m.name),
                supports_tools=m.supports_tools,
                upstream_model=m.model,  # prices, limits and the tokenizer follow litellm's id
                upstream=m.api_base or _vendor(m.model or m.name),
            )
            for m in self.models.values()
        ]

    def _known_window(self, model: str) -> int | None:
        """The input tokens litellm's bundled table gives ``model`` (with or without its
        provider prefix), if it knows the model."""
        table = getattr(self._litellm, "model_cost", None) or {}
        for name in (model, model.split("/", 1)[-1]):
            entry = table.get(name)
            if isinstance(entry, dict):
                window = entry.get("max_input_tokens") or entry.get("max_tokens")
                if isinstance(window, int) and window > 0:
                    return window
        return None

    def _arguments(self, request: ChatRequest, names: WireNames) -> dict[str, Any]:
        entry = self.models.get(request.model)
        if entry is None:
            raise UnknownModelError(
                f"model {request.model!r} is not configured for litellm", field="model"
            )
        arguments: dict[str, Any] = {
            "model": entry.model or entry.name,
            "messages": [_wire(m) for m in names.messages_to_wire(request.messages)],
            "timeout": self.settings.timeout,
            "max_retries": 0,  # the LLM client retries and falls back, within its deadline
            **entry.options,
        }
        if entry.api_key is not None:
            arguments["api_key"] = entry.api_key.reveal()
        if entry.api_base:
            arguments["api_base"] = entry.api_base
        if request.tools and entry.supports_tools:
            arguments["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": names.to_wire(t.name),
                        "description": t.description,
                        "parameters": t.parameters,
                    },
                }
                for t in request.tools
            ]
            if request.tool_choice is not None:
                arguments["tool_choice"] = names.choice_to_wire(request.tool_choice)
        for key in ("temperature", "max_tokens", "stop"):
            value = getattr(request, key)
            if value is not None:
                arguments[key] = value
        if entry.send_user and request.user:
            arguments["user"] = upstream_user(request.user)
        return arguments

    def _error(self, request: ChatRequest, exc: Exception) -> Exception:
        """hubbub's error for litellm's ``exc``, ``retryable`` as the LLM client needs it."""
        litellm = self._litellm
        model = request.model
        if isinstance(exc, litellm.Timeout | TimeoutError):
            return ProviderTimeoutError(f"model {model!r} timed out", retryable=True)
        status = getattr(exc, "status_code", None)
        status = status if isinstance(status, int) else None
        if isinstance(exc, litellm.AuthenticationError | litellm.PermissionDeniedError) or (
            status in (401, 403)
        ):  # the upstream's message may quote part of the key: not shown
            return ProviderError(
                f"model {model!r}: the upstream refused the key; check the model's api_key",
                retryable=False,
                upstream_status=status,
            )
        # litellm's messages carry the provider's explanation; no traceback leaves hubbub,
        # nor what the transport's message holds of the process (<ssl.SSLContext object at
        # 0x...>, credentials in an api_base).
        message = public_message(str(exc).split("\n", 1)[0])
        if isinstance(exc, litellm.ContextWindowExceededError):
            return ContextWindowExceededError(
                f"model {model!r}: the request does not fit the model's context window: {message}",
                upstream_status=status,
            )
        if isinstance(exc, litellm.RateLimitError) or status == 429:
            return ProviderRateLimitedError(
                f"model {model!r} is rate limited: {message}",
                upstream_status=429,
                retry_after=_retry_after(exc),
            )
        if isinstance(exc, litellm.APIConnectionError):
            retryable: bool | None = True
        elif status is not None:
            retryable = status >= 500 or status in (408, 409)
        else:
            retryable = None
        return ProviderError(
            f"model {model!r} failed: {message}", retryable=retryable, upstream_status=status
        )

    def _usage(self, raw: Any) -> Usage:
        """The upstream's token counts (never priced here: the LLM client prices replies)."""
        if raw is None:
            return Usage()
        return Usage(
            prompt_tokens=raw.prompt_tokens or 0,
            completion_tokens=raw.completion_tokens or 0,
            total_tokens=raw.total_tokens or 0,
        )

    async def complete(self, request: ChatRequest) -> ChatResponse:
        names = WireNames.of_request(request)
        arguments = self._arguments(request, names)
        try:
            response = await self._litellm.acompletion(**arguments)
        except Exception as exc:
            raise self._error(request, exc) from None
        choice = response.choices[0]
        calls = names.calls_from_wire(
            [
                ToolCall(id=c.id, name=c.function.name, arguments=c.function.arguments or "{}")
                for c in choice.message.tool_calls or ()
            ]
        )
        usage = self._usage(getattr(response, "usage", None))
        return ChatResponse.of(
            request.model, choice.message.content or "", calls, usage, choice.finish_reason
        )

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        names = WireNames.of_request(request)
        arguments = self._arguments(request, names)
        arguments.update(stream=True, stream_options={"include_usage": True})
        calls: dict[int, dict[str, str]] = {}
        finish = "stop"
        usage = Usage()
        try:
            response = await self._litellm.acompletion(**arguments)
            async for chunk in response:
                if getattr(chunk, "usage", None):
                    usage = self._usage(chunk.usage)
                if not chunk.choices:
                    continue
                choice = chunk.choices[0]
                finish = choice.finish_reason or finish
                for part in getattr(choice.delta, "tool_calls", None) or ():
                    call = calls.setdefault(
                        part.index or 0, {"id": "", "name": "", "arguments": ""}
                    )
                    call["id"] = part.id or call["id"]
                    if part.function is not None:
                        call["name"] = part.function.name or call["name"]
                        call["arguments"] += part.function.arguments or ""
                if choice.delta.content:
                    yield ChatChunk(delta=choice.delta.content)
        except Exception as exc:
            raise self._error(request, exc) from None
        if calls:
            yield ChatChunk(
                tool_calls=names.calls_from_wire(
                    [
                        ToolCall(id=c["id"], name=c["name"], arguments=c["arguments"] or "{}")
                        for _, c in sorted(calls.items())
                    ]
                )
            )
            finish = "tool_calls"
        yield ChatChunk(finish_reason=finish, usage=usage)


def _retry_after(exc: Exception) -> float | None:
    """Seconds the upstream asked to wait (``retry-after-ms``, or ``Retry-After`` in seconds or
    as an HTTP date, read by :func:`hubbub.resilience.parse_retry_after`) on litellm's rate
    limit error, if it said."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    millis = parse_retry_after(headers.get("retry-after-ms"))
    if millis is not None:
        return millis / 1000
    return parse_retry_after(headers.get("retry-after"))


@hookimpl
def register_llm_providers(register: Registrar) -> None:
    def build(context: ComponentContext[LiteLLMSettings]) -> LiteLLMProvider:
        return LiteLLMProvider(context.name, context.settings)

    register(
        "litellm",
        build,
        settings=LiteLLMSettings,
        description="any provider litellm supports, one [[plugins.litellm_provider.models]]"
        " block each",
    )
