"""Resilience primitives: per-call timeouts, retries with back-off, and circuit breakers.

Every component that talks to something outside the process (a cache server, an LLM provider, a
tool server) uses these rather than its own loops, so that timeouts, retries and outages behave
and read the same everywhere:

- :func:`call_with_timeout` and :func:`deadline` bound how long one call or block may take, and
  raise :class:`CallTimeoutError` (a :class:`TimeoutError` and a 504) naming what was slow.
- :func:`retry` runs a call again after transient failures, waiting as :class:`RetryPolicy` says
  (exponential back-off with full jitter) or as the server asked (``Retry-After``).
- :class:`CircuitBreaker` stops calling a dependency that keeps failing, lets a probe through
  after a while, and reports itself as a :class:`~hubbub.models.Health`.

Everything is asyncio-based and meant for one event loop; clocks, sleeps and randomness can be
injected, so tests never wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import functools
import logging
import math
import operator
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC
from types import TracebackType
from typing import Annotated, Any, Literal, TypeVar

import msgspec
import msgspec.inspect

from hubbub.errors import HubbubError
from hubbub.models import Health

__all__ = [
    "BreakerState",
    "CallTimeoutError",
    "CircuitBreaker",
    "CircuitOpenError",
    "RetryPolicy",
    "call_with_timeout",
    "deadline",
    "is_retryable",
    "is_service_failure",
    "parse_retry_after",
    "retry",
    "retry_after_of",
]

logger = logging.getLogger("hubbub.resilience")

T = TypeVar("T")

BreakerState = Literal["closed", "open", "half_open"]
"""``closed``: calls go through. ``open``: calls are refused until ``reset_timeout`` has passed.
``half_open``: a limited number of probe calls go through; the first outcome closes or re-opens
the breaker."""


# -- errors ----------------------------------------------------------------------------------


class CallTimeoutError(HubbubError, TimeoutError):
    """A call or block did not finish within its time limit.

    Also a builtin :class:`TimeoutError`, so ``except TimeoutError`` catches it and
    :func:`is_retryable` retries it.
    """

    status = 504
    code = "timeout"

    def __init__(self, what: str, timeout: float) -> None:
        self.what = what
        """What timed out, as the caller named it."""
        self.timeout = timeout
        """The limit that was exceeded, in seconds."""
        super().__init__(f"{what} timed out after {timeout:g} s")


class CircuitOpenError(HubbubError):
    """A :class:`CircuitBreaker` refused a call because its dependency has been failing."""

    status = 503
    code = "circuit_open"

    def __init__(self, breaker: str, retry_after: float, *, reason: str = "") -> None:
        self.breaker = breaker
        """The breaker's name."""
        self.retry_after = retry_after
        """Seconds until the breaker lets a probe through (0 when half-open and a probe is
        already running: the next call may go through as soon as it succeeds)."""
        why = f" {reason}" if reason else ""
        super().__init__(
            f"circuit {breaker!r} is open{why}; next probe in {retry_after:.1f} s"
            if retry_after > 0
            else f"circuit {breaker!r} is half-open{why}; a probe is already running"
        )


# -- timeouts --------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def deadline(seconds: float | None, *, what: str = "call") -> AsyncIterator[None]:
    """Bound the time the ``async with`` block may take (``None``: no limit).

    When the limit passes, the block is cancelled and :class:`CallTimeoutError` is raised in
    its place. A :class:`TimeoutError` raised by the block itself passes through unchanged.

    :param seconds: the limit in seconds, or ``None`` for none.
    :param what: what the block does, for the error message (``"GET /v1/models"``).
    """
    if seconds is None:
        yield
        return
    scope = asyncio.timeout(seconds)
    try:
        async with scope:
            yield
    except TimeoutError as exc:
        if scope.expired():
            raise CallTimeoutError(what, seconds) from exc
        raise


async def call_with_timeout(
    func: Callable[[], Awaitable[T]],
    *,
    timeout: float | None,  # noqa: ASYNC109 - this is the timeout wrapper ruff recommends
    what: str = "call",
) -> T:
    """Await ``func()`` within ``timeout`` seconds (``None``: no limit) and return its result.

    ``func`` takes no arguments (bind them with a ``lambda`` or :func:`functools.partial`), so
    its own keyword arguments, such as an HTTP client's ``timeout=``, never clash with these.

    :param func: the coroutine function to call.
    :param timeout: the limit in seconds, or ``None`` for none.
    :param what: what the call does, for the error message.
    :raises CallTimeoutError: when the limit passes first.
    """
    async with deadline(timeout, what=what):
        return await func()


# -- retries ---------------------------------------------------------------------------------


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """How often and how long :func:`retry` waits between tries.

    The wait after the ``n``-th failed try is at most ``base_delay * multiplier ** (n - 1)``,
    capped at ``max_delay``; with ``jitter`` it is a uniformly random fraction of that ("full
    jitter"), so that clients that failed together do not retry together. A server's
    ``Retry-After`` replaces the computed wait.
    """

    attempts: Annotated[int, msgspec.Meta(ge=1)] = 3
    """Total number of tries, the first included (1: never retry)."""
    base_delay: Annotated[float, msgspec.Meta(ge=0)] = 0.1
    """The wait after the first failure, in seconds, before jitter."""
    max_delay: Annotated[float, msgspec.Meta(ge=0)] = 10.0
    """The longest wait between two tries, in seconds, before jitter."""
    multiplier: Annotated[float, msgspec.Meta(ge=1)] = 2.0
    """How much the wait grows after each failure."""
    jitter: bool = True
    """Wait a random time between 0 and the computed delay (full jitter)."""
    max_retry_after: Annotated[float, msgspec.Meta(ge=0)] = 60.0
    """The longest ``Retry-After`` honoured, in seconds; when a server asks for more,
    :func:`retry` gives up at once and re-raises its error."""

    def __post_init__(self) -> None:
        _check_ranges(self)

    def delay_for(self, attempt: int, rnd: float | None = None) -> float:
        """The wait, in seconds, after failed try number ``attempt`` (1-based).

        :param attempt: the number of the try that just failed.
        :param rnd: a number in ``[0, 1)`` scaling the delay when ``jitter`` is on; drawn from
            :func:`random.random` when ``None``. Ignored without jitter.
        """
        if attempt < 1:
            raise ValueError(f"attempt must be >= 1, got {attempt}")
        try:
            cap = min(self.max_delay, self.base_delay * self.multiplier ** (attempt - 1))
        except OverflowError:
            cap = self.max_delay
        if not self.jitter:
            return cap
        return cap * (random.random() if rnd is None else rnd)

    def delays(self, random: Callable[[], float] = random.random) -> list[float]:
        """The waits between all tries, in order (``attempts - 1`` of them), with ``random``
        drawing the jitter; without a ``Retry-After``, this is what :func:`retry` sleeps."""
        return [self.delay_for(attempt, random()) for attempt in range(1, self.attempts)]


_BOUNDS: tuple[tuple[str, str, Callable[[Any, Any], Any]], ...] = (
    ("ge", ">=", operator.ge),
    ("gt", ">", operator.gt),
    ("le", "<=", operator.le),
    ("lt", "<", operator.lt),
)


@functools.cache
def _ranges(struct_type: type[msgspec.Struct]) -> list[tuple[str, str, Any, Any]]:
    """``(field, symbol, limit, compare)`` for each bound the fields' ``msgspec.Meta`` set."""
    info = msgspec.inspect.type_info(struct_type)
    assert isinstance(info, msgspec.inspect.StructType)
    return [
        (field.name, symbol, getattr(field.type, bound), compare)
        for field in info.fields
        for bound, symbol, compare in _BOUNDS
        if getattr(field.type, bound, None) is not None
    ]


def _check_ranges(struct: msgspec.Struct) -> None:
    """Apply the ``msgspec.Meta`` bounds on construction too (msgspec checks them only when
    decoding)."""
    for name, symbol, limit, compare in _ranges(type(struct)):
        value = getattr(struct, name)
        if not compare(value, limit):
            raise ValueError(f"{name} must be {symbol} {limit}, got {value!r}")


def is_retryable(exc: BaseException) -> bool:
    """Whether :func:`retry` tries again after ``exc`` by default.

    An exception's own ``retryable`` attribute decides when it has one (``True`` or
    ``False``). Otherwise hubbub's client errors (:class:`~hubbub.errors.HubbubError` with a
    status below 500) are not retried, timeouts and connection or other OS errors are, and
    nothing else is. Cancellation and other non-:class:`Exception` errors never are.
    """
    if not isinstance(exc, Exception):
        return False
    flag = getattr(exc, "retryable", None)
    if isinstance(flag, bool):
        return flag
    if isinstance(exc, HubbubError) and exc.status < 500:
        return False
    return isinstance(exc, OSError)  # TimeoutError and ConnectionError included


def parse_retry_after(value: object, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: a number of seconds, or an HTTP date
    (relative to ``now``, a Unix time, default the current time; a date in the past gives 0).

    Returns ``None`` for anything else (missing, negative, malformed).
    """
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str | bytes):
        text = value.decode("latin-1") if isinstance(value, bytes) else value
        text = text.strip()
        try:
            seconds = float(text)
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(text)
            except (TypeError, ValueError, IndexError):
                return None
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            current = time.time() if now is None else now
            return max(0.0, when.timestamp() - current)
    else:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def retry_after_of(exc: BaseException, *, now: float | None = None) -> float | None:
    """The wait, in seconds, that the server asked for with the error ``exc``, if any.

    Looks at ``exc.retry_after`` (seconds or a header value), then at a ``Retry-After`` header
    in ``exc.response.headers`` or ``exc.headers`` (as HTTP client errors carry them). See
    :func:`parse_retry_after` for the formats and ``now``.
    """
    direct = getattr(exc, "retry_after", None)
    if direct is not None:
        return parse_retry_after(direct, now=now)
    for holder in (getattr(exc, "response", None), exc):
        headers = getattr(holder, "headers", None)
        getter = getattr(headers, "get", None)
        if not callable(getter):
            continue
        for key in ("retry-after", "Retry-After"):
            with contextlib.suppress(Exception):  # an odd mapping must not hide the error
                value = getter(key)
                if value is not None:
                    return parse_retry_after(value, now=now)
    return None


async def retry(
    func: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    what: str,
    retry_on: Callable[[BaseException], bool] = is_retryable,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    random: Callable[[], float] = random.random,
    now: Callable[[], float] = time.time,
) -> T:
    """Call ``func()`` until it succeeds or ``policy.attempts`` tries are spent.

    After a failure that ``retry_on`` accepts, waits the server's ``Retry-After`` (see
    :func:`retry_after_of`) or else ``policy.delay_for(attempt)``, logging a warning, and tries
    again. The error is re-raised unchanged when it is not retryable, when the tries are spent,
    or when the server asks to wait longer than ``policy.max_retry_after``. Cancellation is
    never retried.

    :param func: the coroutine function to call, without arguments.
    :param policy: how many tries and how long to wait between them.
    :param what: what the call does, for the logs (``"redis GET"``).
    :param retry_on: whether an error is worth another try; :func:`is_retryable` by default.
    :param sleep: how to wait (tests pass a recorder).
    :param random: draws the jitter, a number in ``[0, 1)``.
    :param now: the current Unix time, for ``Retry-After`` dates.
    :returns: what ``func()`` returned.
    """
    attempt = 1
    while True:
        try:
            return await func()
        except Exception as exc:
            if attempt >= policy.attempts or not retry_on(exc):
                raise
            asked = retry_after_of(exc, now=now())
            if asked is not None and asked > policy.max_retry_after:
                logger.warning(
                    "%s failed (%s); not retrying: the server asked to wait %.1f s, more than "
                    "max_retry_after (%g s)",
                    what,
                    _describe(exc),
                    asked,
                    policy.max_retry_after,
                    extra={"what": what, "attempt": attempt, "retry_after": asked},
                )
                raise
            wait = asked if asked is not None else policy.delay_for(attempt, random())
            logger.warning(
                "%s failed (%s); retrying in %.2f s%s (try %d of %d)",
                what,
                _describe(exc),
                wait,
                " as the server asked" if asked is not None else "",
                attempt + 1,
                policy.attempts,
                extra={"what": what, "attempt": attempt, "delay": wait},
            )
        await sleep(wait)
        attempt += 1


def _describe(exc: BaseException) -> str:
    """``Type: message``, or the type alone when the message is empty."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# -- circuit breaker -------------------------------------------------------------------------


def is_service_failure(exc: BaseException) -> bool:
    """Whether a :class:`CircuitBreaker` counts ``exc`` against its dependency by default:
    every :class:`Exception` except hubbub's client errors (status below 500), which show the
    dependency answering."""
    if not isinstance(exc, Exception):
        return False
    return not (isinstance(exc, HubbubError) and exc.status < 500)


class CircuitBreaker:
    """Stops calling a dependency after ``failure_threshold`` consecutive failures.

    While **open**, calls are refused with :class:`CircuitOpenError` (so a fallback can serve
    at once instead of waiting for timeouts). After ``reset_timeout`` seconds it turns
    **half-open** and lets up to ``half_open_max_calls`` probes through at a time: a success
    closes it, a failure opens it again for another ``reset_timeout``.

    Wrap each call in ``async with breaker:``, which records its outcome; streaming code that
    cannot use one block calls :meth:`allow` first and :meth:`record` (or
    :meth:`record_success` / :meth:`record_failure`) when done. Meant for one event loop; not
    thread-safe.

    :param name: names the breaker in logs, errors and health details (``"redis"``).
    :param failure_threshold: consecutive failures that open the breaker.
    :param reset_timeout: seconds the breaker stays open before letting a probe through.
    :param half_open_max_calls: probes allowed at once while half-open.
    :param clock: monotonic time in seconds (tests pass a fake).
    :param is_failure: whether an error counts against the dependency; other errors count as
        successes (the dependency answered). :func:`is_service_failure` by default.
    :param on_change: called as ``on_change(old, new, breaker)`` after each state change.
    """

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int = 5,
        reset_timeout: float = 30.0,
        half_open_max_calls: int = 1,
        clock: Callable[[], float] = time.monotonic,
        is_failure: Callable[[BaseException], bool] = is_service_failure,
        on_change: Callable[[BreakerState, BreakerState, CircuitBreaker], object] | None = None,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be >= 1, got {failure_threshold}")
        if not reset_timeout >= 0:
            raise ValueError(f"reset_timeout must be >= 0, got {reset_timeout}")
        if half_open_max_calls < 1:
            raise ValueError(f"half_open_max_calls must be >= 1, got {half_open_max_calls}")
        self.name = name
        """Names the breaker in logs, errors and health details."""
        self.failure_threshold = failure_threshold
        """Consecutive failures that open the breaker."""
        self.reset_timeout = reset_timeout
        """Seconds the breaker stays open before a probe."""
        self.half_open_max_calls = half_open_max_calls
        """Probes allowed at once while half-open."""
        self.clock = clock
        """Monotonic time in seconds."""
        self.is_failure = is_failure
        """Whether an error counts against the dependency."""
        self.on_change = on_change
        """Called as ``on_change(old, new, breaker)`` after each state change."""
        self.failures = 0
        """Consecutive failures recorded since the last success."""
        self.opened_at: float | None = None
        """When (by :attr:`clock`) the breaker last opened; ``None`` while closed."""
        self.last_error: str | None = None
        """The last failure, as ``Type: message``; ``None`` until one is recorded."""
        self._state: BreakerState = "closed"
        self._probes = 0

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self.name!r} {self.state} failures={self.failures}>"

    @property
    def state(self) -> BreakerState:
        """The current state; an open breaker turns half-open here once ``reset_timeout`` has
        passed."""
        if (
            self._state == "open"
            and self.opened_at is not None
            and self.clock() >= self.opened_at + self.reset_timeout
        ):
            self._transition("half_open")
        return self._state

    def retry_after(self) -> float:
        """Seconds until the breaker lets a call through: 0 unless it is open."""
        if self.state != "open" or self.opened_at is None:
            return 0.0
        return max(0.0, self.opened_at + self.reset_timeout - self.clock())

    def allow(self) -> bool:
        """Whether a call may go through now. While half-open, ``True`` takes one of the
        probe slots, which the next :meth:`record` (or ``record_*``) call gives back."""
        state = self.state
        if state == "closed":
            return True
        if state == "half_open" and self._probes < self.half_open_max_calls:
            self._probes += 1
            return True
        return False

    def check(self) -> None:
        """:meth:`allow`, raising :class:`CircuitOpenError` instead of returning ``False``."""
        if not self.allow():
            raise CircuitOpenError(self.name, self.retry_after(), reason=self._reason())

    def record_success(self) -> None:
        """Record a call that succeeded: resets the failure count and closes a half-open
        breaker. Ignored while open (a late answer to a call made before it opened)."""
        state = self.state
        if state == "open":
            return
        self.failures = 0
        if state == "half_open":
            self._transition("closed")

    def record_failure(self, exc: BaseException | str | None = None) -> None:
        """Record a call that failed (whatever ``is_failure`` says; see :meth:`record`).

        Opens the breaker at ``failure_threshold`` consecutive failures, or at once when
        half-open. While open, only :attr:`last_error` is updated.
        """
        if exc is not None:
            text = exc if isinstance(exc, str) else _describe(exc)
            self.last_error = text if len(text) <= 200 else text[:199] + "…"
        state = self.state
        if state == "open":
            return
        self.failures += 1
        if state == "half_open" or self.failures >= self.failure_threshold:
            self._transition("open")

    def record(self, exc: BaseException | None) -> None:
        """Record a call's outcome: ``None`` is a success; an error counts as a failure when
        ``is_failure`` says so and as a success otherwise; cancellation (and any other
        non-:class:`Exception`) counts as neither and only gives back a probe slot."""
        if exc is None:
            self.record_success()
        elif not isinstance(exc, Exception):
            if self._probes:
                self._probes -= 1
        elif self.is_failure(exc):
            self.record_failure(exc)
        else:
            self.record_success()

    async def __aenter__(self) -> CircuitBreaker:
        self.check()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.record(exc)

    def health(self) -> Health:
        """``ok`` while closed, ``degraded`` while half-open (probing), ``down`` while open;
        the detail says how many failures, the last one, and when the next probe is."""
        state = self.state
        if state == "open":
            return Health(
                status="down",
                detail=f"circuit open {self._reason()}; next probe in {self.retry_after():.1f} s",
            )
        if state == "half_open":
            return Health(status="degraded", detail=f"circuit half-open, probing {self._reason()}")
        if self.failures:
            return Health(detail=f"circuit closed; {self._failures_text()}")
        return Health(detail="circuit closed")

    def _reason(self) -> str:
        """``after 5 consecutive failures (last: ConnectionError: refused)``."""
        return f"after {self._failures_text()}"

    def _failures_text(self) -> str:
        """``5 consecutive failures (last: ConnectionError: refused)``."""
        plural = "" if self.failures == 1 else "s"
        last = f" (last: {self.last_error})" if self.last_error else ""
        return f"{self.failures} consecutive failure{plural}{last}"

    def _transition(self, new: BreakerState) -> None:
        old, self._state = self._state, new
        self._probes = 0
        if new == "open":
            self.opened_at = self.clock()
            logger.warning(
                "circuit %r opened %s; refusing calls for %g s",
                self.name,
                self._reason(),
                self.reset_timeout,
                extra={"breaker": self.name, "old_state": old, "new_state": new},
            )
        elif new == "half_open":
            logger.info(
                "circuit %r half-open: letting a probe through",
                self.name,
                extra={"breaker": self.name, "old_state": old, "new_state": new},
            )
        else:
            self.opened_at = None
            logger.info(
                "circuit %r closed: %s is answering again",
                self.name,
                self.name,
                extra={"breaker": self.name, "old_state": old, "new_state": new},
            )
        if self.on_change is not None:
            try:
                self.on_change(old, new, self)
            except Exception:
                logger.warning(
                    "circuit %r: on_change callback failed",
                    self.name,
                    exc_info=True,
                    extra={"breaker": self.name},
                )
