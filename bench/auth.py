"""Issue 18's authentication benchmark: token verification, password hashing, session checks.

* **access-token verification per second** on one core (this process, one thread), for EdDSA,
  RS256 and HS256 keyrings: a token's first verification (every check) and a token verified
  again (remembered: expiry and key checked, no signature), against the baseline of PyJWT's own
  ``jwt.decode`` of the same token with the same key, measured in the same run (target: over
  20,000 verifications a second: clients send the same token for its lifetime);

* **argon2id hash and verify time** at the configured ``[passwords]`` parameters (the defaults
  unless ``--config`` names a file), as :class:`hubbub.auth.passwords.Passwords` runs them (on a
  worker thread), one at a time and ``--concurrency`` at once (default 4, the default
  ``[passwords] concurrency``); the baseline, measured in the same run, is the cheapest argon2id
  hashing (``time_cost = 1``, ``memory_cost = 8`` KiB), so the ratio is what the parameters buy.

* **session check cost**: what checking an access token's session adds to verifying the
  token, with the session trusted for ``check_interval`` (1 s) and read from the account store
  every time, for the ``sqlite`` and ``redis`` account stores (a real ``redis-server`` on a free
  loopback port); baseline: the keyring's verification alone of the same token.

* **API key verification per second**: a key's first verification (the account store read by
  the digest of its secret) and a key verified again (remembered for ``check_interval``, by the
  whole key), for the ``sqlite`` and ``redis`` account stores, and with the per-key request
  limit on (one cache increment a request).

Client and nothing else share this 2-core machine: the figures are per hash, not per core.

    .venv/bin/python bench/auth.py [--config hubbub.toml] [--rounds 20] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import statistics
import time
from pathlib import Path
from typing import Any

import jwt

from hubbub.auth.passwords import Passwords
from hubbub.auth.tokens import Algorithm, Keyring
from hubbub.config import PasswordsConfig, load_config

SECRET = "correct horse battery staple"


async def _timed(passwords: Passwords, rounds: int, concurrency: int) -> tuple[float, float, float]:
    """Median ms of a hash and of a verification one at a time; hashes/s ``concurrency`` at
    once."""
    stored = await passwords.hash(SECRET)
    hashes, verifies = [], []
    for _ in range(rounds):
        began = time.perf_counter()
        await passwords.hash(SECRET)
        hashes.append((time.perf_counter() - began) * 1000)
        began = time.perf_counter()
        await passwords.verify(stored, SECRET)
        verifies.append((time.perf_counter() - began) * 1000)
    began = time.perf_counter()
    await asyncio.gather(*(passwords.hash(SECRET) for _ in range(rounds)))
    rate = rounds / (time.perf_counter() - began)
    return statistics.median(hashes), statistics.median(verifies), rate


def _per_second(call: object, seconds: float = 1.0) -> float:
    count, began = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - began) < seconds:
        for _ in range(100):
            call()  # type: ignore[operator]
        count += 100
    return count / elapsed


def tokens() -> None:
    print("access-token verification, one core (baseline: PyJWT's decode of the same token)")
    algorithms: tuple[Algorithm, ...] = ("EdDSA", "RS256", "HS256")
    for algorithm in algorithms:
        keyring = Keyring.generate(algorithm)
        token = keyring.issue(subject="alice", session_id="ses_1", issuer="i", audience="a")
        key = keyring.signing.verifier

        def raw(token: str = token, key: object = key, algorithm: str = algorithm) -> None:
            jwt.decode(token, key, algorithms=[algorithm], audience="a", issuer="i")

        def first(token: str = token, keyring: Keyring = keyring) -> None:
            keyring._verify(token, "i", "a", 30.0, time.time())  # every check, every time

        def again(token: str = token, keyring: Keyring = keyring) -> None:
            keyring.verify(token, issuer="i", audience="a")  # remembered after the first

        base, fresh, known = _per_second(raw), _per_second(first), _per_second(again)
        verdict = "met" if known > 20_000 else "MISSED"
        print(
            f"  {algorithm:6} first verification {fresh:9,.0f}/s (x{fresh / base:.2f}), "
            f"again {known:11,.0f}/s; PyJWT decode {base:9,.0f}/s  "
            f"(target > 20,000/s: {verdict})"
        )


def _toml(home: str, interval: float, extra: str) -> str:
    """A configuration for one case: cheap passwords, sessions trusted ``interval`` seconds,
    a keyring of its own (an account store other than sqlite needs one configured)."""
    from hubbub.auth.keyfiles import write_keyring

    keys = Path(home) / "keys.json"
    write_keyring(keys, Keyring.generate())
    return (
        "[passwords]\ntime_cost = 1\nmemory_cost = 8\n"
        f'[sessions]\ncheck_interval = {interval}\nsigning_keys = "{keys}"\n{extra}'
    )


async def _checks_per_second(toml: str, home: str, seconds: float = 1.0) -> tuple[float, float]:
    """Session checks a second through ``SessionManager.authenticate`` of one token, and the
    remembered keyring verification alone of the same token (the baseline), in one runtime."""
    from hubbub.testing import config_for, runtime_for

    async with runtime_for(config_for(Path(home), toml)) as runtime:
        name = f"bench-{time.monotonic_ns()}"  # a Redis store outlives the runtime
        await runtime.users.add(name, SECRET)
        tokens = await runtime.logins.password(name, SECRET)
        sessions, token = runtime.sessions, tokens.access_token
        config = runtime.config.sessions

        async def rate(call: Any) -> float:
            count, began = 0, time.perf_counter()
            while time.perf_counter() - began < seconds:
                for _ in range(100):
                    await call()
                count += 100
            return count / (time.perf_counter() - began)

        async def baseline() -> None:
            sessions.keyring.verify(token, issuer=config.issuer, audience=config.audience)

        async def check() -> None:
            await sessions.authenticate(token)

        await check()
        return await rate(check), await rate(baseline)


async def session_checks() -> None:
    """How much checking the session adds to an access token, per account store."""
    import tempfile

    print(
        "session check per request (SessionManager.authenticate of one access token), one core; "
        "baseline: the keyring's verification alone, same token, same run "
        "(client and redis-server share this 2-core machine)"
    )
    cases = [
        ("sqlite, trusted 1 s (check_interval 1)", 1.0, ""),
        ("sqlite, read every time (check_interval 0)", 0.0, ""),
    ]
    with contextlib.ExitStack() as stack:
        try:
            from cache import redis_server

            server = stack.enter_context(redis_server())
            redis = f'[redis]\nurl = "{server.url}"\n[accounts]\nbackend = "redis"\n'
            cases += [
                ("redis, trusted 1 s (check_interval 1)", 1.0, redis),
                ("redis, read every time (check_interval 0)", 0.0, redis),
            ]
        except SystemExit as exc:
            print(f"  (no Redis figures: {exc})")
        for name, interval, extra in cases:
            with tempfile.TemporaryDirectory() as home:
                try:
                    checks, base = await _checks_per_second(_toml(home, interval, extra), home)
                except Exception as exc:  # an account store that is not there yet
                    print(f"  {name:44} unavailable: {exc}")
                    continue
            print(
                f"  {name:44} {checks:>9,.0f}/s ({1e6 / checks:6.1f} us)  "
                f"baseline {base:>9,.0f}/s  ratio {checks / base:5.2f}"
            )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=None)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    configured = load_config(path=args.config).passwords if args.config else PasswordsConfig()
    configured = PasswordsConfig(
        **{**_fields(configured), "concurrency": args.concurrency, "min_length": 8}
    )
    baseline = PasswordsConfig(time_cost=1, memory_cost=8, concurrency=args.concurrency)
    print(
        f"argon2id, {args.rounds} rounds (client alone on this 2-core machine; compare the ratio)"
    )
    base = await _timed(Passwords(baseline), args.rounds, args.concurrency)
    real = await _timed(Passwords(configured), args.rounds, args.concurrency)
    for name, config, (hashed, verified, rate) in (
        ("baseline t=1 m=8KiB", baseline, base),
        (
            f"configured t={configured.time_cost} m={configured.memory_cost}KiB "
            f"p={configured.parallelism}",
            configured,
            real,
        ),
    ):
        print(
            f"  {name:34} hash {hashed:7.2f} ms  verify {verified:7.2f} ms  "
            f"{rate:8.1f} hashes/s at {config.concurrency} at once"
        )
    print(f"  configured / baseline hash time: x{real[0] / max(base[0], 1e-6):.0f}")
    await session_checks()
    await api_key_checks()


def _fields(config: PasswordsConfig) -> dict[str, object]:
    return {name: getattr(config, name) for name in config.__struct_fields__}


# -- API keys (issue 18, scope 5): verification of an hbk_ key against the account store ----


async def _key_checks_per_second(toml: str, home: str, seconds: float = 1.0) -> float:
    """``ApiKeys.verify`` of one key a second, in one runtime (the key made first)."""
    from hubbub.testing import config_for, runtime_for

    async with runtime_for(config_for(Path(home), toml)) as runtime:
        keys = runtime.api_keys
        _, key = await keys.create(f"bench-{time.monotonic_ns()}")
        await keys.verify(key)
        count, began = 0, time.perf_counter()
        while time.perf_counter() - began < seconds:
            for _ in range(100):
                await keys.verify(key)
            count += 100
        return count / (time.perf_counter() - began)


async def api_key_checks() -> None:
    """API key verification a second: the first (the account store read by the digest of the
    secret: ``check_interval = 0`` makes every check one) and repeated (remembered for
    ``check_interval``, by the whole key), per account store; and with the per-key request
    limit on (one cache increment a request)."""
    import tempfile

    print(
        "API key verification (ApiKeys.verify of one key), one core "
        "(client and redis-server share this 2-core machine)"
    )
    cases = [
        ("sqlite, first (read every time)", 0.0, ""),
        ("sqlite, repeated (trusted 1 s)", 1.0, ""),
        (
            "sqlite, repeated, limit on (memory cache)",
            1.0,
            "[auth]\nrequests_per_minute_per_key = 1000000\n",
        ),
    ]
    with contextlib.ExitStack() as stack:
        try:
            from cache import redis_server

            server = stack.enter_context(redis_server())
            redis = f'[redis]\nurl = "{server.url}"\n[accounts]\nbackend = "redis"\n'
            cases += [
                ("redis, first (read every time)", 0.0, redis),
                ("redis, repeated (trusted 1 s)", 1.0, redis),
                (
                    "redis, repeated, limit on (redis cache)",
                    1.0,
                    redis + '[cache]\nbackend = "redis"\n'
                    "[auth]\nrequests_per_minute_per_key = 1000000\n",
                ),
            ]
        except SystemExit as exc:
            print(f"  (no Redis figures: {exc})")
        for name, interval, extra in cases:
            with tempfile.TemporaryDirectory() as home:
                try:
                    checks = await _key_checks_per_second(_toml(home, interval, extra), home)
                except Exception as exc:  # an account store that is not there yet
                    print(f"  {name:44} unavailable: {exc}")
                    continue
            print(f"  {name:44} {checks:>9,.0f}/s ({1e6 / checks:7.1f} us)")


if __name__ == "__main__":
    logging.disable(logging.WARNING)
    tokens()
    asyncio.run(main())
