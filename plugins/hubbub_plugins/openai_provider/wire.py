"""The OpenAI API on the wire: msgspec structs for what is sent and what comes back.

Requests are encoded from structs by one :class:`msgspec.json.Encoder`; replies, stream chunks,
embeddings and error bodies are decoded by :class:`msgspec.json.Decoder` instances made once, into
structs that hold only what hubbub reads (unknown fields are skipped by the decoder, never
built). Fields that some OpenAI-compatible servers send as ``null`` are optional.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec

from hubbub.models import ChatRequest, Message, ToolSpec
from hubbub.tools import WireNames

__all__ = [
    "CHUNK",
    "COMPLETION",
    "EMBEDDINGS",
    "ENCODER",
    "ERROR",
    "WireRequest",
    "body_fragment",
    "upstream_user",
    "wire_messages",
    "wire_tools",
]


# -- sent ----------------------------------------------------------------------------------


class WireFunctionCall(msgspec.Struct):
    """The function of a tool call an assistant message made."""

    name: str
    arguments: str


class WireToolCall(msgspec.Struct):
    """A tool call an assistant message made."""

    id: str
    function: WireFunctionCall
    type: str = "function"


class WireMessage(msgspec.Struct, omit_defaults=True):
    """One message of the conversation."""

    role: str
    content: str | None = None
    name: str | None = None
    tool_calls: list[WireToolCall] | None = None
    tool_call_id: str | None = None


class WireFunction(msgspec.Struct, omit_defaults=True):
    """A tool offered to the model."""

    name: str
    parameters: dict[str, Any]
    description: str = ""


class WireTool(msgspec.Struct):
    """A tool offered to the model, as the API wraps it."""

    function: WireFunction
    type: str = "function"


class WireStreamOptions(msgspec.Struct):
    """``stream_options``: the usage of a stream comes in a last chunk."""

    include_usage: bool = True


STREAM_OPTIONS = WireStreamOptions()


class WireRequest(msgspec.Struct, omit_defaults=True):
    """The body of ``POST /chat/completions`` (without the model's extra ``options``, which
    :func:`body_fragment` adds)."""

    model: str
    messages: list[WireMessage]
    stream: bool = False
    stream_options: WireStreamOptions | None = None
    tools: list[WireTool] | None = None
    tool_choice: str | dict[str, Any] | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    stop: list[str] | None = None
    user: str | None = None


class WireEmbeddingsRequest(msgspec.Struct):
    """The body of ``POST /embeddings``."""

    model: str
    input: list[str]
    encoding_format: str = "float"


ENCODER = msgspec.json.Encoder()
"""Encodes every request body."""


def wire_messages(messages: list[Message]) -> list[WireMessage]:
    """hubbub's messages as the API takes them (only the fields the API knows)."""
    wired = []
    for m in messages:
        calls = m.tool_calls
        if calls:
            wired.append(
                WireMessage(
                    role=m.role,
                    content=m.content or None,
                    name=m.name,
                    tool_calls=[
                        WireToolCall(c.id, WireFunctionCall(c.name, c.arguments)) for c in calls
                    ],
                )
            )
        else:
            wired.append(WireMessage(m.role, m.content, m.name, None, m.tool_call_id))
    return wired


def wire_tools(tools: list[ToolSpec], names: WireNames) -> list[WireTool]:
    """hubbub's tool specs as the API takes them, named as ``names`` says."""
    return [
        WireTool(WireFunction(names.to_wire(t.name), t.parameters, t.description)) for t in tools
    ]


def body_fragment(options: dict[str, Any]) -> bytes:
    """``options`` as JSON members to splice before the closing brace of an encoded request
    (``b',"top_p":0.5'``); empty when there are none."""
    if not options:
        return b""
    encoded = ENCODER.encode(options)
    return b"," + encoded[1:-1]


def upstream_user(user: str | None) -> str | None:
    """What an upstream is told of who asks (OpenAI's ``user``) when a model's ``send_user``
    is on: the first 32 hex digits of the SHA-256 of the principal's id ``user``, stable and
    opaque (never the id, which may be a username); ``None`` without one."""
    if not user:
        return None
    return hashlib.sha256(user.encode()).hexdigest()[:32]


def request_of(
    request: ChatRequest,
    model: str,
    defaults: dict[str, Any],
    names: WireNames,
    *,
    tools: bool,
    stream: bool,
    send_user: bool = False,
) -> WireRequest:
    """The body for ``request`` sent to ``model``: its own values first, then ``defaults`` (the
    model's defaultable ``options``); tools only when ``tools`` (the model supports them); the
    request's ``user`` only when ``send_user``, and then hashed (:func:`upstream_user`). Tool
    names are shown as ``names`` says (the API allows no ``.`` in them)."""
    offered = request.tools if tools else None
    wire = WireRequest(
        model,
        wire_messages(names.messages_to_wire(request.messages)),
        stream,
        STREAM_OPTIONS if stream else None,
        wire_tools(offered, names) if offered else None,
        names.choice_to_wire(request.tool_choice) if offered else None,
        request.temperature,
        request.max_tokens,
        request.stop,
        upstream_user(request.user) if send_user else None,
    )
    if defaults:
        for key, value in defaults.items():
            if getattr(wire, key) is None and (key != "tool_choice" or offered):
                setattr(wire, key, value)
    return wire


# -- received ------------------------------------------------------------------------------


class FunctionDelta(msgspec.Struct):
    """A tool call's function, whole or a piece of it."""

    name: str | None = None
    arguments: str | None = None


class ToolCallDelta(msgspec.Struct):
    """A tool call, whole (a completion) or a piece of it (a stream chunk, by ``index``)."""

    index: int | None = None
    id: str | None = None
    function: FunctionDelta | None = None


class ReplyMessage(msgspec.Struct):
    """A choice's ``message`` (a completion) or ``delta`` (a stream chunk)."""

    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None
    refusal: str | None = None


class Choice(msgspec.Struct):
    """One choice (hubbub asks for one)."""

    message: ReplyMessage | None = None
    delta: ReplyMessage | None = None
    finish_reason: str | None = None


class WireUsage(msgspec.Struct):
    """Tokens, as the upstream counts them."""

    prompt_tokens: int | None = 0
    completion_tokens: int | None = 0
    total_tokens: int | None = 0


class ErrorDetail(msgspec.Struct):
    """The ``error`` object of an OpenAI error body."""

    message: str | None = None
    type: str | None = None
    code: str | int | None = None


class Completion(msgspec.Struct):
    """A ``chat.completion``, or one ``chat.completion.chunk`` of a stream (some servers put
    an ``error`` in a stream)."""

    choices: list[Choice] | None = None
    usage: WireUsage | None = None
    error: ErrorDetail | str | None = None


class ErrorBody(msgspec.Struct):
    """An error response: OpenAI's ``{"error": {...}}``, Ollama's ``{"error": "..."}``,
    vLLM's ``{"message": ...}``, FastAPI's ``{"detail": ...}``."""

    error: ErrorDetail | str | None = None
    message: str | None = None
    detail: Any = None


class Embedding(msgspec.Struct):
    """One vector of an embeddings reply."""

    embedding: list[float]
    index: int = 0


class Embeddings(msgspec.Struct):
    """An embeddings reply."""

    data: list[Embedding]


COMPLETION = msgspec.json.Decoder(Completion)
"""Decodes a whole completion."""
CHUNK = COMPLETION
"""Decodes one stream chunk (the same shape)."""
ERROR = msgspec.json.Decoder(ErrorBody)
"""Decodes an error body."""
EMBEDDINGS = msgspec.json.Decoder(Embeddings)
"""Decodes an embeddings reply."""
