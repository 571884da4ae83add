"""Login attempts limited per account and per client address.

Attempts are counted in the cache (shared by every process when it is Redis) in fixed windows
of ``[auth] login_window`` seconds, **before** any password is checked: an attempt first takes
its place in the account's and the address's counts (atomic increments), and one beyond a limit
is refused with 429 and ``Retry-After`` (the end of the window) without any argon2 work, however
many arrive at once. A successful login gives its places back (the account's count is cleared,
the address's decremented), so only failures add up. Sign-ins through another site count
against the address too (:meth:`LoginLimiter.redirect_started`): each keeps a little state in
the cache for minutes. When the cache cannot count, attempts go through (logged): locking
everyone out because the cache is down would be worse.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable

from hubbub.config import AuthConfig
from hubbub.contracts import CacheBackend
from hubbub.errors import TooManyRequestsError

__all__ = ["LoginLimiter"]

logger = logging.getLogger("hubbub.auth")


class LoginLimiter:
    """Counts login attempts per account and per address."""

    def __init__(
        self, cache: CacheBackend, config: AuthConfig, clock: Callable[[], float] = time.time
    ) -> None:
        self.cache = cache
        self.config = config
        self._clock = clock

    def _window(self) -> tuple[int, float]:
        """This window's number and the seconds left in it."""
        window = self.config.login_window
        moment = self._clock()
        bucket = int(moment // window)
        return bucket, (bucket + 1) * window - moment

    @staticmethod
    def _account(name: str) -> str:
        return hashlib.sha256(name.lower().encode()).hexdigest()[:32]

    def _keys(self, name: str, address: str | None, bucket: int) -> list[tuple[str, int, str]]:
        """``(key, limit, what)`` for the account and (when known) the address."""
        keys = [
            (
                f"hubbub:login:account:{self._account(name)}:{bucket}",
                self.config.login_attempts,
                "account",
            )
        ]
        if address:
            keys.append(
                (
                    f"hubbub:login:address:{address}:{bucket}",
                    self.config.login_attempts_per_address,
                    "address",
                )
            )
        return keys

    async def attempt(self, name: str, address: str | None) -> None:
        """Count a login attempt for ``name`` from ``address``, before its password is
        checked; :class:`TooManyRequestsError` when either is beyond its limit."""
        bucket, left = self._window()
        ttl = self.config.login_window + 5
        for key, limit, what in self._keys(name, address, bucket):
            if not limit:
                continue
            try:
                count = await self.cache.incr(key, 1, ttl)
            except Exception as exc:
                logger.warning("cannot count login attempts: %s", exc)
                return
            if count > limit:
                raise self._refused(what, left, "too many failed logins")

    async def succeeded(self, name: str, address: str | None) -> None:
        """Give back a successful login's places: the account's failures are forgotten, the
        address's count goes down by one."""
        bucket, _ = self._window()
        for key, limit, what in self._keys(name, address, bucket):
            if not limit:
                continue
            try:
                if what == "account":
                    await self.cache.delete(key)
                else:
                    await self.cache.incr(key, -1)
            except Exception as exc:
                logger.warning("cannot reset login attempts: %s", exc)

    async def redirect_started(self, address: str | None) -> None:
        """Count a sign-in through another site started from ``address`` (every start, with
        the failed logins' limit per address): :class:`TooManyRequestsError` beyond it."""
        limit = self.config.login_attempts_per_address
        if not limit or not address:
            return
        bucket, left = self._window()
        try:
            started = await self.cache.incr(
                f"hubbub:login:redirects:{address}:{bucket}", 1, self.config.login_window + 5
            )
        except Exception as exc:
            logger.warning("cannot count sign-ins started: %s", exc)
            return
        if started > limit:
            raise self._refused("address", left, "too many sign-ins started")

    @staticmethod
    def _refused(what: str, left: float, why: str) -> TooManyRequestsError:
        logger.warning(
            "login refused: %s for this %s", why, what, extra={"reason": f"{what} rate limit"}
        )
        error = TooManyRequestsError(f"{why}: wait before trying again")
        error.retry_after = max(1.0, left)
        return error
