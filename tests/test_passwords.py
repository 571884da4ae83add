"""Passwords: argon2id with the configured parameters, checked off the event loop, the same
work for unknown users, rehashed when the parameters change, and a length policy."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from hubbub.auth.passwords import Passwords
from hubbub.config import PasswordsConfig
from hubbub.errors import InvalidRequestError

FAST = PasswordsConfig(time_cost=1, memory_cost=8, min_length=8)
"""Cheap parameters (DESIGN.md): the tests check behaviour, not strength."""
SECRET = "correct horse battery staple"


class Counting:
    """Wraps a hasher and counts the argon2 verifications it runs."""

    def __init__(self, hasher: Any) -> None:
        self.hasher = hasher
        self.verified = 0

    def verify(self, stored: str, password: str) -> bool:
        self.verified += 1
        return bool(self.hasher.verify(stored, password))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.hasher, name)


async def test_a_password_matches_its_hash_and_nothing_else() -> None:
    passwords = Passwords(FAST)
    stored = await passwords.hash(SECRET)
    assert stored.startswith("$argon2id$v=19$m=8,t=1,p=1$")
    assert SECRET not in stored
    assert (await passwords.verify(stored, SECRET)).ok
    assert not (await passwords.verify(stored, SECRET + " ")).ok
    assert not (await passwords.verify(stored, "")).ok
    assert not (await passwords.verify("not a hash", SECRET)).ok
    assert await passwords.hash(SECRET) != stored  # salted


async def test_an_unknown_user_costs_the_same_verification() -> None:
    passwords = Passwords(FAST)
    counting = Counting(passwords._hasher)
    passwords._hasher = counting  # type: ignore[assignment]
    await passwords.prepare()
    stored = await passwords.hash(SECRET)
    assert not (await passwords.verify(stored, "wrong password")).ok
    known = counting.verified
    assert not (await passwords.verify(None, "wrong password")).ok
    assert not (await passwords.verify(None, SECRET)).ok
    assert counting.verified == known + 2  # one argon2 verification each, like a known user


async def test_changed_parameters_hand_back_a_new_hash() -> None:
    old = await Passwords(FAST).hash(SECRET)
    stronger = Passwords(PasswordsConfig(time_cost=2, memory_cost=16, min_length=8))
    check = await stronger.verify(old, SECRET)
    assert check.ok
    assert check.rehash is not None
    assert check.rehash.startswith("$argon2id$v=19$m=16,t=2,p=1$")
    assert (await stronger.verify(check.rehash, SECRET)) == type(check)(ok=True)
    assert (await stronger.verify(old, "wrong password")).rehash is None


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("short", "at least 8 characters"),
        ("        ", "must not be empty"),
        ("x" * 1025, "at most 1024 characters"),
    ],
)
async def test_the_length_policy(password: str, message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message) as caught:
        await Passwords(FAST).hash(password)
    assert caught.value.field == "password"


async def test_an_overlong_password_is_refused_without_hashing() -> None:
    passwords = Passwords(FAST)
    counting = Counting(passwords._hasher)
    passwords._hasher = counting  # type: ignore[assignment]
    stored = await passwords.hash(SECRET)
    assert not (await passwords.verify(stored, "x" * 1_000_000)).ok
    assert counting.verified == 0


async def test_hashing_leaves_the_event_loop_free() -> None:
    # the default parameters (64 MiB, 3 passes): tens of milliseconds of work per hash
    passwords = Passwords(PasswordsConfig())
    ticks = 0
    done = asyncio.Event()

    async def tick() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0.001)

    ticker = asyncio.create_task(tick())
    await asyncio.gather(*(passwords.hash(SECRET) for _ in range(2)))
    done.set()
    await ticker
    assert ticks >= 5  # the loop ran while the hashes were computed


async def test_at_most_concurrency_hashes_run_at_once() -> None:
    passwords = Passwords(PasswordsConfig(time_cost=1, memory_cost=8, concurrency=2))
    running = peak = 0
    hasher = passwords._hasher

    class Peak:
        def hash(self, password: str) -> str:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            try:
                time.sleep(0.02)  # long enough for the others to pile up, were they let in
                return str(hasher.hash(password))
            finally:
                running -= 1

        def __getattr__(self, name: str) -> Any:
            return getattr(hasher, name)

    passwords._hasher = Peak()  # type: ignore[assignment]
    await asyncio.gather(*(passwords.hash(SECRET) for _ in range(8)))
    assert peak == 2


async def test_a_hash_of_older_parameters_costs_a_wrong_password_the_current_work(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An account whose hash predates a cost increase must not answer a wrong password faster
    than an unknown account does (that would tell which accounts exist): the failed check is
    followed by one at the current parameters."""
    old_hash = await Passwords(PasswordsConfig(time_cost=1, memory_cost=8)).hash(SECRET)
    passwords = Passwords(PasswordsConfig(time_cost=2, memory_cost=16))
    await passwords.prepare()
    checked: list[str] = []
    matches = passwords._matches

    def counting(stored: str, password: str) -> bool:
        checked.append(stored)
        return matches(stored, password)

    monkeypatch.setattr(passwords, "_matches", counting)
    assert not (await passwords.verify(old_hash, "wrong password")).ok
    assert checked == [old_hash, await passwords._stand_in()]  # the current work done too
    checked.clear()
    assert (await passwords.verify(old_hash, SECRET)).rehash is not None  # right: rehashed
    assert checked == [old_hash]
