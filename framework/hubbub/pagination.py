"""Opaque cursors for paged listings: what a store hands out as ``next_cursor`` and takes back.

A cursor names its listing and a position in it (``encode_cursor("c", updated_at, id)``);
:func:`decode_cursor` gives the position back only for the same listing and only with parts of
the expected kinds, so a forged cursor, or one of another listing, is a clear 422 naming
``cursor`` (:class:`hubbub.errors.InvalidRequestError`), never a database error or a crash::

    cursor = encode_cursor("c", 1795568554.2, "conv_1")
    updated_at, conversation_id = decode_cursor(cursor, "c", float, str)

A cursor says where a listing goes on, never who may see it: the listing still filters by
owner, so a cursor copied from another caller reaches nothing of theirs.
"""

from __future__ import annotations

import base64
import binascii
import math
from typing import Any

import msgspec

from hubbub.errors import InvalidRequestError

__all__ = ["MAX_CURSOR_LENGTH", "decode_cursor", "encode_cursor"]

MAX_CURSOR_LENGTH = 2048
"""Longest cursor accepted (characters); longer ones are refused undecoded."""

_INT64 = (-(2**63), 2**63 - 1)
_decode = msgspec.json.Decoder(list[Any]).decode


def encode_cursor(listing: str, *position: str | int | float) -> str:
    """A cursor for ``listing`` at ``position`` (URL-safe base64 of JSON)."""
    return base64.urlsafe_b64encode(msgspec.json.encode([listing, *position])).decode()


def decode_cursor(cursor: str, listing: str, *kinds: type) -> list[Any]:
    """The position in a cursor :func:`encode_cursor` made for ``listing``, one part per kind
    in ``kinds``: ``str`` (without NUL), ``int`` (a signed 64-bit integer, not a bool) or
    ``float`` (a finite number; an integer is accepted and returned as a float). Anything else
    raises :class:`~hubbub.errors.InvalidRequestError` naming ``cursor``."""
    parts = _parts(cursor)
    if parts is None or len(parts) != len(kinds) + 1 or parts[0] != listing:
        raise _forged()
    return [_checked(part, kind) for part, kind in zip(parts[1:], kinds, strict=True)]


def _parts(cursor: str) -> list[Any] | None:
    if not isinstance(cursor, str) or len(cursor) > MAX_CURSOR_LENGTH:
        return None
    try:
        return _decode(base64.b64decode(cursor.encode(), altchars=b"-_", validate=True))
    except (ValueError, binascii.Error, msgspec.DecodeError, RecursionError, UnicodeError):
        return None


def _checked(part: Any, kind: type) -> Any:
    if isinstance(part, bool):
        raise _forged()
    if kind is float and isinstance(part, int | float):
        value = float(part) if abs(part) < 1e308 else math.inf
        if math.isfinite(value):
            return value
    elif (kind is int and isinstance(part, int) and _INT64[0] <= part <= _INT64[1]) or (
        kind is str and isinstance(part, str) and "\x00" not in part
    ):
        return part
    raise _forged()


def _forged() -> InvalidRequestError:
    return InvalidRequestError("cursor is not one this server issued", field="cursor")
