"""Who an LLM request is for, in the form budgets, usage records and logs read it."""

from __future__ import annotations

from typing import Any

from hubbub.models import Principal

__all__ = ["caller_metadata"]


def caller_metadata(principal: Principal, **extra: Any) -> dict[str, Any]:
    """The :attr:`hubbub.models.ChatRequest.metadata` naming ``principal``'s credential:
    ``key_id`` when it called with an API key (key budgets and limits follow it), plus
    ``extra`` (``conversation_id``, ``request_id``...) where not ``None``."""
    metadata = {name: value for name, value in extra.items() if value is not None}
    if principal.auth_method == "api_key" and principal.credential_id:
        metadata["key_id"] = principal.credential_id
    return metadata
