"""The budget ledgers (``memory`` and ``redis``, the latter against a real ``redis-server``)
keep one contract: reservations all or nothing over several counters, atomic under concurrency,
leases that expire, exact decimal costs, settle and release."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis
from redis_support import RedisServer, asleep

from hubbub import hookimpl
from hubbub.budgets import counter
from hubbub.budgets.money import from_nanos, to_nanos
from hubbub.config.schema import BudgetConfig
from hubbub.contracts import BudgetCounter, BudgetLedger, BudgetRefusal, BudgetReservation
from hubbub.errors import ComponentError, ConfigError
from hubbub.kinds import kinds_by_name
from hubbub.models import ChatRequest, Message
from hubbub.registry import Registrar
from hubbub.testing import FakeLLM, config_for, reply, runtime_for
from hubbub_plugins.memory_ledger import MemoryLedger

NOW = time.time()  # counters of the current periods (ledgers drop past ones)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def limited(key: str, tokens: int | None = None, cost: str | None = None) -> BudgetCounter:
    budget = BudgetConfig(tokens=tokens, cost=None if cost is None else Decimal(cost))
    return counter("user", key, "day", NOW, budget)


@pytest.fixture(params=["memory", "redis"])
async def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BudgetLedger]:
    if request.param == "memory":
        memory = MemoryLedger()
        await memory.start()
        yield memory
        await memory.aclose()
        return
    server = RedisServer(tmp_path / "redis").start()
    try:
        toml = f'[redis]\nurl = "{server.url}"\n[budgets]\nbackend = "redis"\n'
        config = config_for(tmp_path / "home", toml)
        async with runtime_for(config) as runtime:
            yield runtime.components("budget_ledger")["redis"]
    finally:
        server.stop()


async def test_reserve_is_all_or_nothing_over_counters(ledger: BudgetLedger) -> None:
    roomy, tight = limited("roomy", tokens=1000), limited("tight", tokens=100)
    first = await ledger.reserve([roomy, tight], 80, Decimal(0), 60)
    assert isinstance(first, BudgetReservation)
    refused = await ledger.reserve([roomy, tight], 30, Decimal(0), 60)
    assert isinstance(refused, BudgetRefusal)
    assert (refused.counter.key, refused.unit, refused.used, refused.limit) == (
        tight.key,
        "tokens",
        "80",
        "100",
    )
    # the refusal held nothing in the counter that had room
    [r, t] = await ledger.totals([roomy.key, tight.key])
    assert (r.reserved_tokens, t.reserved_tokens) == (80, 80)


async def test_settle_replaces_the_hold_by_what_was_used(ledger: BudgetLedger) -> None:
    spec = limited("alice", tokens=100, cost="1.00")
    held = await ledger.reserve([spec], 90, Decimal("0.9"), 60)
    assert isinstance(held, BudgetReservation)
    await ledger.settle(held, 25, Decimal("0.000000123"))
    [totals] = await ledger.totals([spec.key])
    assert (totals.tokens, totals.reserved_tokens) == (25, 0)
    assert (totals.cost, totals.reserved_cost) == (Decimal("0.000000123"), 0)
    again = await ledger.reserve([spec], 75, Decimal(0), 60)  # 25 + 75 = 100: fits exactly
    assert isinstance(again, BudgetReservation)
    assert isinstance(await ledger.reserve([spec], 1, Decimal(0), 60), BudgetRefusal)
    await ledger.release(again)
    [totals] = await ledger.totals([spec.key])
    assert (totals.tokens, totals.reserved_tokens) == (25, 0)


async def test_costs_add_up_exactly(ledger: BudgetLedger) -> None:
    spec = limited("bob", cost="0.3")
    for _ in range(3):
        held = await ledger.reserve([spec], 0, Decimal("0.1"), 60)
        assert isinstance(held, BudgetReservation)
        await ledger.settle(held, 0, Decimal("0.1"))
    [totals] = await ledger.totals([spec.key])
    assert totals.cost == Decimal("0.3")  # 0.1 + 0.1 + 0.1 as floats is 0.30000000000000004
    refused = await ledger.reserve([spec], 0, Decimal("0.000000001"), 60)
    assert isinstance(refused, BudgetRefusal)
    assert (refused.unit, Decimal(refused.used), Decimal(refused.limit)) == (
        "cost",
        Decimal("0.3"),
        Decimal("0.3"),
    )


async def test_concurrent_reservations_never_exceed_the_limit(ledger: BudgetLedger) -> None:
    spec = limited("crowd", tokens=1000)
    results = await asyncio.gather(
        *(ledger.reserve([spec], 100, Decimal(0), 60) for _ in range(50))
    )
    granted = [r for r in results if isinstance(r, BudgetReservation)]
    assert len(granted) == 10
    assert len({r.id for r in granted}) == 10
    [totals] = await ledger.totals([spec.key])
    assert totals.reserved_tokens == 1000


async def test_settling_an_expired_lease_still_counts_the_spending(ledger: BudgetLedger) -> None:
    spec = limited("late", tokens=100)
    held = await ledger.reserve([spec], 100, Decimal(0), 0.05)
    assert isinstance(held, BudgetReservation)
    await asyncio.sleep(0.2)  # past the lease
    await ledger.settle(held, 40, Decimal(0))
    [totals] = await ledger.totals([spec.key])
    assert (totals.tokens, totals.reserved_tokens) == (40, 0)


async def test_an_expired_lease_frees_its_reservation(ledger: BudgetLedger) -> None:
    spec = limited("crashed", tokens=100)
    held = await ledger.reserve([spec], 100, Decimal(0), 0.05)  # a process that then crashed
    assert isinstance(held, BudgetReservation)
    assert isinstance(await ledger.reserve([spec], 1, Decimal(0), 60), BudgetRefusal)
    await asyncio.sleep(0.2)
    [totals] = await ledger.totals([spec.key])
    assert totals.reserved_tokens == 0
    assert isinstance(await ledger.reserve([spec], 100, Decimal(0), 60), BudgetReservation)


async def test_memory_ledger_lease_expiry_follows_its_clock() -> None:
    clock = Clock()
    ledger = MemoryLedger(clock)
    spec = limited("clocked", tokens=10)
    assert isinstance(await ledger.reserve([spec], 10, Decimal(0), 30), BudgetReservation)
    clock.now += 29
    assert isinstance(await ledger.reserve([spec], 1, Decimal(0), 30), BudgetRefusal)
    clock.now += 2
    assert isinstance(await ledger.reserve([spec], 10, Decimal(0), 30), BudgetReservation)


async def test_memory_ledger_forgets_counters_of_past_periods() -> None:
    clock = Clock()
    ledger = MemoryLedger(clock)
    spec = limited("yesterday", tokens=10)
    held = await ledger.reserve([spec], 5, Decimal(0), 30)
    assert isinstance(held, BudgetReservation)
    await ledger.settle(held, 5, Decimal(0))
    clock.now = spec.period_end + 1
    await ledger.totals([])
    assert (await ledger.health()).detail.startswith("0 counters")


def test_nanodollars_round_trip_and_round_up() -> None:
    assert to_nanos(Decimal("0.000000123")) == 123
    assert from_nanos(123) == Decimal("0.000000123")
    assert to_nanos(Decimal("0.0000000001")) == 1  # never under-counted
    assert from_nanos(5_000_000_000) == Decimal("5")


class CountingLedgerPlugin:
    """A third-party ledger: the memory ledger under another name, counting its reservations."""

    __name__ = "counting_ledger"

    def __init__(self) -> None:
        self.reserved = 0

    @hookimpl
    def register_budget_ledgers(self, register: Registrar) -> None:
        plugin = self

        class Counting(MemoryLedger):
            async def reserve(self, *args: Any, **kwargs: Any) -> Any:
                plugin.reserved += 1
                return await super().reserve(*args, **kwargs)

        register("counting", lambda context: Counting(), description="counts reservations")


async def test_a_plugin_ledger_is_chosen_by_budgets_backend(tmp_path: Path) -> None:
    plugin = CountingLedgerPlugin()
    fake = FakeLLM(reply("ok"))
    toml = '[budgets]\nbackend = "counting"\n[budgets.user]\ntokens = 10000\n'
    async with runtime_for(config_for(tmp_path, toml), [plugin, fake]) as runtime:
        request = ChatRequest(
            model=fake.model, messages=[Message(role="user", content="hi")], user="alice"
        )
        await runtime.llm.complete(request)
        health = await runtime.health()
    assert plugin.reserved == 1
    assert health.components["budget_ledger"].backend == "counting"


async def test_an_unknown_ledger_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"budgets\.backend") as refused:
        async with runtime_for(config_for(tmp_path, '[budgets]\nbackend = "memroy"\n')):
            pass
    assert "memory" in str(refused.value)  # the closest registered name is suggested


def test_the_default_ledger_follows_the_cache(tmp_path: Path) -> None:
    spec = kinds_by_name()["budget_ledger"]
    assert spec.selected(config_for(tmp_path, ""), ["memory", "redis"]) == ["memory"]
    shared = config_for(tmp_path, '[cache]\nbackend = "redis"\n')
    assert spec.selected(shared, ["memory", "redis"]) == ["redis"]


async def test_counters_past_1e14_are_read_exactly(ledger: BudgetLedger) -> None:
    """Past 10^14 Lua's tostring writes 2e+14: the refusal must still carry the exact figure
    (it was a ValueError, a 500, before)."""
    tokens = 200_000_000_000_001
    cost = Decimal("200000.000000001")  # 2 * 10^14 + 1 nanodollars
    by_tokens = limited("big-tokens", tokens=tokens)
    by_cost = limited("big-cost", cost="300000")
    for spec, count, dollars in ((by_tokens, tokens, Decimal(0)), (by_cost, 0, cost)):
        held = await ledger.reserve([spec], 0, Decimal(0), 60)
        assert isinstance(held, BudgetReservation)
        await ledger.settle(held, count, dollars)
    refused = await ledger.reserve([by_tokens], 1, Decimal(0), 60)
    assert isinstance(refused, BudgetRefusal)
    assert (refused.unit, refused.used) == ("tokens", str(tokens))
    refused = await ledger.reserve([by_cost], 0, Decimal("100000"), 60)
    assert isinstance(refused, BudgetRefusal)
    assert (refused.unit, Decimal(refused.used)) == ("cost", cost)
    [t, c] = await ledger.totals([by_tokens.key, by_cost.key])
    assert (t.tokens, c.cost) == (tokens, cost)


@contextlib.asynccontextmanager
async def sleeping(server: RedisServer, seconds: float) -> AsyncIterator[None]:
    """Redis asleep (``DEBUG SLEEP``) inside the block; awake again after it."""
    sleeper = redis.Redis(port=server.port)
    slept = asyncio.create_task(
        asyncio.to_thread(sleeper.execute_command, "DEBUG", "SLEEP", seconds)
    )
    while not asleep(server):
        assert not slept.done(), "DEBUG SLEEP returned before Redis was seen asleep"
        await asyncio.sleep(0.02)
    try:
        yield
    finally:
        await slept
        sleeper.close()


async def holds_nothing_soon(ledger: BudgetLedger, key: str) -> bool:
    """Whether the counter soon holds nothing (within 15 s: a release may be retrying) and
    then keeps holding nothing for a second (the scripts Redis had waiting have run)."""
    deadline = time.monotonic() + 15
    while (await ledger.totals([key]))[0].reserved_tokens:
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.1)
    for _ in range(5):
        await asyncio.sleep(0.2)
        if (await ledger.totals([key]))[0].reserved_tokens:
            return False
    return True


async def test_a_reserve_cancelled_mid_flight_holds_nothing(
    tmp_path: Path, debug_redis: RedisServer
) -> None:
    """The caller leaves while Redis has the reserve script waiting: the script runs when Redis
    wakes, and nothing must hold for the lease (10 minutes) that no settlement will end."""
    toml = f'[redis]\nurl = "{debug_redis.url}"\ntimeout = 10\n[budgets]\nbackend = "redis"\n'
    async with runtime_for(config_for(tmp_path / "home", toml)) as runtime:
        ledger: BudgetLedger = runtime.components("budget_ledger")["redis"]
        spec = limited("left-mid-flight", tokens=100)
        warm = await ledger.reserve([spec], 1, Decimal(0), 600)  # the scripts are loaded
        assert isinstance(warm, BudgetReservation)
        await ledger.release(warm)
        async with sleeping(debug_redis, 1.5):
            attempt = asyncio.create_task(ledger.reserve([spec], 100, Decimal(0), 600))
            await asyncio.sleep(0.2)  # sent: Redis has it, asleep
            assert not attempt.done()
            attempt.cancel()
            with pytest.raises(asyncio.CancelledError):
                await attempt
        assert await holds_nothing_soon(ledger, spec.key)
        whole = await ledger.reserve([spec], 100, Decimal(0), 600)
        assert isinstance(whole, BudgetReservation)  # the whole budget is free


async def test_a_reserve_the_redis_client_retried_holds_once(
    tmp_path: Path, debug_redis: RedisServer
) -> None:
    """Redis answers slower than ``[redis] timeout``: the Redis client sends the script again
    on a new connection, and each copy runs once Redis wakes. The reservation must hold once
    (its release then frees it all), or, if every try timed out, not at all."""
    toml = f'[redis]\nurl = "{debug_redis.url}"\ntimeout = 0.3\n[budgets]\nbackend = "redis"\n'
    async with runtime_for(config_for(tmp_path / "home", toml)) as runtime:
        ledger: BudgetLedger = runtime.components("budget_ledger")["redis"]
        spec = limited("retried", tokens=1000)
        warm = await ledger.reserve([spec], 1, Decimal(0), 600)
        assert isinstance(warm, BudgetReservation)
        await ledger.release(warm)
        async with sleeping(debug_redis, 1.5):
            try:
                held = await ledger.reserve([spec], 100, Decimal(0), 600)
            except ComponentError:
                held = None
        if held is not None:
            assert isinstance(held, BudgetReservation)
            [totals] = await ledger.totals([spec.key])
            assert totals.reserved_tokens == 100  # once, however many times the script ran
            await ledger.release(held)
        assert await holds_nothing_soon(ledger, spec.key)


async def test_settling_twice_counts_once(tmp_path: Path) -> None:
    """A settle script run again (the Redis client retrying it) counts nothing more."""
    server = RedisServer(tmp_path / "redis").start()
    try:
        toml = f'[redis]\nurl = "{server.url}"\n[budgets]\nbackend = "redis"\n'
        async with runtime_for(config_for(tmp_path / "home", toml)) as runtime:
            ledger: BudgetLedger = runtime.components("budget_ledger")["redis"]
            spec = limited("twice", tokens=1000)
            held = await ledger.reserve([spec], 100, Decimal("0.1"), 600)
            assert isinstance(held, BudgetReservation)
            await ledger.settle(held, 40, Decimal("0.04"))
            await ledger.settle(held, 40, Decimal("0.04"))
            await ledger.release(held)
            [totals] = await ledger.totals([spec.key])
    finally:
        server.stop()
    assert (totals.tokens, totals.cost, totals.reserved_tokens) == (40, Decimal("0.04"), 0)
