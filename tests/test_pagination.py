"""Cursors: a position given back only to the listing that made it, with parts of the right
kinds; anything else is a 422 naming ``cursor``."""

from __future__ import annotations

import base64

import pytest

from hubbub.errors import InvalidRequestError
from hubbub.pagination import MAX_CURSOR_LENGTH, decode_cursor, encode_cursor


def raw(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


def test_a_cursor_gives_its_position_back() -> None:
    cursor = encode_cursor("c", 1795568554.25, "conv_1")
    assert decode_cursor(cursor, "c", float, str) == [1795568554.25, "conv_1"]
    assert decode_cursor(encode_cursor("m", "conv_1", 2**63 - 1), "m", str, int) == [
        "conv_1",
        2**63 - 1,
    ]
    assert decode_cursor(encode_cursor("c", 17, "x"), "c", float, str) == [17.0, "x"]


@pytest.mark.parametrize(
    "cursor",
    [
        encode_cursor("k", 1.0, "x"),  # another listing's
        encode_cursor("c", 1.0),  # too short
        encode_cursor("c", 1.0, "x", "y"),  # too long
        encode_cursor("c", "1.0", "x"),  # a string for a number
        raw('["c", true, "x"]'),  # a bool is not a number
        raw('["c", 1e999, "x"]'),  # infinity
        raw('["c", 1.0, "a\\u0000b"]'),  # NUL
        raw('{"c": 1}'),
        raw("not json"),
        "not base64!",
        "",
        "A" * (MAX_CURSOR_LENGTH + 1),
        raw("[" * 10_000),
    ],
)
def test_anything_else_is_refused_naming_the_cursor(cursor: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        decode_cursor(cursor, "c", float, str)
    assert caught.value.field == "cursor"


def test_integers_past_64_bits_are_refused() -> None:
    with pytest.raises(InvalidRequestError):
        decode_cursor(encode_cursor("m", "x", 2**63), "m", str, int)
    with pytest.raises(InvalidRequestError):
        decode_cursor(encode_cursor("m", "x", -(2**63) - 1), "m", str, int)
