"""LLM provider ``openai``: any upstream that speaks the OpenAI API (OpenAI, Azure OpenAI, vLLM,
Ollama, LM Studio, Groq, Together, OpenRouter...), natively: a pooled keep-alive HTTP/1.1 client
(:mod:`hubbub.http`, one pool per ``api_base``), msgspec encoding and decoding, streaming.

Each model is one entry of ``[plugins.openai_provider]``::

    [[plugins.openai_provider.models]]
    name = "up-gpt"                       # what clients ask for
    model = "gpt-4o-mini"                 # the upstream's model id (default: name)
    api_base = "http://127.0.0.1:8001/v1"
    api_key = { env = "UPSTREAM_KEY" }

Modules: :mod:`.settings` (the configuration), :mod:`.wire` (the API's bodies as msgspec
structs), :mod:`.sse` (server-sent events from body pieces), :mod:`.failures` (an upstream's
failures as hubbub's errors) and :mod:`.provider` (the provider).

The provider reports the upstream's usage and never prices it: the LLM client does, from the
price table or the model's ``input_cost_per_token`` / ``output_cost_per_token``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hubbub import hookimpl
from hubbub_plugins.openai_provider.provider import OpenAIProvider
from hubbub_plugins.openai_provider.settings import OpenAIModel, OpenAISettings

if TYPE_CHECKING:
    from hubbub.registry import ComponentContext, Registrar

__all__ = ["OpenAIModel", "OpenAIProvider", "OpenAISettings"]


@hookimpl
def register_llm_providers(register: Registrar) -> None:
    """Register the ``openai`` provider."""

    def build(context: ComponentContext[OpenAISettings]) -> OpenAIProvider:
        return OpenAIProvider(context.name, context.settings, context.logger)

    register(
        "openai",
        build,
        settings=OpenAISettings,
        description="OpenAI-compatible upstreams, natively; one"
        " [[plugins.openai_provider.models]] block each",
    )
