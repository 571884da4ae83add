"""Passwords: argon2id hashes (argon2-cffi), made and checked off the event loop.

:class:`Passwords` applies ``[passwords]``: the length policy (:meth:`Passwords.check_policy`),
hashing with the configured argon2id parameters (:meth:`Passwords.hash`), and verification
(:meth:`Passwords.verify`) that

* does the same work for a user who does not exist (a hash of a random password stands in), so
  the time a login takes does not say whether the name is known;
* hands back a new hash when the stored one was made with other parameters, for the caller to
  store (parameters raised in the configuration reach every user at their next login);
* never reads more than ``max_length`` characters of a password (an overlong one is refused
  before any hashing: argon2's cost grows with its input).

Each hash holds ``memory_cost`` KiB for its duration: at most ``concurrency`` run at once, so a
burst of logins waits instead of exhausting memory. ::

    passwords = Passwords(PasswordsConfig())
    stored = await passwords.hash("correct horse battery staple")
    check = await passwords.verify(stored, "correct horse battery staple")
    assert check.ok and check.rehash is None
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass

from hubbub.config import PasswordsConfig
from hubbub.errors import InvalidRequestError, TooManyRequestsError

__all__ = ["QUEUE_PER_SLOT", "PasswordCheck", "Passwords"]

QUEUE_PER_SLOT = 16
"""Callers that may wait for each hashing slot before more are refused (429)."""


@dataclass(frozen=True, slots=True)
class PasswordCheck:
    """What :meth:`Passwords.verify` found."""

    ok: bool
    """Whether the password matches."""
    rehash: str | None = None
    """A new hash of the password with the current parameters, when it matched a hash made
    with others: store it in place of the old one."""


class Passwords:
    """argon2id hashing with ``[passwords]``'s parameters and policy."""

    def __init__(self, config: PasswordsConfig) -> None:
        from argon2 import PasswordHasher, Type

        self.config = config
        self._hasher = PasswordHasher(
            time_cost=config.time_cost,
            memory_cost=config.memory_cost,
            parallelism=config.parallelism,
            type=Type.ID,
        )
        self._slots = asyncio.Semaphore(config.concurrency)
        self._waiting = 0
        self._dummy: str | None = None

    def check_policy(self, password: str) -> None:
        """:class:`InvalidRequestError` naming ``password`` when it is shorter than
        ``min_length`` or longer than ``max_length`` characters, or only whitespace."""
        config = self.config
        if not password.strip():
            raise InvalidRequestError("the password must not be empty", field="password")
        if len(password) < config.min_length:
            raise InvalidRequestError(
                f"the password must be at least {config.min_length} characters long",
                field="password",
            )
        if len(password) > config.max_length:
            raise InvalidRequestError(
                f"the password must be at most {config.max_length} characters long",
                field="password",
            )

    @contextlib.asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        """One of the ``concurrency`` hashing slots; :class:`TooManyRequestsError` at once
        when :data:`QUEUE_PER_SLOT` callers per slot wait already (a flood of logins waits
        in a bounded queue, then is turned away, instead of queueing without end)."""
        if self._waiting >= QUEUE_PER_SLOT * self.config.concurrency:
            error = TooManyRequestsError("the server is busy checking passwords: try again")
            error.retry_after = 1.0
            raise error
        self._waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
        try:
            yield
        finally:
            self._slots.release()

    async def hash(self, password: str) -> str:
        """An argon2id hash of ``password`` (checked against the policy first)."""
        self.check_policy(password)
        async with self._slot():
            return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, stored: str | None, password: str) -> PasswordCheck:
        """Whether ``password`` matches ``stored`` (``None``: no such user, checked against a
        stand-in hash all the same). A malformed stored hash never matches."""
        if len(password) > self.config.max_length:
            return PasswordCheck(ok=False)
        stand_in = await self._stand_in()
        target = stored if stored is not None else stand_in
        async with self._slot():
            ok = await asyncio.to_thread(self._matches, target, password)
            if stored is None:
                return PasswordCheck(ok=False)
            outdated = self._outdated(stored)
            if not ok:
                if outdated:  # a cheaper old hash failed: do the current work all the same
                    await asyncio.to_thread(self._matches, stand_in, password)
                return PasswordCheck(ok=False)
            if not outdated:
                return PasswordCheck(ok=True)
            return PasswordCheck(
                ok=True, rehash=await asyncio.to_thread(self._hasher.hash, password)
            )

    def _outdated(self, stored: str) -> bool:
        """Whether ``stored`` was made with other parameters (a malformed hash counts)."""
        from argon2.exceptions import InvalidHashError

        try:
            return bool(self._hasher.check_needs_rehash(stored))
        except (InvalidHashError, ValueError):
            return True

    def _matches(self, stored: str, password: str) -> bool:
        from argon2.exceptions import InvalidHashError, VerificationError

        try:
            return bool(self._hasher.verify(stored, password))
        except (VerificationError, InvalidHashError, ValueError):
            return False

    async def prepare(self) -> None:
        """Make the stand-in hash now (:class:`~hubbub.auth.users.Users` calls this before
        every check, whoever logs in), so that not even the first unknown user's login takes
        longer than a known one's."""
        await self._stand_in()

    async def _stand_in(self) -> str:
        """The hash an unknown user's password is checked against: made once, with the
        current parameters, of a password nobody knows."""
        if self._dummy is None:
            async with self._slots:
                dummy = await asyncio.to_thread(self._hasher.hash, secrets.token_urlsafe(32))
            self._dummy = self._dummy or dummy
        return self._dummy
