"""What a request presents: :func:`credentials_from_headers` turns raw HTTP headers into
:class:`~hubbub.contracts.Credentials`, refusing ambiguous ones (two ``Authorization``
headers: which one would count?)."""

from __future__ import annotations

from collections.abc import Iterable

from hubbub.contracts import Credentials
from hubbub.errors import AuthenticationError

__all__ = ["AmbiguousCredentialsError", "credentials_from_headers"]


class AmbiguousCredentialsError(AuthenticationError):
    """The request carries more than one ``Authorization`` header (HTTP 400, as RFC 6750
    prescribes for a request that repeats its credentials)."""

    status = 400
    code = "ambiguous_credentials"


def credentials_from_headers(headers: Iterable[tuple[bytes, bytes]]) -> Credentials:
    """The credentials in raw ASGI headers (lower-case names, latin-1 values): the bearer
    token of ``Authorization: Bearer <token>`` and every header, for methods that read their
    own. Raises :class:`AmbiguousCredentialsError` for more than one ``Authorization``."""
    bearer = None
    seen = 0
    collected: dict[str, str] = {}
    for name, value in headers:
        text = value.decode("latin-1")
        collected[name.decode("latin-1")] = text
        if name == b"authorization":
            seen += 1
            scheme, _, token = text.strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                bearer = token.strip()
    if seen > 1:
        raise AmbiguousCredentialsError(
            f"the request has {seen} Authorization headers: send exactly one"
        )
    return Credentials(bearer=bearer, headers=collected)
