"""The LLM client: one front for every provider (:mod:`hubbub.llm.client`)."""

from __future__ import annotations

from hubbub.llm.client import LLMClient

__all__ = ["LLMClient"]
