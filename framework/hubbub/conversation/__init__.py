"""Conversations and replies (:mod:`hubbub.conversation.engine`)."""

from __future__ import annotations

from hubbub.conversation.engine import ConversationEngine

__all__ = ["ConversationEngine"]
