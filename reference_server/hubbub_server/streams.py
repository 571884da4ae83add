"""How many event streams are open, per caller and in all: a caller past
``[events] max_streams_per_caller``, or a process past ``[events] max_streams``, gets 429
instead of another stream."""

from __future__ import annotations

from collections import Counter

from hubbub.errors import TooManyRequestsError

__all__ = ["StreamLimits", "StreamSlot"]


class StreamSlot:
    """One open stream's place in the count; :meth:`release` gives it back (once)."""

    __slots__ = ("_limits", "_owner")

    def __init__(self, limits: StreamLimits, owner: str) -> None:
        self._limits: StreamLimits | None = limits
        self._owner = owner

    def release(self) -> None:
        """Give the place back; later calls do nothing."""
        limits, self._limits = self._limits, None
        if limits is not None:
            limits._release(self._owner)


class StreamLimits:
    """Counts open event streams by caller."""

    def __init__(self, per_caller: int, total: int) -> None:
        self.per_caller = per_caller
        self.total = total
        self._open: Counter[str] = Counter()
        self._count = 0

    @property
    def open(self) -> int:
        """Streams open now."""
        return self._count

    def held_by(self, owner: str) -> int:
        """Streams ``owner`` holds open now."""
        return self._open[owner]

    def reserve(self, owner: str) -> StreamSlot:
        """A place for one more stream of ``owner``, or :class:`TooManyRequestsError`."""
        if self._open[owner] >= self.per_caller:
            raise TooManyRequestsError(
                f"you have {self.per_caller} event streams open, the most allowed; close one "
                "(one /api/events stream carries everything you may see)"
            )
        if self._count >= self.total:
            raise TooManyRequestsError("the server has as many event streams open as it may")
        self._open[owner] += 1
        self._count += 1
        return StreamSlot(self, owner)

    def _release(self, owner: str) -> None:
        self._open[owner] -= 1
        if self._open[owner] <= 0:
            del self._open[owner]
        self._count -= 1
