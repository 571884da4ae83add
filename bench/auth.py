"""Issue 18's authentication benchmark (so far: password hashing and token verification).

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

Client and nothing else share this 2-core machine: the figures are per hash, not per core.

    .venv/bin/python bench/auth.py [--config hubbub.toml] [--rounds 20] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

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


def _fields(config: PasswordsConfig) -> dict[str, object]:
    return {name: getattr(config, name) for name in config.__struct_fields__}


if __name__ == "__main__":
    tokens()
    asyncio.run(main())
