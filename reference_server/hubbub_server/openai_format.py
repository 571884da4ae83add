"""The OpenAI chat-completions wire format, and its translation to and from hubbub's models.

Request structs accept (and ignore) fields hubbub does not use, as OpenAI clients send many;
fields hubbub does use are validated, and problems name the field (``messages[1].role``).
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

import msgspec

from hubbub.errors import InvalidRequestError
from hubbub.llm.caller import caller_metadata
from hubbub.log import current_context
from hubbub.models import (
    ChatChunk,
    ChatRequest,
    ChatResponse,
    Message,
    ModelInfo,
    Principal,
    ToolCall,
    ToolSpec,
    Usage,
)

__all__ = [
    "ChatCompletionRequest",
    "chunk_payload",
    "completion_payload",
    "model_payload",
    "models_payload",
    "to_chat_request",
]

ROLES = ("system", "developer", "user", "assistant", "tool")

# Litestar copies the ``extra`` of a field's ``extra_json_schema`` into the OpenAPI schema: the
# roles are listed there, while an unknown role gets the clearer error of ``to_chat_request``.
Role = Annotated[str, msgspec.Meta(extra_json_schema={"extra": {"enum": list(ROLES)}})]


MAX_TOKENS = 10_000_000
"""The largest ``max_tokens`` accepted: far above any model's output, far below what a provider
or a 64-bit integer could choke on."""


class FunctionCall(msgspec.Struct, kw_only=True):
    name: str
    arguments: str = "{}"


class WireToolCall(msgspec.Struct, kw_only=True):
    id: str
    function: FunctionCall
    type: Literal["function"] = "function"


class ContentPart(msgspec.Struct, kw_only=True):
    type: str
    text: str | None = None


class WireMessage(msgspec.Struct, kw_only=True):
    """One message as OpenAI clients send it."""

    role: Role
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[WireToolCall] | None = None
    tool_call_id: str | None = None


class FunctionDefinition(msgspec.Struct, kw_only=True):
    name: str
    description: str = ""
    parameters: dict[str, Any] = msgspec.field(
        default_factory=lambda: {"type": "object", "properties": {}}
    )


class WireTool(msgspec.Struct, kw_only=True):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(msgspec.Struct, kw_only=True):
    name: Annotated[str, msgspec.Meta(min_length=1)]


class ToolChoiceFunction(msgspec.Struct, kw_only=True):
    """``tool_choice`` naming the function the model must call."""

    type: Literal["function"]
    function: NamedFunction


class StreamOptions(msgspec.Struct, kw_only=True):
    include_usage: bool = False


class ChatCompletionRequest(msgspec.Struct, kw_only=True):
    """``POST /v1/chat/completions`` body (the subset hubbub acts on; other fields ignored)."""

    model: Annotated[str, msgspec.Meta(min_length=1)]
    messages: Annotated[list[WireMessage], msgspec.Meta(min_length=1)]
    stream: bool = False
    stream_options: StreamOptions | None = None
    tools: list[WireTool] | None = None
    tool_choice: Literal["none", "auto", "required"] | ToolChoiceFunction | None = None
    temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] | None = None
    max_tokens: Annotated[int, msgspec.Meta(ge=1, le=MAX_TOKENS)] | None = None
    max_completion_tokens: Annotated[int, msgspec.Meta(ge=1, le=MAX_TOKENS)] | None = None
    stop: str | list[str] | None = None
    n: int = 1
    user: str | None = None


def _text(message: WireMessage, index: int) -> str:
    content = message.content
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts = []
    for part_index, part in enumerate(content):
        if part.type != "text" or part.text is None:
            raise InvalidRequestError(
                f"content part type {part.type!r} is not supported; only text parts are",
                field=f"messages[{index}].content[{part_index}].type",
            )
        texts.append(part.text)
    return "".join(texts)


def to_chat_request(body: ChatCompletionRequest, principal: Principal) -> ChatRequest:
    """Validate what msgspec cannot and build the provider-neutral request for ``principal``."""
    if not body.messages:
        raise InvalidRequestError("messages must not be empty", field="messages")
    if body.n != 1:
        raise InvalidRequestError("only n = 1 is supported", field="n")
    messages = []
    for index, wire in enumerate(body.messages):
        if wire.role not in ROLES:
            raise InvalidRequestError(
                f"unknown role {wire.role!r}; expected one of {', '.join(ROLES)}",
                field=f"messages[{index}].role",
            )
        if wire.role == "tool" and not wire.tool_call_id:
            raise InvalidRequestError(
                "tool messages need tool_call_id", field=f"messages[{index}].tool_call_id"
            )
        calls = [
            ToolCall(id=c.id, name=c.function.name, arguments=c.function.arguments)
            for c in wire.tool_calls or ()
        ]
        messages.append(
            Message(
                role="system" if wire.role == "developer" else wire.role,  # type: ignore[arg-type]
                content=_text(wire, index),
                name=wire.name,
                tool_calls=calls or None,
                tool_call_id=wire.tool_call_id,
            )
        )
    tools = [
        ToolSpec(
            name=t.function.name,
            description=t.function.description,
            parameters=t.function.parameters,
        )
        for t in body.tools or ()
    ]
    stop = [body.stop] if isinstance(body.stop, str) else body.stop
    choice = body.tool_choice
    tool_choice: str | dict[str, Any] | None = (
        msgspec.to_builtins(choice) if isinstance(choice, ToolChoiceFunction) else choice
    )
    return ChatRequest(
        model=body.model,
        messages=messages,
        tools=tools or None,
        tool_choice=tool_choice,
        temperature=body.temperature,
        max_tokens=body.max_completion_tokens or body.max_tokens,
        stop=stop,
        user=principal.id,
        metadata=caller_metadata(principal, request_id=current_context().get("request_id")),
    )


def _usage(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens or usage.prompt_tokens + usage.completion_tokens,
    }


def _wire_calls(calls: list[ToolCall], *, indexed: bool = False) -> list[dict[str, Any]]:
    wire = []
    for index, call in enumerate(calls):
        item: dict[str, Any] = {
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": call.arguments},
        }
        if indexed:
            item["index"] = index
        wire.append(item)
    return wire


def completion_payload(response: ChatResponse) -> dict[str, Any]:
    """A ``chat.completion`` object."""
    message: dict[str, Any] = {"role": "assistant", "content": response.message.content or None}
    if response.message.tool_calls:
        message["tool_calls"] = _wire_calls(response.message.tool_calls)
    elif message["content"] is None:
        message["content"] = ""
    return {
        "id": response.id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": response.model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": response.finish_reason,
                "logprobs": None,
            }
        ],
        "usage": _usage(response.usage),
    }


def chunk_payload(
    completion_id: str,
    model: str,
    created: int,
    chunk: ChatChunk | None,
    *,
    first: bool = False,
    usage: Usage | None = None,
    interrupted: str | None = None,
) -> dict[str, Any]:
    """A ``chat.completion.chunk`` object: a delta, the finish, or (``usage`` given, no chunk)
    the final usage chunk with empty ``choices``.

    ``interrupted`` marks the finish of a reply that stopped before its end (``"shutdown"``:
    the server is stopping): the chunk gets a top-level ``"interrupted"`` field, a hubbub
    extension that OpenAI clients keep as an extra field (``chunk.model_extra`` in the official
    Python client) and otherwise ignore; its ``finish_reason`` stays one they know."""
    payload: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
    }
    if interrupted is not None:
        payload["interrupted"] = interrupted
    if chunk is None:
        payload["choices"] = []
        payload["usage"] = _usage(usage or Usage())
        return payload
    delta: dict[str, Any] = {}
    if first:
        delta["role"] = "assistant"
    if chunk.delta or first:
        delta["content"] = chunk.delta
    if chunk.tool_calls:
        delta["tool_calls"] = _wire_calls(chunk.tool_calls, indexed=True)
    payload["choices"] = [
        {"index": 0, "delta": delta, "finish_reason": chunk.finish_reason, "logprobs": None}
    ]
    return payload


def model_payload(model: ModelInfo) -> dict[str, Any]:
    """A ``model`` object (``owned_by`` is the provider serving it)."""
    return {"id": model.id, "object": "model", "created": 0, "owned_by": model.provider}


def models_payload(models: list[ModelInfo]) -> dict[str, Any]:
    """A ``list`` of ``model`` objects."""
    return {"object": "list", "data": [model_payload(m) for m in models]}
