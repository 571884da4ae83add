"""What an upstream's failure means to hubbub: its HTTP status, error body and transport errors
become the errors of :mod:`hubbub.errors`, with ``retryable`` set as the LLM client's retries
need it.

* 400 (also 413, 422) about the context window -> :class:`ContextWindowExceededError`
  (never retried; the client falls back);
* 429 -> :class:`ProviderRateLimitedError` carrying the upstream's ``Retry-After``;
* 401 and 403 -> a :class:`ProviderError`, not retryable, that says the upstream refused the
  key (and shows nothing of the upstream's message, which may quote the key);
* 408, 409 and 5xx -> a retryable :class:`ProviderError`; other 4xx -> not retryable;
* no connection, a connection closed early, a malformed response -> retryable; no byte in time
  -> :class:`ProviderTimeoutError`;
* too many requests already waiting for a connection to the upstream (the pool's
  ``max_waiters``) -> :class:`TooManyRequestsError` (429, ``Retry-After: 1``): the overload is
  local, not the upstream's fault, so it is neither retried nor counted by the model's breaker.

Only the upstream's own ``error.message`` is shown, one line, through
:func:`hubbub.redaction.public_message`, and never the upstream's address.
"""

from __future__ import annotations

import re

import msgspec

from hubbub.errors import (
    ContextWindowExceededError,
    HubbubError,
    ProviderError,
    ProviderRateLimitedError,
    ProviderTimeoutError,
    TooManyRequestsError,
)
from hubbub.http import (
    ConnectError,
    ConnectionClosedError,
    HttpError,
    PoolFullError,
    ProtocolError,
    ReadTimeoutError,
    ResponseTooLargeError,
)
from hubbub.redaction import public_message
from hubbub.resilience import parse_retry_after
from hubbub_plugins.openai_provider.wire import ERROR, ErrorDetail

__all__ = [
    "MAX_ERROR_BYTES",
    "retry_after",
    "shown",
    "status_error",
    "transport_error",
    "upstream_message",
]

MAX_ERROR_BYTES = 64 * 1024
"""The most of an error body that is read."""
MAX_MESSAGE = 300
"""The most characters of the upstream's message that are shown."""

_OVERFLOW = re.compile(
    r"context[ _-]length|context[ _-]window|maximum context|too many tokens|reduce the length"
    r"|prompt is too long|input is too long|exceeds? the (?:model'?s? )?(?:max|context)",
    re.IGNORECASE,
)
"""How upstreams say a request does not fit the model (OpenAI, vLLM, Azure, Groq, Ollama...)."""


def upstream_message(body: bytes) -> tuple[str, str | None]:
    """The upstream's explanation in an error ``body`` (one line, redacted, bounded; empty
    when there is none) and its error code."""
    try:
        parsed = ERROR.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return "", None
    code: str | None = None
    message = ""
    if isinstance(parsed.error, ErrorDetail):
        message = parsed.error.message or ""
        code = None if parsed.error.code is None else str(parsed.error.code)
    elif isinstance(parsed.error, str):
        message = parsed.error
    elif parsed.message:
        message = parsed.message
    elif isinstance(parsed.detail, str):
        message = parsed.detail
    return shown(message), code


def shown(message: str) -> str:
    """An upstream's ``message`` fit to show: one line, redacted, at most
    :data:`MAX_MESSAGE` characters; empty when it says nothing."""
    message = public_message(message.strip()) if message.strip() else ""
    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE - 3] + "..."
    return message


def retry_after(ms: str | None, seconds: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` (Azure, OpenAI) or ``Retry-After`` (seconds or
    an HTTP date, read by :func:`hubbub.resilience.parse_retry_after`); ``None`` when neither
    says."""
    if ms:
        millis = parse_retry_after(ms)
        if millis is not None:
            return millis / 1000
    return parse_retry_after(seconds, now=now) if seconds else None


POOL_FULL_RETRY_AFTER = 1.0
"""Seconds a client is told to wait when the pool to the upstream has too many waiters."""


def status_error(
    model: str,
    status: int,
    body: bytes,
    *,
    retry_after_ms: str | None = None,
    retry_after_header: str | None = None,
) -> ProviderError:
    """The error for an upstream's answer ``status`` (not 2xx) with ``body``, for the model
    clients call ``model``."""
    if status in (401, 403):
        return ProviderError(
            f"model {model!r}: the upstream refused the key (HTTP {status}); check the model's"
            " api_key",
            retryable=False,
            upstream_status=status,
        )
    message, code = upstream_message(body)
    said = f": {message}" if message else ""
    if status == 429:
        return ProviderRateLimitedError(
            f"model {model!r}: the upstream is rate limiting (HTTP 429){said}",
            upstream_status=status,
            retry_after=retry_after(retry_after_ms, retry_after_header),
        )
    if code == "context_length_exceeded" or (
        status in (400, 413, 422) and _OVERFLOW.search(message)
    ):
        return ContextWindowExceededError(
            f"model {model!r}: the request does not fit the model's context window{said}",
            upstream_status=status,
        )
    return ProviderError(
        f"model {model!r}: the upstream answered HTTP {status}{said}",
        retryable=status >= 500 or status in (408, 409),
        upstream_status=status,
    )


def transport_error(model: str, exc: HttpError, timeout: float) -> HubbubError:
    """The error for a request that got no whole answer (the upstream's address stays out of
    it: operators find it in the log): a :class:`ProviderError`, except for a local overload
    (:class:`~hubbub.http.PoolFullError`), which is a :class:`TooManyRequestsError` the LLM
    client neither retries nor blames on the upstream."""
    if isinstance(exc, PoolFullError):
        overloaded = TooManyRequestsError(
            f"model {model!r}: too many requests are already waiting for a connection to the"
            " upstream; retry later"
        )
        overloaded.retry_after = POOL_FULL_RETRY_AFTER
        return overloaded
    if isinstance(exc, ReadTimeoutError):
        return ProviderTimeoutError(
            f"model {model!r}: the upstream sent nothing for {timeout:g} s", retryable=True
        )
    if isinstance(exc, ResponseTooLargeError):
        return ProviderError(
            f"model {model!r}: the upstream's answer is larger than allowed", retryable=False
        )
    if isinstance(exc, ConnectError):
        what = "could not connect to the upstream"
        if isinstance(exc, TimeoutError):
            what = "connecting to the upstream timed out"
    elif isinstance(exc, ConnectionClosedError):
        what = "the upstream closed the connection before its answer was complete"
    elif isinstance(exc, ProtocolError):
        what = "the upstream's answer is not valid HTTP"
    else:
        what = "the request to the upstream failed"
    retryable = exc.retryable if exc.retryable is not None else True
    return ProviderError(f"model {model!r}: {what}", retryable=retryable)
