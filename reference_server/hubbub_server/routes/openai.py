"""The OpenAI-compatible API: ``GET /v1/models``, ``GET /v1/models/{id}`` and
``POST /v1/chat/completions``.

Stateless, like OpenAI's: nothing is stored. Streams are SSE ``data:`` frames of
``chat.completion.chunk`` objects ending with ``data: [DONE]``; text that streams in together is
sent as one chunk (:mod:`hubbub.llm.coalesce`). A stream still running when a stopping server
cuts what is in flight (:mod:`hubbub_server.shutdown`) ends with a finish chunk marked
``"interrupted": "shutdown"``, then ``[DONE]``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
from litestar import Controller, Request, get, post
from litestar.background_tasks import BackgroundTask
from litestar.params import FromPath, JSONBody
from litestar.response.base import ASGIResponse
from litestar.response.sse import ServerSentEventMessage

from hubbub.auth.scopes import check_model, visible_models
from hubbub.errors import HubbubError, UnknownModelError
from hubbub.llm.coalesce import coalesce
from hubbub.llm.streams import close_once
from hubbub.models import ChatChunk, ChatRequest, Usage, new_id
from hubbub_server.openai_format import (
    ChatCompletionRequest,
    chunk_payload,
    completion_payload,
    model_payload,
    models_payload,
    to_chat_request,
)
from hubbub_server.problems import PROBLEM_RESPONSES
from hubbub_server.security import Caller, RuntimeDep
from hubbub_server.shutdown import Shutdown, StreamCut
from hubbub_server.sse import sse_response

__all__ = ["OpenAIController"]

logger = logging.getLogger("hubbub.server")

_encode = msgspec.json.Encoder().encode


class OpenAIController(Controller):
    path = "/v1"
    tags = ["openai"]

    @get("/models", summary="Models available (OpenAI format)", responses=PROBLEM_RESPONSES)
    async def models(self, runtime: RuntimeDep, principal: Caller) -> dict[str, Any]:
        return models_payload(visible_models(principal, runtime.llm.models()))

    @get(
        "/models/{model_id:path}",
        summary="One model (OpenAI format)",
        description="A `model` object; 404 (`model_not_found`) for an id `/v1/models` does not "
        "list. Model ids contain a slash (`offline/echo`): send it as it is or as `%2F`.",
        responses=PROBLEM_RESPONSES,
    )
    async def model(
        self, runtime: RuntimeDep, principal: Caller, model_id: FromPath[str]
    ) -> dict[str, Any]:
        model = runtime.llm.model(model_id.lstrip("/"))
        if not visible_models(principal, [model]):  # as if it were not there, like the list
            raise UnknownModelError(f"model {model.id!r} is not available", field="model")
        return model_payload(model)

    @post(
        "/chat/completions",
        status_code=200,
        summary="Chat completion (OpenAI format)",
        description="A `chat.completion` object, or with `stream: true` server-sent events of "
        "`chat.completion.chunk` objects ending with `data: [DONE]`.",
        media_type="application/json",
        responses=PROBLEM_RESPONSES,
    )
    async def chat_completions(
        self,
        request: Request[Any, Any, Any],
        runtime: RuntimeDep,
        principal: Caller,
        data: JSONBody[ChatCompletionRequest],
    ) -> ASGIResponse:
        # Ready-made ASGI responses: this is the hottest route, and Litestar's response
        # conversion is work the handler can skip.
        chat = to_chat_request(data, principal)
        check_model(principal, chat.model)  # a key restricted to models: 403 for others
        if not data.stream:
            response = await runtime.llm.complete(chat)
            body = _encode(completion_payload(response))
            return ASGIResponse(body=body, media_type="application/json", status_code=200)
        include_usage = bool(data.stream_options and data.stream_options.include_usage)
        # Hooks run and the model is resolved here: refusals and unknown models are errors,
        # not a 200 stream.
        chunks = coalesce(await runtime.llm.open_stream(chat))
        close = close_once(chunks)
        shutdown: Shutdown = request.app.state.shutdown
        frames = _stream(chunks, close, chat, include_usage, shutdown)
        streamed = sse_response(frames, request.app.state).to_asgi_response(None, request)
        # A client that leaves before the body starts: Litestar never starts ``frames``, whose
        # ``finally`` would have closed the stream; the response closes it after its body.
        streamed.background = BackgroundTask(close)
        return streamed


async def _stream(
    chunks: AsyncIterator[ChatChunk],
    close: Callable[[], Awaitable[None]],
    chat: ChatRequest,
    include_usage: bool,
    shutdown: Shutdown,
) -> AsyncIterator[ServerSentEventMessage]:
    completion_id, created = new_id("chatcmpl-"), int(time.time())
    usage: Usage | None = None
    finished = False

    def frame(payload: Any) -> ServerSentEventMessage:
        return ServerSentEventMessage(data=_encode(payload).decode())

    yield frame(chunk_payload(completion_id, chat.model, created, ChatChunk(), first=True))
    interrupted = None
    try:
        async for chunk in shutdown.cut_off(chunks):
            usage = chunk.usage or usage
            finished = finished or chunk.finish_reason is not None
            if chunk.delta or chunk.tool_calls or chunk.finish_reason:
                yield frame(chunk_payload(completion_id, chat.model, created, chunk))
    except StreamCut:  # the server is stopping: end the reply here, in a way clients parse
        interrupted = None if finished else "shutdown"
        logger.info("streamed completion ended early: the server is stopping")
    except HubbubError as exc:  # headers are sent: report in-band, as OpenAI does
        yield frame({"error": {"message": str(exc), "type": exc.code, "code": exc.status}})
        return
    finally:  # a client that leaves closes the middleware chain now, not when collected
        await close()
    if interrupted is not None:
        finish = ChatChunk(finish_reason="stop")
        yield frame(
            chunk_payload(completion_id, chat.model, created, finish, interrupted=interrupted)
        )
    if include_usage and (usage is not None or interrupted is None):
        # (a reply cut short has no usage chunk unless its provider had reported usage)
        yield frame(chunk_payload(completion_id, chat.model, created, None, usage=usage))
    yield ServerSentEventMessage(data="[DONE]")
