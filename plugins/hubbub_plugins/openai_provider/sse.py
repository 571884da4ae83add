"""Server-sent events from the pieces of a response body, as they arrive.

:class:`SSEParser` takes the body's byte pieces (cut anywhere: in an event, in a line, between
``\\r`` and ``\\n``) and hands back the ``data`` of each complete event. The common case, a piece
of whole ``data: {...}\\n\\n`` events, costs one split and one slice per event; comments
(``: keep-alive``), ``event:``/``id:``/``retry:`` fields, several ``data:`` lines (joined with
``\\n``) and ``\\r\\n`` or ``\\r`` line ends are handled as the SSE specification says.

The work is linear in the bytes fed, however finely an event is cut: the part of an event
still waiting for its end is kept as a list of pieces, only each new piece is scanned for an
event's end, and the pieces are joined once, when the event completes. One event may be at most
``max_event_bytes`` long (:data:`MAX_EVENT_BYTES` by default): a longer one raises
:class:`EventTooLargeError`, so an upstream that never ends an event cannot fill the memory.
"""

from __future__ import annotations

__all__ = ["MAX_EVENT_BYTES", "EventTooLargeError", "SSEParser"]

MAX_EVENT_BYTES = 16 * 2**20
"""The largest event (its lines, without the blank line that ends it) accepted by default."""


class EventTooLargeError(ValueError):
    """An event is larger than the parser's ``max_event_bytes``."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the upstream sent an event larger than {limit} bytes")
        self.limit = limit
        """The limit that was exceeded, in bytes."""


class SSEParser:
    """Feed body pieces to :meth:`feed`; it returns the data of the events they completed.

    ``max_event_bytes``: the largest event accepted (see :class:`EventTooLargeError`).
    """

    __slots__ = ("_cr", "_limit", "_parts", "_size")

    def __init__(self, *, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        if max_event_bytes <= 0:
            raise ValueError(f"max_event_bytes must be positive, not {max_event_bytes}")
        self._limit = max_event_bytes
        self._parts: list[bytes] = []
        """The pending event's pieces, line ends already made ``\\n``."""
        self._size = 0
        """Bytes in :attr:`_parts`."""
        self._cr = False
        """The last piece ended with ``\\r`` (already a line end: a ``\\n`` next is its pair)."""

    def feed(self, piece: bytes) -> list[bytes]:
        """The ``data`` of every event ``piece`` completes, in order (an event without data
        lines is no event); what remains waits for the next piece.

        :raises EventTooLargeError: an event is longer than ``max_event_bytes``.
        """
        if self._cr:
            self._cr = False
            if piece[:1] == b"\n":  # the \n of a \r\n cut between two pieces
                piece = piece[1:]
        if b"\r" in piece:
            self._cr = piece.endswith(b"\r")
            piece = piece.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if not piece:
            return []
        parts = self._parts
        ends = b"\n\n" in piece or (piece[:1] == b"\n" and parts and parts[-1][-1:] == b"\n")
        if not ends:  # only part of an event: keep it, without scanning what came before
            self._size += len(piece)
            if self._size > self._limit:
                self._drop()
                raise EventTooLargeError(self._limit)
            parts.append(piece)
            return []
        if parts:
            parts.append(piece)
            text = b"".join(parts)
            self._parts = parts = []
        else:
            text = piece
        blocks = text.split(b"\n\n")
        rest = blocks.pop()
        self._size = len(rest)
        if rest:
            parts.append(rest)
        limit = self._limit
        found = []
        for block in blocks:
            if len(block) > limit:
                self._drop()
                raise EventTooLargeError(limit)
            if block.startswith(b"data: ") and b"\n" not in block:
                found.append(block[6:])  # the common case: one data line
            elif block:
                data = _data(block)
                if data is not None:
                    found.append(data)
        if self._size > limit:
            self._drop()
            raise EventTooLargeError(limit)
        return found

    def finish(self) -> list[bytes]:
        """At the body's end: an event left unfinished is dropped, as the specification says
        (a last ``\\r`` ended its line already). Returns the data of the events that completes:
        none."""
        self._drop()
        return []

    @property
    def pending(self) -> bool:
        """Whether part of an event is still waiting for its end."""
        return any(part.strip(b"\n") for part in self._parts)

    def _drop(self) -> None:
        self._parts = []
        self._size = 0
        self._cr = False


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
