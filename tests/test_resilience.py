"""Timeouts, retries and circuit breakers (``hubbub.resilience``).

Nothing here measures wall-clock time: clocks, sleeps and randomness are injected.
"""

from __future__ import annotations

import ast
import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msgspec
import pytest

from hubbub.errors import HubbubError, InvalidRequestError, NotFoundError, ProviderError
from hubbub.models import Health
from hubbub.resilience import (
    BreakerState,
    CallTimeoutError,
    CircuitBreaker,
    CircuitOpenError,
    RetryPolicy,
    call_with_timeout,
    deadline,
    is_retryable,
    is_service_failure,
    parse_retry_after,
    retry,
    retry_after_of,
)

ROOT = Path(__file__).resolve().parent.parent


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Sleeps:
    """An injected ``sleep`` that records the waits instead of waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def failing(
    *errors: BaseException, result: str = "done"
) -> tuple[Callable[[], Awaitable[str]], list[int]]:
    """A coroutine function raising ``errors`` one per call, then returning ``result``; and
    the list its calls are counted in."""
    calls: list[int] = []

    async def func() -> str:
        calls.append(1)
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]
        return result

    return func, calls


async def never() -> None:
    await asyncio.Event().wait()


# -- layering --------------------------------------------------------------------------------


def test_imports_only_the_standard_library_msgspec_errors_and_models() -> None:
    tree = ast.parse((ROOT / "framework" / "hubbub" / "resilience.py").read_text())
    modules = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    hubbub = {m for m in modules if m.split(".")[0] == "hubbub"}
    assert hubbub == {"hubbub.errors", "hubbub.models"}
    assert "msgspec" in modules


# -- timeouts --------------------------------------------------------------------------------


async def test_timeout_raises_a_timeout_error_naming_what_and_the_limit() -> None:
    with pytest.raises(CallTimeoutError) as caught:
        await call_with_timeout(never, timeout=0.01, what="GET /v1/models")
    error = caught.value
    assert isinstance(error, TimeoutError)
    assert isinstance(error, HubbubError)
    assert (error.status, error.code) == (504, "timeout")
    assert str(error) == "GET /v1/models timed out after 0.01 s"
    assert (error.what, error.timeout) == ("GET /v1/models", 0.01)


async def test_timeout_cancels_the_call() -> None:
    cancelled = asyncio.Event()

    async def slow() -> None:
        try:
            await never()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with pytest.raises(TimeoutError):
        await call_with_timeout(slow, timeout=0.01)
    assert cancelled.is_set()


async def test_no_timeout_passes_the_result_through() -> None:
    async def answer() -> int:
        await asyncio.sleep(0)
        return 42

    assert await call_with_timeout(answer, timeout=None) == 42
    assert await call_with_timeout(answer, timeout=60) == 42


async def test_the_calls_own_timeout_error_passes_through_unchanged() -> None:
    own = TimeoutError("upstream said so")

    async def fails() -> None:
        raise own

    with pytest.raises(TimeoutError) as caught:
        await call_with_timeout(fails, timeout=60)
    assert caught.value is own


async def test_deadline_bounds_a_block() -> None:
    chunks: list[str] = []

    async def stream() -> None:
        async with deadline(0.01, what="stream"):
            chunks.append("first")
            await never()

    with pytest.raises(CallTimeoutError, match=r"^stream timed out after 0\.01 s$"):
        await stream()
    assert chunks == ["first"]


async def test_deadline_without_limit_or_expiry_is_transparent() -> None:
    async with deadline(None, what="stream"):
        await asyncio.sleep(0)
    async with deadline(60):
        await asyncio.sleep(0)
    with pytest.raises(ValueError, match="inside"):
        async with deadline(60):
            raise ValueError("inside")


# -- retry policy ----------------------------------------------------------------------------


def test_schedule_is_exponential_and_capped() -> None:
    policy = RetryPolicy(attempts=6, base_delay=1, multiplier=2, max_delay=5, jitter=False)
    assert policy.delays() == [1, 2, 4, 5, 5]
    assert [policy.delay_for(n) for n in (1, 2, 3)] == [1, 2, 4]
    assert RetryPolicy(attempts=1).delays() == []


def test_defaults() -> None:
    policy = RetryPolicy()
    assert (policy.attempts, policy.base_delay, policy.max_delay) == (3, 0.1, 10)
    assert (policy.multiplier, policy.jitter, policy.max_retry_after) == (2, True, 60)


@pytest.mark.parametrize("rnd", [0.0, 0.25, 0.5, 0.999999])
def test_full_jitter_scales_the_capped_delay(rnd: float) -> None:
    policy = RetryPolicy(attempts=6, base_delay=1, multiplier=2, max_delay=5)
    caps = [1, 2, 4, 5, 5]
    delays = policy.delays(random=lambda: rnd)
    assert delays == pytest.approx([cap * rnd for cap in caps])
    assert all(0 <= d <= cap for d, cap in zip(delays, caps, strict=True))


def test_jitter_without_injected_randomness_stays_within_the_cap() -> None:
    policy = RetryPolicy(attempts=50, base_delay=0.5, max_delay=3)
    assert all(0 <= delay <= 3 for delay in policy.delays())


def test_huge_attempt_numbers_do_not_overflow() -> None:
    policy = RetryPolicy(base_delay=1, max_delay=7, jitter=False)
    assert policy.delay_for(100_000) == 7


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("attempts", 0),
        ("base_delay", -1),
        ("max_delay", -0.5),
        ("multiplier", 0.5),
        ("max_retry_after", -1),
    ],
)
def test_policy_ranges_are_checked_on_construction_and_decoding(field: str, value: Any) -> None:
    with pytest.raises(ValueError, match=field):
        RetryPolicy(**{field: value})
    with pytest.raises(msgspec.ValidationError, match=field):
        msgspec.convert({field: value}, RetryPolicy)


def test_policy_decodes_from_config_and_is_frozen() -> None:
    policy = msgspec.convert({"attempts": 5, "jitter": False}, RetryPolicy)
    assert policy == RetryPolicy(attempts=5, jitter=False)
    with pytest.raises(AttributeError):
        policy.attempts = 2  # type: ignore[misc]


def test_delay_for_rejects_attempt_zero() -> None:
    with pytest.raises(ValueError, match="attempt"):
        RetryPolicy().delay_for(0)


# -- retry -----------------------------------------------------------------------------------


async def test_retries_then_succeeds_waiting_the_schedule(caplog: pytest.LogCaptureFixture) -> None:
    func, calls = failing(ConnectionError("refused"), TimeoutError())
    sleeps = Sleeps()
    policy = RetryPolicy(attempts=3, base_delay=1, multiplier=3)
    with caplog.at_level(logging.WARNING, logger="hubbub.resilience"):
        result = await retry(func, policy, what="redis GET", sleep=sleeps, random=lambda: 0.5)
    assert result == "done"
    assert len(calls) == 3
    assert sleeps.waits == [0.5, 1.5]
    records = [r for r in caplog.records if r.name == "hubbub.resilience"]
    assert [r.levelno for r in records] == [logging.WARNING] * 2
    assert [r.getMessage() for r in records] == [
        "redis GET failed (ConnectionError: refused); retrying in 0.50 s (try 2 of 3)",
        "redis GET failed (TimeoutError); retrying in 1.50 s (try 3 of 3)",
    ]
    assert [(r.what, r.attempt, r.delay) for r in records] == [  # type: ignore[attr-defined]
        ("redis GET", 1, 0.5),
        ("redis GET", 2, 1.5),
    ]


async def test_gives_up_after_the_attempts_re_raising_the_last_error() -> None:
    errors = [ConnectionError("one"), ConnectionError("two"), ConnectionError("three")]
    func, calls = failing(*errors)
    sleeps = Sleeps()
    with pytest.raises(ConnectionError) as caught:
        await retry(func, RetryPolicy(attempts=3), what="x", sleep=sleeps)
    assert caught.value is errors[2]
    assert len(calls) == 3
    assert len(sleeps.waits) == 2


async def test_one_attempt_never_retries() -> None:
    func, calls = failing(ConnectionError())
    with pytest.raises(ConnectionError):
        await retry(func, RetryPolicy(attempts=1), what="x", sleep=Sleeps())
    assert len(calls) == 1


@pytest.mark.parametrize(
    "error",
    [NotFoundError("no such thing"), InvalidRequestError("bad"), ValueError("bug")],
    ids=lambda e: type(e).__name__,
)
async def test_client_errors_and_bugs_are_not_retried(error: Exception) -> None:
    func, calls = failing(error)
    sleeps = Sleeps()
    with pytest.raises(type(error)) as caught:
        await retry(func, RetryPolicy(attempts=5), what="x", sleep=sleeps)
    assert caught.value is error
    assert (len(calls), sleeps.waits) == (1, [])


async def test_cancellation_is_never_retried() -> None:
    func, calls = failing(asyncio.CancelledError())
    with pytest.raises(asyncio.CancelledError):
        await retry(
            func, RetryPolicy(attempts=5), what="x", retry_on=lambda _: True, sleep=Sleeps()
        )
    assert len(calls) == 1


async def test_a_custom_predicate_decides() -> None:
    func, calls = failing(ValueError("flaky"))
    result = await retry(
        func,
        RetryPolicy(attempts=2),
        what="x",
        retry_on=lambda e: isinstance(e, ValueError),
        sleep=Sleeps(),
    )
    assert (result, len(calls)) == ("done", 2)


class Flaky(Exception):
    retryable = True


class NotAgain(ConnectionError):
    retryable = False


class Overloaded(HubbubError):
    status = 429
    retryable = True


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (TimeoutError(), True),
        (ConnectionResetError(), True),
        (OSError("network unreachable"), True),
        (CallTimeoutError("x", 1), True),
        (Flaky(), True),
        (Overloaded(), True),  # an explicit ``retryable`` wins over the status
        (NotAgain(), False),
        (NotFoundError("x"), False),
        (ProviderError("x"), False),
        (CircuitOpenError("redis", 3), False),
        (ValueError(), False),
        (asyncio.CancelledError(), False),
        (KeyboardInterrupt(), False),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_what_is_retryable(error: BaseException, expected: bool) -> None:
    assert is_retryable(error) is expected


class RateLimited(Exception):
    """Like an HTTP client's error: the response, with its headers, hangs off it."""

    retryable = True

    def __init__(self, headers: dict[str, str]) -> None:
        super().__init__("429 Too Many Requests")
        self.response = SimpleNamespace(headers=headers)


class WithHeaders(ConnectionError):
    def __init__(self, headers: dict[str, str]) -> None:
        super().__init__("busy")
        self.headers = headers


class WithAttribute(ConnectionError):
    def __init__(self, retry_after: object) -> None:
        super().__init__("busy")
        self.retry_after = retry_after


NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (WithAttribute(2.5), 2.5),
        (WithAttribute("4"), 4.0),
        (RateLimited({"retry-after": "7"}), 7.0),
        (WithHeaders({"Retry-After": "3"}), 3.0),
        (
            RateLimited({"retry-after": format_datetime(NOW + timedelta(seconds=30), usegmt=True)}),
            30.0,
        ),
        (
            RateLimited({"retry-after": format_datetime(NOW - timedelta(seconds=30), usegmt=True)}),
            0.0,
        ),
        (RateLimited({"retry-after": "soon"}), None),
        (RateLimited({"retry-after": "-5"}), None),
        (RateLimited({}), None),
        (WithAttribute(None), None),
        (ConnectionError(), None),
    ],
)
def test_retry_after_is_read_from_the_error(error: BaseException, expected: float | None) -> None:
    assert retry_after_of(error, now=NOW.timestamp()) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (5, 5.0),
        (0, 0.0),
        (b"12", 12.0),
        (" 1.5 ", 1.5),
        ("Thu, 02 Jan 2025 03:05:05 GMT", 60.0),
        ("Thu, 02 Jan 2025 03:05:05 -0000", 60.0),  # no zone: taken as UTC
        (float("inf"), None),
        (True, None),
        ([], None),
        ("", None),
    ],
)
def test_retry_after_formats(value: object, expected: float | None) -> None:
    assert parse_retry_after(value, now=NOW.timestamp()) == expected


async def test_retry_waits_what_the_server_asks_in_seconds(
    caplog: pytest.LogCaptureFixture,
) -> None:
    func, _ = failing(RateLimited({"retry-after": "7"}), WithAttribute(2.5))
    sleeps = Sleeps()
    with caplog.at_level(logging.WARNING, logger="hubbub.resilience"):
        assert await retry(func, RetryPolicy(attempts=3), what="chat", sleep=sleeps) == "done"
    assert sleeps.waits == [7.0, 2.5]
    assert "as the server asked" in caplog.records[0].getMessage()


async def test_retry_waits_until_the_servers_http_date() -> None:
    when = format_datetime(NOW + timedelta(seconds=42), usegmt=True)
    func, _ = failing(RateLimited({"retry-after": when}))
    sleeps = Sleeps()
    await retry(func, RetryPolicy(), what="chat", sleep=sleeps, now=NOW.timestamp)
    assert sleeps.waits == [42.0]


async def test_retry_gives_up_when_the_server_asks_too_much(
    caplog: pytest.LogCaptureFixture,
) -> None:
    error = RateLimited({"retry-after": "120"})
    func, calls = failing(error)
    sleeps = Sleeps()
    with (
        caplog.at_level(logging.WARNING, logger="hubbub.resilience"),
        pytest.raises(RateLimited) as caught,
    ):
        await retry(func, RetryPolicy(attempts=5, max_retry_after=60), what="chat", sleep=sleeps)
    assert caught.value is error
    assert (len(calls), sleeps.waits) == (1, [])
    assert "asked to wait 120.0 s, more than max_retry_after (60 s)" in caplog.text


async def test_retry_with_a_timeout_per_try() -> None:
    tries: list[int] = []

    async def slow_then_fast() -> str:
        tries.append(1)
        if len(tries) == 1:
            await never()
        return "fast"

    result = await retry(
        lambda: call_with_timeout(slow_then_fast, timeout=0.01, what="probe"),
        RetryPolicy(attempts=2),
        what="probe",
        sleep=Sleeps(),
    )
    assert (result, len(tries)) == ("fast", 2)


# -- circuit breaker -------------------------------------------------------------------------


def make_breaker(
    clock: FakeClock, changes: list[tuple[BreakerState, BreakerState]] | None = None, **options: Any
) -> CircuitBreaker:
    def on_change(old: BreakerState, new: BreakerState, breaker: CircuitBreaker) -> None:
        assert breaker.state == new
        if changes is not None:
            changes.append((old, new))

    options = {"failure_threshold": 3, "reset_timeout": 30.0, **options}
    return CircuitBreaker("redis", clock=clock, on_change=on_change, **options)


async def fail(breaker: CircuitBreaker, error: Exception | None = None) -> None:
    with pytest.raises(type(error) if error else ConnectionError):
        async with breaker:
            raise error or ConnectionError("refused")


async def succeed(breaker: CircuitBreaker) -> None:
    async with breaker:
        pass


async def test_opens_after_consecutive_failures_and_refuses_calls() -> None:
    clock = FakeClock()
    breaker = make_breaker(clock)
    for count in (1, 2):
        await fail(breaker)
        assert (breaker.state, breaker.failures) == ("closed", count)
    await fail(breaker)
    assert (breaker.state, breaker.failures, breaker.opened_at) == ("open", 3, 1000.0)
    assert breaker.last_error == "ConnectionError: refused"

    clock.advance(12)
    ran = False
    with pytest.raises(CircuitOpenError) as caught:
        async with breaker:
            ran = True
    assert not ran
    error = caught.value
    assert isinstance(error, HubbubError)
    assert (error.status, error.code, error.breaker) == (503, "circuit_open", "redis")
    assert error.retry_after == pytest.approx(18)
    assert retry_after_of(error) == pytest.approx(18)
    assert str(error) == (
        "circuit 'redis' is open after 3 consecutive failures "
        "(last: ConnectionError: refused); next probe in 18.0 s"
    )
    assert breaker.failures == 3, "a refused call is not a failure"


async def test_a_success_resets_the_count() -> None:
    breaker = make_breaker(FakeClock())
    await fail(breaker)
    await fail(breaker)
    await succeed(breaker)
    assert breaker.failures == 0
    await fail(breaker)
    await fail(breaker)
    assert breaker.state == "closed"


async def test_client_errors_are_not_failures() -> None:
    breaker = make_breaker(FakeClock(), failure_threshold=1)
    await fail(breaker, NotFoundError("no such key"))
    assert (breaker.state, breaker.failures) == ("closed", 0)
    assert is_service_failure(ConnectionError())
    assert is_service_failure(ProviderError("x"))
    assert not is_service_failure(NotFoundError("x"))
    assert not is_service_failure(asyncio.CancelledError())


async def test_a_custom_failure_predicate_decides() -> None:
    breaker = make_breaker(
        FakeClock(), failure_threshold=1, is_failure=lambda e: isinstance(e, OSError)
    )
    await fail(breaker, ValueError("bug"))
    assert breaker.state == "closed"
    await fail(breaker, OSError("down"))
    assert breaker.state == "open"


async def test_cancellation_counts_as_neither() -> None:
    breaker = make_breaker(FakeClock(), failure_threshold=1)
    with pytest.raises(asyncio.CancelledError):
        async with breaker:
            raise asyncio.CancelledError
    assert (breaker.state, breaker.failures) == ("closed", 0)


async def test_turns_half_open_after_the_reset_timeout() -> None:
    clock = FakeClock()
    breaker = make_breaker(clock)
    for _ in range(3):
        await fail(breaker)
    clock.advance(29.9)
    assert breaker.state == "open"
    assert not breaker.allow()
    clock.advance(0.1)
    assert breaker.state == "half_open"
    assert breaker.retry_after() == 0


async def test_a_success_in_half_open_closes() -> None:
    clock = FakeClock()
    changes: list[tuple[BreakerState, BreakerState]] = []
    breaker = make_breaker(clock, changes)
    for _ in range(3):
        await fail(breaker)
    clock.advance(30)
    await succeed(breaker)
    assert (breaker.state, breaker.failures, breaker.opened_at) == ("closed", 0, None)
    assert changes == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]


async def test_a_failure_in_half_open_reopens_with_a_fresh_timer() -> None:
    clock = FakeClock()
    breaker = make_breaker(clock)
    for _ in range(3):
        await fail(breaker)
    clock.advance(45)
    await fail(breaker, TimeoutError("slow"))
    assert (breaker.state, breaker.opened_at, breaker.failures) == ("open", 1045.0, 4)
    assert breaker.last_error == "TimeoutError: slow"
    assert breaker.retry_after() == 30
    clock.advance(29)
    assert breaker.state == "open"
    clock.advance(1)
    assert breaker.state == "half_open"


async def test_half_open_limits_concurrent_probes() -> None:
    clock = FakeClock()
    breaker = make_breaker(clock)
    for _ in range(3):
        await fail(breaker)
    clock.advance(30)

    entered = asyncio.Event()
    release = asyncio.Event()

    async def probe() -> None:
        async with breaker:
            entered.set()
            await release.wait()

    task = asyncio.create_task(probe())
    await entered.wait()
    with pytest.raises(CircuitOpenError, match=r"half-open.*a probe is already running") as caught:
        await succeed(breaker)
    assert caught.value.retry_after == 0
    release.set()
    await task
    assert breaker.state == "closed"
    await succeed(breaker)


async def test_low_level_probes_up_to_the_limit_and_give_back_cancelled_slots() -> None:
    clock = FakeClock()
    breaker = make_breaker(clock, half_open_max_calls=2)
    for _ in range(3):
        breaker.record_failure(ConnectionError("refused"))
    assert breaker.state == "open"
    clock.advance(30)
    assert [breaker.allow(), breaker.allow(), breaker.allow()] == [True, True, False]
    breaker.record(asyncio.CancelledError())  # a probe was cancelled: its slot is free again
    assert breaker.state == "half_open"
    assert [breaker.allow(), breaker.allow()] == [True, False]
    breaker.record(None)
    assert breaker.state == "closed"
    assert all(breaker.allow() for _ in range(5))


async def test_low_level_record_classifies_outcomes() -> None:
    breaker = make_breaker(FakeClock(), failure_threshold=2)
    breaker.record(ConnectionError("a"))
    breaker.record(NotFoundError("b"))  # the dependency answered
    breaker.record(ConnectionError("c"))
    assert (breaker.state, breaker.failures) == ("closed", 1)
    breaker.record(ConnectionError("d"))
    assert breaker.state == "open"
    with pytest.raises(CircuitOpenError):
        breaker.check()


async def test_late_outcomes_while_open_do_not_change_the_state() -> None:
    clock = FakeClock()
    breaker = make_breaker(clock, failure_threshold=1)
    breaker.record_failure(ConnectionError("first"))
    clock.advance(10)
    breaker.record_success()
    breaker.record_failure("later")
    assert (breaker.state, breaker.opened_at, breaker.failures) == ("open", 1000.0, 1)
    assert breaker.last_error == "later"


def test_health_follows_the_state() -> None:
    clock = FakeClock()
    breaker = make_breaker(clock)
    assert breaker.health() == Health(status="ok", detail="circuit closed")
    breaker.record_failure(ConnectionError("refused"))
    health = breaker.health()
    assert (health.status, health.detail) == (
        "ok",
        "circuit closed; 1 consecutive failure (last: ConnectionError: refused)",
    )
    breaker.record_failure(ConnectionError("refused"))
    breaker.record_failure(ConnectionError("refused"))
    clock.advance(17.7)
    health = breaker.health()
    assert health.status == "down"
    assert health.detail == (
        "circuit open after 3 consecutive failures (last: ConnectionError: refused); "
        "next probe in 12.3 s"
    )
    clock.advance(12.3)
    health = breaker.health()
    assert health.status == "degraded"
    assert health.detail == (
        "circuit half-open, probing after 3 consecutive failures (last: ConnectionError: refused)"
    )
    breaker.record_success()
    assert breaker.health().status == "ok"


def test_long_errors_are_shortened() -> None:
    breaker = make_breaker(FakeClock())
    breaker.record_failure(ConnectionError("x" * 1000))
    assert breaker.last_error is not None
    assert len(breaker.last_error) == 200


async def test_on_change_sees_every_transition_in_order() -> None:
    clock = FakeClock()
    changes: list[tuple[BreakerState, BreakerState]] = []
    breaker = make_breaker(clock, changes, failure_threshold=1)
    await fail(breaker)
    clock.advance(30)
    await fail(breaker)
    clock.advance(30)
    await succeed(breaker)
    assert changes == [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
    ]


async def test_a_failing_on_change_callback_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(old: BreakerState, new: BreakerState, breaker: CircuitBreaker) -> None:
        raise RuntimeError("callback bug")

    breaker = CircuitBreaker("mcp", failure_threshold=1, on_change=broken, clock=FakeClock())
    with caplog.at_level(logging.WARNING, logger="hubbub.resilience"):
        breaker.record_failure(ConnectionError())
    assert breaker.state == "open"
    assert "on_change callback failed" in caplog.text


async def test_transitions_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    breaker = make_breaker(clock, failure_threshold=1, reset_timeout=5)
    with caplog.at_level(logging.INFO, logger="hubbub.resilience"):
        await fail(breaker)
        clock.advance(5)
        await succeed(breaker)
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        (
            "WARNING",
            "circuit 'redis' opened after 1 consecutive failure (last: ConnectionError: refused);"
            " refusing calls for 5 s",
        ),
        ("INFO", "circuit 'redis' half-open: letting a probe through"),
        ("INFO", "circuit 'redis' closed: redis is answering again"),
    ]
    assert [r.new_state for r in caplog.records] == ["open", "half_open", "closed"]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "options",
    [{"failure_threshold": 0}, {"reset_timeout": -1}, {"half_open_max_calls": 0}],
    ids=lambda o: next(iter(o)),
)
def test_breaker_options_are_checked(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(options))):
        CircuitBreaker("x", **options)


async def test_retry_stops_at_an_open_breaker() -> None:
    """Retry outside the breaker: once it opens, the fallback can take over at once."""
    clock = FakeClock()
    breaker = make_breaker(clock, failure_threshold=2)
    sleeps = Sleeps()
    calls: list[int] = []

    async def guarded() -> None:
        async with breaker:
            calls.append(1)
            raise ConnectionError("refused")

    with pytest.raises(CircuitOpenError):
        await retry(guarded, RetryPolicy(attempts=5), what="redis GET", sleep=sleeps)
    assert len(calls) == 2
    assert len(sleeps.waits) == 2
