"""Per-key rate limits of LLM calls: ``[budgets] key_requests_per_minute`` and
``key_tokens_per_minute``.

Counted in the cache (shared by every process when it is Redis) in fixed windows of one
minute, like :mod:`hubbub.auth.keylimits`. Tokens are counted as reserved (the most the call can
use) when it starts and corrected to what it used when it ends. A key past a limit is refused
with 429 and ``Retry-After`` (the end of the window); a call that alone may use more tokens than
the key's per-minute limit could never pass, so it is refused at once as an invalid request
(422), saying so. When the cache cannot count, calls go
through (logged): refusing every key because the cache is down would be worse.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from hubbub.contracts import CacheBackend
from hubbub.errors import InvalidRequestError, TooManyRequestsError

__all__ = ["Admission", "KeyMinuteLimits"]

logger = logging.getLogger("hubbub.budgets")

WINDOW = 60.0
"""Seconds of one counting window."""

_WARN_EVERY = 10.0


@dataclass(frozen=True, slots=True)
class Admission:
    """A call let through: where its tokens were counted, to correct them later."""

    key: str
    """The cache key of the window's token count (empty: tokens are not limited)."""
    tokens: int
    """Tokens counted for the call."""


class KeyMinuteLimits:
    """Counts each API key's LLM calls and tokens in the current minute.

    :param cache: where the counts live (the runtime's cache), or a callable returning it.
    :param requests: calls one key may make per minute (0: no limit).
    :param tokens: tokens one key may use per minute (0: no limit).
    """

    def __init__(
        self,
        cache: Callable[[], CacheBackend],
        *,
        requests: int,
        tokens: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._cache = cache
        self.requests = requests
        self.tokens = tokens
        self._clock = clock
        self._warned_at = -_WARN_EVERY

    @property
    def active(self) -> bool:
        """Whether any limit is set."""
        return bool(self.requests or self.tokens)

    def _cannot_count(self, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._warned_at >= _WARN_EVERY:
            self._warned_at = now
            logger.warning("cannot count LLM calls per API key (letting them through): %s", exc)

    def _refuse(self, key_id: str, what: str, bucket: int, moment: float) -> TooManyRequestsError:
        logger.info(
            "API key %s refused: %s",
            key_id,
            what,
            extra={"key_id": key_id, "reason": "key LLM rate limit"},
        )
        error = TooManyRequestsError(f"this API key {what}: wait before trying again")
        error.retry_after = max(1.0, (bucket + 1) * WINDOW - moment)
        return error

    async def admit(self, key_id: str, tokens: int) -> Admission | None:
        """Count one call of ``key_id`` that may use ``tokens``; raise
        :class:`TooManyRequestsError` (with ``retry_after``) when it would pass a limit, and
        :class:`InvalidRequestError` when the call alone may use more tokens than a minute
        allows (waiting would not help)."""
        if self.tokens and tokens > self.tokens:
            logger.info(
                "API key %s refused: a call of %d tokens, over its %d per minute",
                key_id,
                tokens,
                self.tokens,
                extra={"key_id": key_id, "reason": "key LLM token limit"},
            )
            raise InvalidRequestError(
                f"this request alone may use up to {tokens} tokens (its prompt, plus its "
                f"max_tokens or else the model's output limit), more than this API key's limit "
                f"of {self.tokens} tokens per minute: send a smaller max_tokens or a shorter "
                "prompt",
                field="max_tokens",
            )
        moment = self._clock()
        bucket = int(moment // WINDOW)
        cache = self._cache()
        try:
            if self.requests:
                count = await cache.incr(f"hubbub:llmrate:{key_id}:{bucket}", 1, WINDOW + 5)
                if count > self.requests:
                    raise self._refuse(
                        key_id,
                        f"made more than {self.requests} LLM calls this minute",
                        bucket,
                        moment,
                    )
            if not self.tokens:
                return None
            key = f"hubbub:llmtokens:{key_id}:{bucket}"
            used = await cache.incr(key, tokens, WINDOW + 5)
            if used > self.tokens:
                await cache.incr(key, -tokens, WINDOW + 5)
                raise self._refuse(
                    key_id,
                    f"would use more than {self.tokens} tokens this minute "
                    f"(this call may use {tokens})",
                    bucket,
                    moment,
                )
        except TooManyRequestsError:
            raise
        except Exception as exc:
            self._cannot_count(exc)
            return None
        return Admission(key, tokens)

    async def correct(self, admission: Admission | None, tokens: int) -> None:
        """Replace the tokens counted for a call by ``tokens`` (0: it used none)."""
        if admission is None or not admission.key or tokens == admission.tokens:
            return
        try:
            await self._cache().incr(admission.key, tokens - admission.tokens, WINDOW + 5)
        except Exception as exc:
            self._cannot_count(exc)
