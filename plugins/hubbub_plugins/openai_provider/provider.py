"""The provider: chat completions (whole and streamed), tool calls, usage and embeddings from
OpenAI-compatible upstreams, over :class:`hubbub.http.HttpClient` (one per ``api_base``)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any
from urllib.parse import quote

import msgspec

from hubbub.errors import HubbubError, ProviderError, UnknownModelError
from hubbub.http import HttpClient, HttpError, Response, StreamingResponse
from hubbub.llm.pricing import PriceTable
from hubbub.models import (
    ChatChunk,
    ChatRequest,
    ChatResponse,
    Health,
    ModelInfo,
    ToolCall,
    Usage,
)
from hubbub.tools import WireNames
from hubbub_plugins.openai_provider.failures import (
    MAX_ERROR_BYTES,
    shown,
    status_error,
    transport_error,
)
from hubbub_plugins.openai_provider.settings import (
    DEFAULTABLE_OPTIONS,
    OpenAIModel,
    OpenAISettings,
)
from hubbub_plugins.openai_provider.sse import MAX_EVENT_BYTES, EventTooLargeError, SSEParser
from hubbub_plugins.openai_provider.wire import (
    CHUNK,
    COMPLETION,
    EMBEDDINGS,
    ENCODER,
    Completion,
    ToolCallDelta,
    WireEmbeddingsRequest,
    WireUsage,
    body_fragment,
    request_of,
)

__all__ = ["OpenAIProvider", "Route"]

CONNECT_TIMEOUT = 10.0
"""Seconds connecting (TCP and TLS) may take at most."""
MAX_EVENT = MAX_EVENT_BYTES
"""The largest event of a stream accepted from an upstream (bytes)."""
DONE = b"[DONE]"


class Route:
    """How requests for one configured model are made: its pool, paths, headers and body
    additions, all prepared once at start."""

    __slots__ = (
        "chat_path",
        "client",
        "defaults",
        "embeddings_path",
        "extra",
        "headers",
        "name",
        "send_user",
        "stream_headers",
        "supports_tools",
        "upstream_model",
    )

    def __init__(self, entry: OpenAIModel, client: HttpClient) -> None:
        self.name = entry.name
        """The model id clients use."""
        self.upstream_model = entry.upstream_model
        """The model id sent upstream."""
        self.client = client
        """The pool of the model's ``api_base``."""
        self.supports_tools = entry.supports_tools
        """Whether tools are sent."""
        self.send_user = entry.send_user
        """Whether a hash of the request's ``user`` is sent."""
        if entry.azure:
            base = f"/openai/deployments/{quote(entry.upstream_model, safe='')}"
            query = f"?api-version={quote(entry.api_version or '', safe='')}"
            self.chat_path = f"{base}/chat/completions{query}"
            self.embeddings_path = f"{base}/embeddings{query}"
        else:
            self.chat_path = "/chat/completions"
            self.embeddings_path = "/embeddings"
        headers = [("content-type", "application/json")]
        if entry.api_key is not None:
            if entry.azure:
                headers.append(("api-key", entry.api_key.reveal()))
            else:
                headers.append(("authorization", f"Bearer {entry.api_key.reveal()}"))
        if entry.organization:
            headers.append(("openai-organization", entry.organization))
        if entry.headers:  # the model's own headers replace the provider's of the same name
            own = {name.lower() for name in entry.headers}
            headers = [(name, value) for name, value in headers if name not in own]
            headers.extend((name, value.reveal()) for name, value in entry.headers.items())
        self.headers = headers
        """Headers of every request."""
        self.stream_headers = [*headers, ("accept", "text/event-stream")]
        """Headers of a streamed request."""
        self.defaults = {k: v for k, v in entry.options.items() if k in DEFAULTABLE_OPTIONS}
        """Options a request's own values override."""
        self.extra = body_fragment(
            {k: v for k, v in entry.options.items() if k not in DEFAULTABLE_OPTIONS}
        )
        """The other options, as JSON members spliced into every body."""

    def body(self, request: ChatRequest, names: WireNames, *, stream: bool) -> bytes:
        """The JSON body for ``request``, tools named as ``names`` says."""
        wire = request_of(
            request,
            self.upstream_model,
            self.defaults,
            names,
            tools=self.supports_tools,
            stream=stream,
            send_user=self.send_user,
        )
        encoded = ENCODER.encode(wire)
        if self.extra:
            encoded = encoded[:-1] + self.extra + b"}"
        return encoded


def _usage(wire: WireUsage | None) -> Usage:
    if wire is None:
        return Usage()
    prompt = wire.prompt_tokens or 0
    completion = wire.completion_tokens or 0
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=wire.total_tokens or prompt + completion,
    )


def _calls(parts: list[ToolCallDelta] | None) -> list[ToolCall]:
    calls = []
    for part in parts or ():
        function = part.function
        calls.append(
            ToolCall(
                id=part.id or "",
                name=(function.name if function else None) or "",
                arguments=(function.arguments if function else None) or "{}",
            )
        )
    return calls


class _Assembly:
    """Tool calls put together from a stream's pieces, by index."""

    __slots__ = ("calls",)

    def __init__(self) -> None:
        self.calls: dict[int, list[Any]] = {}

    def add(self, parts: list[ToolCallDelta]) -> None:
        for position, part in enumerate(parts):
            index = part.index if part.index is not None else position
            call = self.calls.get(index)
            if call is None:
                call = self.calls[index] = ["", "", []]
            if part.id:
                call[0] = part.id
            function = part.function
            if function is not None:
                if function.name:
                    call[1] = function.name
                if function.arguments:
                    call[2].append(function.arguments)

    def result(self) -> list[ToolCall]:
        return [
            ToolCall(id=c[0], name=c[1], arguments="".join(c[2]) or "{}")
            for _, c in sorted(self.calls.items())
        ]


class OpenAIProvider:
    """A :class:`hubbub.contracts.LLMProvider` for OpenAI-compatible upstreams.

    :param name: the registered name (``openai``).
    :param settings: the plugin's settings.
    :param logger: where failures are logged for operators (with the upstream's address, which
        errors shown to clients leave out).
    """

    def __init__(
        self, name: str, settings: OpenAISettings, logger: logging.Logger | None = None
    ) -> None:
        self.name = name
        self.settings = settings
        self.logger = logger or logging.getLogger("hubbub_plugins.openai_provider")
        self.entries = {m.name: m for m in settings.models}
        self.routes: dict[str, Route] = {}
        """The configured models' routes, by the name clients use (made by :meth:`start`)."""
        self.clients: dict[str, HttpClient] = {}
        """One HTTP client per distinct ``api_base``."""
        self.windows: dict[str, int | None] = {}
        """Context windows of the models that configure none, from the price table."""

    async def start(self) -> None:
        """Make one pooled HTTP client per distinct ``api_base`` and each model's route."""
        for entry in self.entries.values():
            base = entry.api_base.rstrip("/")
            client = self.clients.get(base)
            if client is None:
                client = self.clients[base] = HttpClient(
                    base,
                    max_connections=self.settings.max_connections,
                    max_waiters=self.settings.max_waiters,
                    connect_timeout=min(CONNECT_TIMEOUT, self.settings.timeout),
                    read_timeout=self.settings.timeout,
                )
            self.routes[entry.name] = Route(entry, client)
        if any(m.context_window is None for m in self.entries.values()):
            table = await PriceTable.load()  # read once per process, off the event loop
            self.windows = {
                m.name: table.context_window(m.upstream_model)
                for m in self.entries.values()
                if m.context_window is None
            }

    async def health(self) -> Health:
        """``ok`` when configured (the LLM client adds what its breakers know of each
        upstream)."""
        if not self.entries:
            return Health(detail="no models configured")
        return Health(detail=f"{len(self.entries)} models on {len(self.clients) or 'no'} upstreams")

    async def aclose(self) -> None:
        """Close every pool: idle connections at once, those in use when their request
        ends."""
        clients, self.clients = list(self.clients.values()), {}
        self.routes = {}
        for client in clients:
            await client.aclose()

    async def list_models(self) -> Sequence[ModelInfo]:
        """The configured models, with their limits and prices when configured."""
        return [
            ModelInfo(
                id=m.name,
                provider=self.name,
                description=m.description,
                context_window=m.context_window or self.windows.get(m.name),
                supports_tools=m.supports_tools,
                upstream_model=m.upstream_model,
                upstream=m.api_base,  # models on one api_base share a circuit breaker
                max_output_tokens=m.max_output_tokens,
                input_cost_per_token=m.input_cost_per_token,
                output_cost_per_token=m.output_cost_per_token,
            )
            for m in self.entries.values()
        ]

    def _route(self, model: str) -> Route:
        route = self.routes.get(model)
        if route is None:
            raise UnknownModelError(
                f"model {model!r} is not configured for the openai provider", field="model"
            )
        return route

    def _transport(self, route: Route, exc: HttpError) -> HubbubError:
        self.logger.warning("model %s: request to the upstream failed: %s", route.name, exc)
        return transport_error(route.name, exc, self.settings.timeout)

    def _oversize(self, route: Route, exc: EventTooLargeError) -> ProviderError:
        self.logger.warning("model %s: %s", route.name, exc)
        limit = exc.limit
        size = f"{limit // 2**20} MiB" if limit % 2**20 == 0 else f"{limit} bytes"
        return ProviderError(
            f"model {route.name!r}: the upstream sent an event larger than {size}",
            retryable=False,
        )

    def _undecodable(self, route: Route, exc: Exception) -> ProviderError:
        self.logger.warning(
            "model %s: the upstream's answer is not understood: %s", route.name, exc
        )
        return ProviderError(
            f"model {route.name!r}: the upstream's answer is not an OpenAI chat completion",
            retryable=False,
        )

    async def _post(self, route: Route, path: str, body: bytes) -> Response:
        """``POST`` ``body`` to ``path`` of the model's upstream; its answer when it is a 200,
        else the error its status or the transport's failure means."""
        try:
            response = await route.client.request("POST", path, body=body, headers=route.headers)
        except HttpError as exc:
            raise self._transport(route, exc) from None
        if response.status != 200:
            raise status_error(
                route.name,
                response.status,
                response.body[:MAX_ERROR_BYTES],
                retry_after_ms=response.headers.get("retry-after-ms"),
                retry_after_header=response.headers.get("retry-after"),
            )
        return response

    async def complete(self, request: ChatRequest) -> ChatResponse:
        """Ask for the whole reply (``POST /chat/completions``)."""
        route = self._route(request.model)
        names = WireNames.of_request(request)
        body = route.body(request, names, stream=False)
        response = await self._post(route, route.chat_path, body)
        try:
            completion = COMPLETION.decode(response.body)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise self._undecodable(route, exc) from None
        return self._response(route, request, completion, names)

    def _response(
        self, route: Route, request: ChatRequest, completion: Completion, names: WireNames
    ) -> ChatResponse:
        if completion.error is not None or not completion.choices:
            raise self._stream_failure(route, completion)
        choice = completion.choices[0]
        message = choice.message
        text = ""
        calls: list[ToolCall] = []
        if message is not None:
            text = message.content or message.refusal or ""
            calls = names.calls_from_wire(_calls(message.tool_calls))
        return ChatResponse.of(
            request.model, text, calls, _usage(completion.usage), choice.finish_reason
        )

    def _stream_failure(self, route: Route, completion: Completion) -> ProviderError:
        error = completion.error
        message = error if isinstance(error, str) else (error.message if error else None)
        if message is None:
            return ProviderError(
                f"model {route.name!r}: the upstream answered without a choice", retryable=False
            )
        return ProviderError(
            f"model {route.name!r}: the upstream failed: {shown(message)}", retryable=True
        )

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        """Stream the reply (``"stream": true`` with ``include_usage``): text as it comes, tool
        calls once whole, then a last chunk with ``finish_reason`` and usage. A failure before
        the first chunk is raised from the first ``anext``; one after it from the iterator.
        Leaving the iterator early closes the connection: the upstream sees it at once."""
        route = self._route(request.model)
        names = WireNames.of_request(request)
        body = route.body(request, names, stream=True)
        try:
            async with route.client.stream(
                "POST", route.chat_path, body=body, headers=route.stream_headers
            ) as response:
                if response.status != 200:
                    raise status_error(
                        route.name,
                        response.status,
                        await _bounded(response),
                        retry_after_ms=response.headers.get("retry-after-ms"),
                        retry_after_header=response.headers.get("retry-after"),
                    )
                parser = SSEParser(max_event_bytes=MAX_EVENT)
                calls: _Assembly | None = None
                finish: str | None = None
                usage: Usage | None = None
                done = False
                ended = False
                pieces = aiter(response)
                while not ended:  # to the body's end: the connection is then reused
                    try:
                        piece = await anext(pieces)
                    except StopAsyncIteration:
                        ended = True
                        events = parser.finish()
                    else:
                        try:
                            events = parser.feed(piece)
                        except EventTooLargeError as exc:
                            raise self._oversize(route, exc) from None
                    if done:
                        continue
                    for data in events:
                        if data == DONE:
                            done = True
                            break
                        try:
                            chunk = CHUNK.decode(data)
                        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                            raise self._undecodable(route, exc) from None
                        if chunk.error is not None:
                            raise self._stream_failure(route, chunk)
                        if chunk.usage is not None:
                            usage = _usage(chunk.usage)
                        if not chunk.choices:
                            continue
                        choice = chunk.choices[0]
                        if choice.finish_reason:
                            finish = choice.finish_reason
                        delta = choice.delta
                        if delta is None:
                            continue
                        if delta.tool_calls:
                            if calls is None:
                                calls = _Assembly()
                            calls.add(delta.tool_calls)
                        text = delta.content or delta.refusal
                        if text:
                            yield ChatChunk(delta=text)
        except HttpError as exc:
            raise self._transport(route, exc) from None
        if not done and finish is None:
            raise ProviderError(
                f"model {route.name!r}: the upstream's stream ended before its end",
                retryable=True,
            )
        if calls is not None:
            yield ChatChunk(tool_calls=names.calls_from_wire(calls.result()))
            finish = "tool_calls"
        yield ChatChunk(finish_reason=finish or "stop", usage=usage or Usage())

    async def embed(self, model: str, inputs: list[str]) -> list[list[float]]:
        """One vector per text of ``inputs``, in order, from the upstream's
        ``POST /embeddings`` for the configured model ``model``."""
        route = self._route(model)
        body = ENCODER.encode(WireEmbeddingsRequest(route.upstream_model, inputs))
        response = await self._post(route, route.embeddings_path, body)
        try:
            data = EMBEDDINGS.decode(response.body).data
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            self.logger.warning(
                "model %s: the upstream's embeddings are not understood: %s", model, exc
            )
            raise ProviderError(
                f"model {model!r}: the upstream's answer is not an embeddings list",
                retryable=False,
            ) from None
        if len(data) != len(inputs):
            raise ProviderError(
                f"model {model!r}: the upstream sent {len(data)} embeddings for"
                f" {len(inputs)} inputs",
                retryable=False,
            )
        return [e.embedding for e in sorted(data, key=lambda e: e.index)]


async def _bounded(response: StreamingResponse) -> bytes:
    """At most :data:`MAX_ERROR_BYTES` of an error response's body (the rest is not read: the
    connection is closed when the stream block is left)."""
    kept = bytearray()
    async for piece in response:
        kept += piece
        if len(kept) >= MAX_ERROR_BYTES:
            break
    return bytes(kept[:MAX_ERROR_BYTES])
