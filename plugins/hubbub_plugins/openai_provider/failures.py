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
  -> :class:`ProviderTimeoutError`.

Only the upstream's own ``error.message`` is shown, one line, through
:func:`hubbub.redaction.public_message`, and never the upstream's address.
"""

from __future__ import annotations

import email.utils
import re
import time

import msgspec

from hubbub.errors import (
    ContextWindowExceededError,
    ProviderError,
    ProviderRateLimitedError,
    ProviderTimeoutError,
)
from hubbub.http import (
    ConnectError,
    ConnectionClosedError,
    HttpError,
    ProtocolError,
    ReadTimeoutError,
    ResponseTooLargeError,
)
from hubbub.redaction import public_message
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
    an HTTP date); ``None`` when neither says."""
    if ms:
        try:
            value = float(ms) / 1000
        except ValueError:
            value = -1
        if value >= 0:
            return value
    if not seconds:
        return None
    try:
        value = float(seconds)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(seconds)
        except (TypeError, ValueError):
            return None
        value = when.timestamp() - (time.time() if now is None else now)
    return max(value, 0.0) if value == value else None  # NaN says nothing


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


def transport_error(model: str, exc: HttpError, timeout: float) -> ProviderError:
    """The error for a request that got no whole answer (the upstream's address stays out of
    it: operators find it in the log)."""
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
