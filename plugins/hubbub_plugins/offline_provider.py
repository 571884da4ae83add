"""The offline LLM provider ``offline``: deterministic models that need no key and no network.

* ``offline/echo`` streams, word by word, a reply derived from the last user message.
* ``offline/tools`` asks for a tool call when the last user message reads
  ``call <tool-name> <json-arguments>``, then answers with the tool's result.

Both say plainly that they are offline. Token counts are words, not a real tokenizer's, and the
cost is zero. They exist so the whole pipeline (streaming, tools, events, storage) runs anywhere.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING

import msgspec

from hubbub import hookimpl
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
_CALL = re.compile(r"^\s*call\s+(?P<name>[A-Za-z0-9_.\-]+)\s*(?P<arguments>.*)$", re.S)
_WORDS = re.compile(r"\s*\S+")


class OfflineSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Settings of the ``offline_provider`` plugin (``[plugins.offline_provider]``)."""

    token_delay: float = 0.0
    """Seconds to wait between streamed words, to watch streaming happen (0: no delay)."""


def count_tokens(text: str) -> int:
    """The offline models' token count: the number of words."""
    return len(_WORDS.findall(text))


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
            ),
            ModelInfo(
                id=f"{self.name}/{TOOLS}",
                provider=self.name,
                supports_tools=True,
                description="Offline: 'call <tool> <json-arguments>' calls a tool.",
            ),
        ]

    def _answer(self, request: ChatRequest) -> tuple[str, list[ToolCall]]:
        variant = request.model.rsplit("/", 1)[-1]
        last = request.messages[-1] if request.messages else Message(role="user")
        last_user = next((m for m in reversed(request.messages) if m.role == "user"), None)
        prompt = last_user.content if last_user else ""
        if variant != TOOLS:
            return f"[offline echo] You said: {prompt}", []
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
        digest = hashlib.sha256(f"{len(request.messages)}:{prompt}".encode()).hexdigest()[:24]
        return "", [ToolCall(id=f"call_{digest}", name=name, arguments=arguments)]

    def _usage(self, request: ChatRequest, text: str, calls: list[ToolCall]) -> Usage:
        prompt = sum(count_tokens(m.content) for m in request.messages)
        completion = count_tokens(text) + sum(count_tokens(c.arguments) + 1 for c in calls)
        return Usage(
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=prompt + completion,
            cost_usd=0.0,
        )

    async def complete(self, request: ChatRequest) -> ChatResponse:
        text, calls = self._answer(request)
        usage = self._usage(request, text, calls)
        return ChatResponse.of(request.model, text, calls, usage)

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        text, calls = self._answer(request)
        for word in _WORDS.findall(text):
            if self.settings.token_delay:
                await asyncio.sleep(self.settings.token_delay)
            yield ChatChunk(delta=word)
        if calls:
            yield ChatChunk(tool_calls=calls)
        yield ChatChunk(
            finish_reason="tool_calls" if calls else "stop", usage=self._usage(request, text, calls)
        )


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
