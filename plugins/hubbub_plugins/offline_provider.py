"""The offline LLM provider ``offline``: deterministic models that need no key and no network.

* ``offline/echo`` streams, word by word, a reply derived from the last user message.
* ``offline/tools`` asks for a tool call when the last user message reads
  ``call <tool-name> <json-arguments>``, then answers with the tool's result.

Both say plainly that they are offline. They count tokens as hubbub counts every model's
(:meth:`hubbub.llm.tokens.TokenCounter.count_prompt` and ``count_completion``, with tiktoken's
``cl100k_base``, offline), so budgets and usage reports work with them as with a real model; they
are free (their prices are zero). They exist so the whole pipeline (streaming, tools, events,
storage, usage) runs anywhere.

They honour the request's limits as OpenAI's models do: ``stop`` cuts the reply before the first
stop sequence (``finish_reason`` ``stop``), ``max_tokens`` keeps that many tokens at most
(``finish_reason`` ``length``); both apply to the reply's text, and a tool call is always made
whole. Replies stream word by word. ``tool_choice`` ``"required"`` (or a named function) makes
``offline/tools`` call a tool whatever the message says: the named one, else the one
``call <tool-name>`` names if it is offered, else the first tool offered, with the message's JSON
arguments when they are for that tool and ``{}`` otherwise (every time, after a tool result too:
a required tool call is required). ``offline/echo`` calls no tools: forcing it to is an invalid
request.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import AsyncIterator, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING

import msgspec

from hubbub import hookimpl
from hubbub.errors import InvalidRequestError
from hubbub.llm.tokens import TokenCounter
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

if TYPE_CHECKING:
    from hubbub.registry import ComponentContext, Registrar

ECHO = "echo"
TOOLS = "tools"
CONTEXT_WINDOW = 1_000_000
"""Tokens the offline models accept: they have no real limit, so a long message echoes whole
(a model is never shown more than its window: see :mod:`hubbub.conversation.context`)."""
_CALL = re.compile(r"^\s*call\s+(?P<name>[A-Za-z0-9_.\-]+)\s*(?P<arguments>.*)$", re.S)
_PIECES = re.compile(r"\s*\S+|\s+")  # words, then trailing space: joined, the whole text
FREE = Decimal(0)
"""The offline models' price per token, prompt and completion alike."""
YIELD_EVERY = 64
"""Pieces streamed between two yields to the event loop when there is no ``token_delay``."""


class OfflineSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Settings of the ``offline_provider`` plugin (``[plugins.offline_provider]``)."""

    token_delay: float = 0.0
    """Seconds to wait between streamed words, to watch streaming happen (0: no delay)."""


def _forced_tool(request: ChatRequest) -> str | None:
    """The tool ``tool_choice`` forces (``""``: any tool, the model's choice), or ``None``."""
    choice = request.tool_choice
    if choice == "required":
        return ""
    if isinstance(choice, dict):
        function = choice.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        if choice.get("type") != "function" or not isinstance(name, str) or not name:
            raise InvalidRequestError(
                'tool_choice must be "none", "auto", "required" or '
                '{"type": "function", "function": {"name": ...}}',
                field="tool_choice",
            )
        return name
    return None


async def _limit(counter: TokenCounter, request: ChatRequest, text: str) -> tuple[str, str]:
    """The text cut by the request's stop sequences and ``max_tokens`` (tokens, counted as the
    usage counts them), and the finish reason: ``length`` when ``max_tokens`` cut it, else
    ``stop``."""
    cuts = [at for stop in request.stop or () if stop and (at := text.find(stop)) >= 0]
    if cuts:
        text = text[: min(cuts)]
    if request.max_tokens is not None:
        cut = await counter.truncate(request.model, text, request.max_tokens)
        if cut != text:
            return cut, "length"
    return text, "stop"


def _called_tool(messages: Sequence[Message], call_id: str | None) -> str | None:
    """The name of the tool an earlier assistant message called with ``call_id``."""
    for message in reversed(messages):
        for call in message.tool_calls or ():
            if call.id == call_id:
                return call.name
    return None


class OfflineProvider:
    """A :class:`hubbub.contracts.LLMProvider` that answers from the prompt alone."""

    def __init__(self, name: str, settings: OfflineSettings) -> None:
        self.name = name
        self.settings = settings
        self.tokens = TokenCounter()
        """How the models count their tokens (tiktoken's encodings, read offline)."""

    async def start(self) -> None:
        """Nothing to acquire."""

    async def health(self) -> Health:
        return Health(detail="offline models; replies are generated locally")

    async def aclose(self) -> None:
        """Nothing to release."""

    async def list_models(self) -> Sequence[ModelInfo]:
        return [
            ModelInfo(
                id=f"{self.name}/{ECHO}",
                provider=self.name,
                description="Offline: streams back a reply derived from your message.",
                context_window=CONTEXT_WINDOW,
                input_cost_per_token=FREE,
                output_cost_per_token=FREE,
            ),
            ModelInfo(
                id=f"{self.name}/{TOOLS}",
                provider=self.name,
                supports_tools=True,
                description="Offline: 'call <tool> <json-arguments>' calls a tool.",
                context_window=CONTEXT_WINDOW,
                input_cost_per_token=FREE,
                output_cost_per_token=FREE,
            ),
        ]

    async def _answer(self, request: ChatRequest) -> tuple[str, list[ToolCall], str]:
        """The reply's text, its tool calls and its finish reason."""
        text, calls = self._reply(request)
        if calls:
            return text, calls, "tool_calls"
        text, finish = await _limit(self.tokens, request, text)
        return text, calls, finish

    def _reply(self, request: ChatRequest) -> tuple[str, list[ToolCall]]:
        variant = request.model.rsplit("/", 1)[-1]
        last = request.messages[-1] if request.messages else Message(role="user")
        last_user = next((m for m in reversed(request.messages) if m.role == "user"), None)
        prompt = last_user.content if last_user else ""
        forced = _forced_tool(request)
        if variant != TOOLS:
            if forced is not None:
                raise InvalidRequestError(
                    f"{request.model} calls no tools; use {self.name}/{TOOLS} to force a tool call",
                    field="tool_choice",
                )
            return f"[offline echo] You said: {prompt}", []
        if forced is not None:
            return "", [self._forced_call(request, forced, prompt)]
        if last.role == "tool":
            name = last.name or _called_tool(request.messages, last.tool_call_id) or "tool"
            return f"[offline tools] The tool {name} returned: {last.content}", []
        match = _CALL.match(prompt)
        if last.role != "user" or match is None:
            return (
                "[offline tools] Say 'call <tool-name> <json-arguments>' to call a tool. "
                f"You said: {prompt}"
            ), []
        name, arguments = match.group("name"), match.group("arguments").strip() or "{}"
        offered = [tool.name for tool in request.tools or ()]
        if request.tool_choice == "none" or name not in offered:
            available = ", ".join(offered) if offered and request.tool_choice != "none" else "none"
            return (
                f"[offline tools] No tool named {name!r} is available (available: {available})."
            ), []
        try:
            msgspec.json.decode(arguments)
        except msgspec.DecodeError:
            return f"[offline tools] The arguments for {name!r} are not valid JSON: {arguments}", []
        return "", [_call(request, prompt, name, arguments)]

    def _forced_call(self, request: ChatRequest, forced: str, prompt: str) -> ToolCall:
        """The call ``tool_choice`` requires: the tool it names, else the one the message
        names if offered, else the first offered; the message's arguments if they are for it."""
        offered = [tool.name for tool in request.tools or ()]
        if not offered:
            raise InvalidRequestError(
                "tool_choice requires a tool call, but the request offers no tools",
                field="tool_choice",
            )
        if forced and forced not in offered:
            raise InvalidRequestError(
                f"tool_choice names {forced!r}, which is not among the tools offered "
                f"({', '.join(offered)})",
                field="tool_choice",
            )
        match = _CALL.match(prompt)
        asked = match.group("name") if match else None
        name = forced or (asked if asked in offered else offered[0])
        arguments = "{}"
        if match is not None and asked == name:
            given = match.group("arguments").strip() or "{}"
            try:
                msgspec.json.decode(given)
                arguments = given
            except msgspec.DecodeError:
                pass
        return _call(request, prompt, name, arguments)

    async def _usage(self, request: ChatRequest, text: str, calls: list[ToolCall]) -> Usage:
        """The tokens of the prompt and of the reply, as hubbub counts them; free."""
        model = request.model
        prompt = await self.tokens.count_prompt(model, request.messages, request.tools)
        completion = await self.tokens.count_completion(model, text, calls)
        return Usage(
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=prompt + completion,
            cost=FREE,
        )

    async def complete(self, request: ChatRequest) -> ChatResponse:
        text, calls, finish = await self._answer(request)
        usage = await self._usage(request, text, calls)
        return ChatResponse.of(request.model, text, calls, usage, finish)

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        """The reply word by word (waiting ``token_delay`` between words; without a delay,
        yielding to the event loop every :data:`YIELD_EVERY` words), then the tool calls, then
        the finish with the usage."""
        text, calls, finish = await self._answer(request)
        delay = self.settings.token_delay
        for number, piece in enumerate(_PIECES.findall(text), 1):
            if delay:
                await asyncio.sleep(delay)
            elif number % YIELD_EVERY == 0:
                await asyncio.sleep(0)  # a long reply must not hold the event loop
            yield ChatChunk(delta=piece)
        if calls:
            yield ChatChunk(tool_calls=calls)
        yield ChatChunk(finish_reason=finish, usage=await self._usage(request, text, calls))


def _call(request: ChatRequest, prompt: str, name: str, arguments: str) -> ToolCall:
    """A tool call with an id derived from the conversation so far (deterministic)."""
    digest = hashlib.sha256(f"{len(request.messages)}:{prompt}".encode()).hexdigest()[:24]
    return ToolCall(id=f"call_{digest}", name=name, arguments=arguments)


@hookimpl
def register_llm_providers(register: Registrar) -> None:
    def build(context: ComponentContext[OfflineSettings]) -> OfflineProvider:
        return OfflineProvider(context.name, context.settings)

    register(
        "offline",
        build,
        settings=OfflineSettings,
        description="offline models offline/echo and offline/tools (no network, no key)",
    )
