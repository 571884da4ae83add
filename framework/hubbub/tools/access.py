"""Who may use which tool: every filter must let a tool through, and a filter lets through only
what it names (deny by default). The configuration's own filter, ``[tools] allow``, names every
tool (``["*"]``) unless set otherwise: an operator who adds a tool provider or an MCP server
offers its tools to every user until ``[tools] allow``, ``[tools.users]`` or a
``[[tools.rules]]`` entry (``roles``) says otherwise.

A caller may use a tool when all of these allow it:

* ``[tools] allow`` (or the caller's own ``[tools.users.<id>]`` filter, which replaces it) and
  ``[tools] deny``;
* the tool's roles (the caller holds one of them) and scopes (a credential restricted to scopes
  holds one of them), as the tool declares them or a ``[[tools.rules]]`` entry says;
* the credential's tool filter: a principal holding ``tool:<pattern>`` scopes (an API key made
  with ``--tool``, a token with such scopes) may use only the tools they match;
* the conversation's filter (:attr:`hubbub.models.Conversation.tools`), when the tool runs for
  a conversation.
"""

from __future__ import annotations

from dataclasses import dataclass

from hubbub.auth.scopes import allowed_tools, split_scopes
from hubbub.config import ToolsConfig
from hubbub.models import Conversation, Principal, ToolSpec
from hubbub.tools.names import matches

__all__ = ["ToolAccess"]


@dataclass(frozen=True, slots=True)
class ToolAccess:
    """What one caller may use, in one place (a conversation, or none)."""

    allow: tuple[str, ...]
    """Patterns of the tools allowed by the configuration."""
    deny: tuple[str, ...]
    """Patterns refused whatever else allows them."""
    roles: frozenset[str]
    """The caller's roles."""
    scopes: frozenset[str]
    """The credential's plain scopes (empty: unrestricted)."""
    credential_tools: frozenset[str] | None
    """The credential's tool patterns; ``None``: not restricted to tools."""
    conversation_tools: tuple[str, ...] | None
    """The conversation's tool patterns; ``None``: not narrowed."""

    @classmethod
    def of(
        cls,
        principal: Principal | None,
        config: ToolsConfig,
        conversation: Conversation | None = None,
    ) -> ToolAccess:
        """The access of ``principal`` (``None``: a caller with no roles and no restriction
        other than the configuration's) in ``conversation``."""
        own = config.users.get(principal.id) if principal is not None else None
        allow = own.allow if own is not None and own.allow is not None else config.allow
        deny = [*config.deny, *(own.deny if own is not None else ())]
        conversation_tools = conversation.tools if conversation is not None else None
        return cls(
            allow=tuple(allow),
            deny=tuple(deny),
            roles=principal.roles if principal is not None else frozenset(),
            scopes=split_scopes(principal.scopes)[0] if principal is not None else frozenset(),
            credential_tools=allowed_tools(principal) if principal is not None else None,
            conversation_tools=tuple(conversation_tools)
            if conversation_tools is not None
            else None,
        )

    def allows(self, spec: ToolSpec) -> bool:
        """Whether the caller may use the tool ``spec`` describes (its effective spec, rules
        applied)."""
        name = spec.name
        if not matches(self.allow, name) or matches(self.deny, name):
            return False
        if spec.roles and self.roles.isdisjoint(spec.roles):
            return False
        if spec.scopes and self.scopes and self.scopes.isdisjoint(spec.scopes):
            return False
        if self.credential_tools is not None and not matches(self.credential_tools, name):
            return False
        return self.conversation_tools is None or matches(self.conversation_tools, name)
