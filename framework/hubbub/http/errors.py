"""The errors :mod:`hubbub.http` raises.

Every one is an :class:`HttpError`, itself an :class:`OSError`, so
:func:`hubbub.resilience.is_retryable` retries them unless the class says otherwise (its
``retryable`` attribute): a TLS failure, a response over the size limits and a closed client are
not worth retrying, everything else (connection refused or reset, timeouts, a malformed
response) is.

Messages name the method, the origin and the path of the request (never its query string, which
some APIs use for keys) and the names of headers, never their values.
"""

from __future__ import annotations

__all__ = [
    "ClientClosedError",
    "ConnectError",
    "ConnectTimeoutError",
    "ConnectionClosedError",
    "HttpError",
    "PoolFullError",
    "ProtocolError",
    "ReadTimeoutError",
    "ResponseTooLargeError",
    "TLSError",
]


class HttpError(OSError):
    """Base class of every error of :mod:`hubbub.http`: the request did not get a whole,
    well-formed response."""

    retryable: bool | None = None
    """``False`` where retrying the same request cannot help; ``None`` leaves the decision to
    :func:`hubbub.resilience.is_retryable` (which retries an :class:`OSError`)."""

    def __init__(self, message: str, *, request: str = "") -> None:
        super().__init__(f"{request}: {message}" if request else message)
        self.request = request
        """``METHOD scheme://host:port/path`` of the request (no query string), or empty."""


class ConnectError(HttpError, ConnectionError):
    """No connection could be made to the upstream (refused, unreachable, unknown host)."""


class ConnectTimeoutError(ConnectError, TimeoutError):
    """Connecting (TCP and TLS handshake) took longer than ``connect_timeout``."""


class TLSError(ConnectError):
    """The TLS handshake failed: the certificate did not verify, or no common protocol."""

    retryable = False


class ReadTimeoutError(HttpError, TimeoutError):
    """A response was due and nothing of it arrived for ``read_timeout`` seconds."""


class ConnectionClosedError(HttpError, ConnectionError):
    """The upstream closed or reset the connection before the response was complete."""


class ProtocolError(HttpError):
    """The upstream's response is not valid HTTP/1.1."""


class ResponseTooLargeError(HttpError):
    """The response's head or body is larger than the client accepts
    (``max_header_bytes``, ``max_response_bytes``)."""

    retryable = False

    def __init__(self, message: str, *, request: str = "", limit: int = 0) -> None:
        super().__init__(message, request=request)
        self.limit = limit
        """The limit that was exceeded, in bytes."""


class PoolFullError(HttpError):
    """Too many requests are already waiting for a connection of this client
    (``max_waiters``)."""


class ClientClosedError(HttpError):
    """The :class:`~hubbub.http.HttpClient` was closed (before or during the request)."""

    retryable = False
