"""Exceptions hubbub raises. Each carries a message meant for the person who has to act on it.

The reference server maps them to HTTP problems by class (``status`` below), so a plugin that
raises :class:`NotFoundError` gets a 404 without knowing anything about HTTP.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence

import msgspec

__all__ = [
    "AuthenticationError",
    "BudgetExceededError",
    "ComponentError",
    "ConfigError",
    "ConfigIssue",
    "ConflictError",
    "ContentTooLargeError",
    "ContextWindowExceededError",
    "HubbubError",
    "InvalidRequestError",
    "NotFoundError",
    "PermissionDeniedError",
    "PluginError",
    "ProviderError",
    "ProviderRateLimitedError",
    "ProviderRequestError",
    "ProviderTimeoutError",
    "QuotaExceededError",
    "TooManyRequestsError",
    "ToolError",
    "UnknownModelError",
    "blame",
    "did_you_mean",
]


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices``, or an empty string."""
    close = difflib.get_close_matches(value, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def blame(exc: BaseException, where: str, error: type[HubbubError] | None = None) -> HubbubError:
    """The one translation of a plugin's exception: a :class:`HubbubError` keeps its meaning
    (it was raised on purpose, to refuse a request, say); anything else becomes ``error``
    (default :class:`PluginError`) reading ``<where>: <type>: <message>``, where ``where`` names
    the plugin and what it was doing. Raise the result ``from exc``."""
    if isinstance(exc, HubbubError):
        return exc
    return (error or PluginError)(f"{where}: {type(exc).__name__}: {exc}")


class HubbubError(Exception):
    """Base class of every error hubbub raises on purpose."""

    status: int = 500
    """The HTTP status the reference server answers with."""
    code: str = "internal_error"
    """A stable machine-readable name for the error."""
    reported: bool = False
    """Whether whoever raised it has logged it already (throttled, with what to do): the server
    then answers without logging it again for every request."""
    retry_after: float | None = None
    """Seconds after which the same request may succeed, when known: the server sends it as
    ``Retry-After``."""

    def extensions(self) -> dict[str, object]:
        """Extra members of the problem document the server answers with (none by default)."""
        return {}


class ConfigIssue(msgspec.Struct, frozen=True):
    """One problem in a configuration: where it is and what is wrong."""

    path: str
    """Dotted TOML path, e.g. ``cache.fallback``."""
    message: str
    """What is wrong, and what would be right."""
    line: int | None = None
    """1-based line in the configuration file, when the key can be located."""
    source: str | None = None
    """The file (or ``environment``) the value came from."""

    def __str__(self) -> str:
        where = ""
        if self.source and self.line:
            where = f"{self.source}:{self.line}: "
        elif self.source:
            where = f"{self.source}: "
        return f"{where}{self.path}: {self.message}" if self.path else f"{where}{self.message}"


class ConfigError(HubbubError):
    """The configuration is invalid. ``issues`` lists every problem found, each with its path."""

    code = "config_error"

    def __init__(self, issues: Sequence[ConfigIssue]) -> None:
        self.issues = list(issues)
        super().__init__("\n".join(str(issue) for issue in self.issues))


class PluginError(HubbubError):
    """A plugin could not be loaded or misbehaved in a hook; the message names it and its
    distribution."""

    code = "plugin_error"


class ComponentError(HubbubError):
    """A component failed to build or start."""

    code = "component_error"
    status = 503


class InvalidRequestError(HubbubError):
    """The caller asked for something malformed; ``field`` names the offending part."""

    status = 422
    code = "invalid_request"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.field = field
        super().__init__(message)


class UnknownModelError(InvalidRequestError):
    """No configured provider serves the requested model."""

    status = 404
    code = "model_not_found"


class NotFoundError(HubbubError):
    """The thing asked for does not exist (or the caller may not know that it does)."""

    status = 404
    code = "not_found"


class ConflictError(HubbubError):
    """The request conflicts with existing state."""

    status = 409
    code = "conflict"


class AuthenticationError(HubbubError):
    """Credentials were missing, malformed, expired, revoked or forged."""

    status = 401
    code = "unauthenticated"


class PermissionDeniedError(HubbubError):
    """The caller is known but may not do this."""

    status = 403
    code = "forbidden"


class ToolError(HubbubError):
    """A tool could not do what it was asked, for a reason the model can read and act on (a
    refused address, a missing record). Raised from a tool (or tool middleware), it becomes the
    call's result with ``is_error=True`` and ``content`` ``error: <message>``; it never reaches
    an HTTP client as such."""

    status = 422
    code = "tool_error"


class TooManyRequestsError(HubbubError):
    """The caller (or the server as a whole) is at a limit; retry later, or use fewer at once."""

    status = 429
    code = "too_many_requests"


class QuotaExceededError(HubbubError):
    """The caller is at one of their ``[quotas]``: ``quota`` names it, ``used`` and ``limit``
    say where they stand. Storage quotas free up only when they delete something; a rate
    quota says when to retry."""

    status = 429
    code = "quota_exceeded"

    def __init__(
        self, message: str, *, quota: str, used: int, limit: int, retry_after: float | None = None
    ) -> None:
        self.quota = quota
        self.used = used
        self.limit = limit
        self.retry_after = retry_after
        super().__init__(message)

    def extensions(self) -> dict[str, object]:
        return {"quota": self.quota, "used": self.used, "limit": self.limit}


class ContentTooLargeError(InvalidRequestError):
    """One item is larger than allowed (a message past ``[quotas] max_message_bytes``)."""

    status = 413
    code = "content_too_large"


class ProviderError(HubbubError):
    """An LLM provider failed to answer.

    :param retryable: whether the same request may succeed if sent again (the LLM client's
        retries follow it); ``None`` lets :func:`hubbub.resilience.is_retryable` decide from the
        type (a 5xx status is retried).
    :param upstream_status: the HTTP status the upstream answered with, when there was one.
    :param retry_after: seconds the upstream asked to wait (its ``Retry-After``).
    """

    status = 502
    code = "provider_error"

    def __init__(
        self,
        message: str,
        *,
        retryable: bool | None = None,
        upstream_status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        if retryable is not None:
            self.retryable = retryable
        self.upstream_status = upstream_status
        if retry_after is not None:
            self.retry_after = retry_after


class ProviderTimeoutError(ProviderError):
    """An LLM provider did not answer in time."""

    status = 504
    code = "provider_timeout"
    retryable = True


class ProviderRateLimitedError(ProviderError):
    """The upstream refused the request for now (its 429): retried after its ``Retry-After``;
    answered as a 429 when every retry and fallback was refused too."""

    status = 429
    code = "provider_rate_limited"
    retryable = True


class ContextWindowExceededError(ProviderError):
    """The request does not fit the model's context window. Never retried as it is; a
    fallback model (which may have a larger window) is tried."""

    status = 400
    code = "context_length_exceeded"
    retryable = False


class ProviderRequestError(ProviderError):
    """The upstream refused the request itself (its 400 or 422: an invalid parameter, a tool
    schema it does not accept): the same request would fail on any model, so it is answered as
    a 400 at once, never retried, never sent to a fallback, and never held against the
    upstream's circuit breaker."""

    status = 400
    code = "invalid_request"
    retryable = False


class BudgetExceededError(HubbubError):
    """The request could cost more than what is left of a budget (``[budgets.<scope>]``):
    refused before any provider is called. ``budget`` names the scope (``user``, ``key`` or
    ``global``), ``limit`` and ``used`` say where it stands (tokens, or a cost as a decimal
    string), ``retry_after`` when the period ends."""

    status = 402
    code = "budget_exceeded"

    def __init__(
        self,
        message: str,
        *,
        budget: str,
        unit: str,
        used: str,
        limit: str,
        retry_after: float | None = None,
    ) -> None:
        self.budget = budget
        self.unit = unit
        self.used = used
        self.limit = limit
        self.retry_after = retry_after
        super().__init__(message)

    def extensions(self) -> dict[str, object]:
        return {"budget": self.budget, "unit": self.unit, "used": self.used, "limit": self.limit}
