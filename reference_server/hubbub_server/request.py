"""The reference server's request class: a JSON body that cannot be decoded is the client's
fault, whatever the decoder raises about it.

Litestar turns msgspec's :class:`msgspec.DecodeError` into a 400, but msgspec raises two other
errors for bodies no client should send: :class:`UnicodeDecodeError` for bytes that are not
UTF-8 inside a string, and :class:`RecursionError` for arrays or objects nested deeper than
the interpreter's recursion limit. Both become Litestar's
:class:`~litestar.exceptions.SerializationException` here, where the body is decoded, so they
reach the client as 400 ``malformed_json`` problems (:mod:`hubbub_server.problems`) like any
other malformed body, instead of 500s; the same errors raised anywhere else stay server faults.
"""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.exceptions import SerializationException

__all__ = ["JSONRequest"]


class JSONRequest(Request[Any, Any, Any]):
    """A :class:`litestar.Request` whose :meth:`json` reports every undecodable body as a
    :class:`~litestar.exceptions.SerializationException`."""

    async def json(self) -> Any:
        """The decoded JSON body (``None`` when empty)."""
        try:
            return await super().json()
        except UnicodeDecodeError:
            raise SerializationException(
                "JSON is malformed: a string holds bytes that are not UTF-8"
            ) from None
        except RecursionError:
            raise SerializationException(
                "JSON is malformed: arrays or objects are nested too deeply"
            ) from None
