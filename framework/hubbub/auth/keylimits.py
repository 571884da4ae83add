"""Requests limited per API key: ``[auth] requests_per_minute_per_key``.

Each request authenticated with a key is counted in the cache (shared by every process when it
is Redis), in fixed windows of one minute, as :mod:`hubbub.auth.limits` counts failed logins.
A key past its limit is refused with 429 and ``Retry-After`` (the end of the window). A fixed
window lets a key make up to twice its limit across a window boundary; that is the price of one
cache write per request. When the cache cannot count, requests go through (logged): refusing
every key because the cache is down would be worse.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from hubbub.contracts import CacheBackend
from hubbub.errors import TooManyRequestsError

__all__ = ["KeyRateLimiter"]

logger = logging.getLogger("hubbub.auth")

WINDOW = 60.0
"""Seconds of one counting window."""

_WARN_EVERY = 10.0
"""Seconds between two warnings that the cache cannot count."""


class KeyRateLimiter:
    """Counts the requests of each API key in the current minute.

    :param cache: where the counts live (the runtime's cache).
    :param per_minute: requests one key may make in a minute; 0: no limit (nothing is counted).
    """

    def __init__(
        self, cache: CacheBackend, per_minute: int, clock: Callable[[], float] = time.time
    ) -> None:
        self.cache = cache
        self.per_minute = per_minute
        """Requests one key may make in a minute (0: unlimited)."""
        self._clock = clock
        self._warned_at = -_WARN_EVERY

    async def hit(self, key_id: str) -> None:
        """Count one request of key ``key_id``; :class:`TooManyRequestsError` (with
        ``retry_after``) when it is past its limit for this minute."""
        limit = self.per_minute
        if not limit:
            return
        moment = self._clock()
        bucket = int(moment // WINDOW)
        try:
            count = await self.cache.incr(f"hubbub:keyrate:{key_id}:{bucket}", 1, WINDOW + 5)
        except Exception as exc:
            now = time.monotonic()
            if now - self._warned_at >= _WARN_EVERY:
                self._warned_at = now
                logger.warning("cannot count requests per API key (letting them through): %s", exc)
            return
        if count > limit:
            logger.info(
                "API key %s refused: past %d requests this minute",
                key_id,
                limit,
                extra={"key_id": key_id, "reason": "key rate limit"},
            )
            error = TooManyRequestsError(
                f"this API key made more than {limit} requests this minute: wait before "
                "trying again"
            )
            error.retry_after = max(1.0, (bucket + 1) * WINDOW - moment)
            raise error
