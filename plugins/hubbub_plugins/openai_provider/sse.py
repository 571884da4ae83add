"""Server-sent events from the pieces of a response body, as they arrive.

:class:`SSEParser` takes the body's byte pieces (cut anywhere: in an event, in a line, between
``\\r`` and ``\\n``) and hands back the ``data`` of each complete event. The common case, a piece
of whole ``data: {...}\\n\\n`` events, costs one split and one slice per event; comments
(``: keep-alive``), ``event:``/``id:``/``retry:`` fields, several ``data:`` lines (joined with
``\\n``) and ``\\r\\n`` or ``\\r`` line ends are handled as the SSE specification says.
"""

from __future__ import annotations

__all__ = ["SSEParser"]


class SSEParser:
    """Feed body pieces to :meth:`feed`; it returns the data of the events they completed."""

    __slots__ = ("_rest",)

    def __init__(self) -> None:
        self._rest = b""

    def feed(self, piece: bytes) -> list[bytes]:
        """The ``data`` of every event ``piece`` completes, in order (an event without data
        lines is no event); what remains waits for the next piece."""
        if self._rest:
            piece = self._rest + piece
        if b"\r" in piece:
            if piece.endswith(b"\r"):  # its \n may be in the next piece
                piece, held = piece[:-1], b"\r"
            else:
                held = b""
            piece = piece.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        else:
            held = b""
        blocks = piece.split(b"\n\n")
        self._rest = blocks.pop() + held
        found = []
        for block in blocks:
            if block.startswith(b"data: ") and b"\n" not in block:
                found.append(block[6:])  # the common case: one data line
            elif block:
                data = _data(block)
                if data is not None:
                    found.append(data)
        return found

    def finish(self) -> list[bytes]:
        """At the body's end: the data of an event that a last ``\r`` completed (an event
        left unfinished is dropped, as the specification says)."""
        rest, self._rest = self._rest, b""
        if not rest.endswith(b"\r"):
            return []
        return self.feed(rest[:-1] + b"\n")

    @property
    def pending(self) -> bool:
        """Whether part of an event is still waiting for its end."""
        return bool(self._rest.strip(b"\r\n"))


def _data(block: bytes) -> bytes | None:
    """The data of one event's lines, ``None`` when it has no data line."""
    lines = []
    for line in block.split(b"\n"):
        if not line or line.startswith(b":"):
            continue
        field, colon, value = line.partition(b":")
        if field != b"data":
            continue
        if colon and value.startswith(b" "):
            value = value[1:]
        lines.append(value)
    return b"\n".join(lines) if lines else None
