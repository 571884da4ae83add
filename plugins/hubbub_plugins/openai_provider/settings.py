"""The settings of the ``openai_provider`` plugin (``[plugins.openai_provider]``)."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import msgspec

from hubbub.config import Secret
from hubbub.http.headers import MANAGED_HEADERS

__all__ = ["DEFAULT_API_BASE", "OpenAIModel", "OpenAISettings"]

DEFAULT_API_BASE = "https://api.openai.com/v1"
"""Where a model without ``api_base`` is sent: OpenAI's API."""

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
"""An HTTP token: what a header name is made of."""
RESERVED_OPTIONS = frozenset({"model", "messages", "stream", "stream_options", "tools"})
"""Body fields the provider writes itself: ``options`` may not set them."""
DEFAULTABLE_OPTIONS = frozenset({"temperature", "max_tokens", "stop", "user", "tool_choice"})
"""Body fields a request may set: in ``options`` they are defaults the request overrides."""


class OpenAIModel(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One model served by an OpenAI-compatible upstream."""

    name: str
    """The model id clients use (``model`` in requests, listed by ``/v1/models``)."""
    model: str | None = None
    """The upstream's model id (``gpt-4o-mini``; for Azure OpenAI, the deployment's name);
    defaults to ``name``. Prices and limits are looked up by it."""
    api_base: str = DEFAULT_API_BASE
    """The upstream's base URL, to which ``/chat/completions`` is appended
    (``http://127.0.0.1:8001/v1`` for vLLM, ``http://127.0.0.1:11434/v1`` for Ollama); for
    Azure OpenAI the resource's endpoint (``https://NAME.openai.azure.com``). Models on the same
    ``api_base`` share one pool of connections."""
    api_key: Secret | None = None
    """The upstream's key, sent as ``Authorization: Bearer`` (Azure: ``api-key``):
    ``{ env = "NAME" }`` or ``{ file = "PATH" }``; none for upstreams that take no key."""
    headers: dict[str, Secret] = msgspec.field(default_factory=dict)
    """Extra HTTP headers sent with every request (values are strings or secrets:
    ``{ "X-Tenant" = "a", "X-Token" = { env = "TOKEN" } }``)."""
    organization: str | None = None
    """OpenAI organization id, sent as ``OpenAI-Organization``."""
    azure: bool = False
    """Azure OpenAI: requests go to ``{api_base}/openai/deployments/{model}/...`` with
    ``?api-version=`` and the key in ``api-key``."""
    api_version: str | None = None
    """Azure OpenAI's ``api-version`` (required with ``azure = true``)."""
    description: str = ""
    """Shown in model listings."""
    context_window: int | None = None
    """Tokens the model accepts; default: the price table's figure for ``model``."""
    max_output_tokens: int | None = None
    """The most tokens the model writes in one reply; default: the price table's figure."""
    supports_tools: bool = True
    """Whether tools are offered to this model (when not, they are left out of requests)."""
    input_cost_per_token: Decimal | None = None
    """US dollars per prompt token as a decimal string (``"0.00000015"``), overriding the
    price table (a self-hosted model: ``"0"``)."""
    output_cost_per_token: Decimal | None = None
    """US dollars per completion token as a decimal string, overriding the price table."""
    send_user: bool = False
    """Send the upstream an opaque, stable id of who asks (OpenAI's ``user`` field, which
    providers use for abuse monitoring): the first 32 hex digits of the SHA-256 of the
    principal's id, never the id itself (for local accounts, a username). Off by default: the
    upstream then learns nothing of who asks (``options = { user = "..." }`` still sends a fixed
    value)."""
    options: dict[str, Any] = msgspec.field(default_factory=dict)
    """Extra fields of the JSON body (``top_p``, ``seed``, ``reasoning_effort``...).
    ``temperature``, ``max_tokens``, ``stop``, ``user`` and ``tool_choice`` here are defaults a
    request's own value overrides; ``model``, ``messages``, ``stream``, ``stream_options`` and
    ``tools`` are the provider's and may not be set."""

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a model needs a name")
        parts = urlsplit(self.api_base)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"api_base must be an http:// or https:// URL with a host, not {self.api_base!r}"
            )
        if parts.query or parts.fragment:
            raise ValueError("api_base may not have a query string or a fragment")
        if parts.username is not None or parts.password is not None:
            raise ValueError("api_base may not hold credentials: use api_key or headers")
        for header, value in self.headers.items():
            if not _TOKEN.fullmatch(header) or header.lower() in MANAGED_HEADERS:
                raise ValueError(f"headers: {header!r} is not a header that can be set")
            text = value.reveal()
            if "\r" in text or "\n" in text or "\0" in text or not text.isprintable():
                raise ValueError(f"headers: the value of {header!r} is not one line of text")
        if self.azure and not self.api_version:
            raise ValueError("azure = true needs api_version (Azure OpenAI's api-version)")
        reserved = sorted(RESERVED_OPTIONS & self.options.keys())
        if reserved:
            raise ValueError(f"options may not set {', '.join(reserved)}: the provider does")
        for price in (self.input_cost_per_token, self.output_cost_per_token):
            if price is not None and (not price.is_finite() or price < 0):
                raise ValueError("a cost per token is a decimal number, 0 or more")
        for limit in (self.context_window, self.max_output_tokens):
            if limit is not None and limit <= 0:
                raise ValueError("context_window and max_output_tokens are positive")

    @property
    def upstream_model(self) -> str:
        """The model id sent upstream: ``model``, else ``name``."""
        return self.model or self.name


class OpenAISettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Settings of the ``openai_provider`` plugin (``[plugins.openai_provider]``)."""

    models: list[OpenAIModel] = msgspec.field(default_factory=list)
    """The models to serve, one ``[[plugins.openai_provider.models]]`` block each; none by
    default."""
    timeout: float = 60.0
    """Seconds without a byte from the upstream while an answer is due (its first byte, or the
    next piece of a stream) before the request fails as timed out; connecting waits at most
    10 s of it. hubbub's ``[llm]`` per-attempt timeout and deadline also apply."""
    max_connections: int = 100
    """Connections kept open to one upstream (``api_base``) at most; further requests wait for
    one (0: no limit)."""
    max_waiters: int = 1000
    """Requests that may wait for one of an upstream's ``max_connections`` at once (0: no
    limit); one more is refused at once with 429 Too Many Requests (``Retry-After: 1``), a local
    overload that is neither retried nor counted against the upstream's breaker."""

    def __post_init__(self) -> None:
        if not self.timeout > 0:
            raise ValueError("timeout must be more than 0 seconds")
        if self.max_connections < 0:
            raise ValueError("max_connections must be 0 (no limit) or more")
        if self.max_waiters < 0:
            raise ValueError("max_waiters must be 0 (no limit) or more")
        names = [m.name for m in self.models]
        doubled = sorted({n for n in names if names.count(n) > 1})
        if doubled:
            raise ValueError(f"model names must be unique: {', '.join(doubled)}")
