"""Services the runtime owns for components: supervised background tasks and shared resources.

A component receives both through its :class:`~hubbub.registry.ComponentContext`, scoped to it::

    def build(context):
        client = RedisThing(context)
        context.tasks.start("reader", client.read_forever, restart=True)
        return client

    async def start(self):
        self.redis = await self.context.resources.acquire(
            f"redis:{url}", lambda: redis.asyncio.from_url(url)
        )

Tasks a component started are cancelled just before the component stops; a shared resource is
closed once the last component that acquired it has stopped.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, cast

from hubbub.resilience import RetryPolicy

__all__ = ["Closed", "Resources", "SharedResources", "Tasks", "close_within"]

logger = logging.getLogger("hubbub.services")

T = TypeVar("T")

RESTART_POLICY = RetryPolicy(base_delay=0.5, max_delay=30.0)
"""Back-off between restarts of a failed task (full jitter, capped at 30 s)."""


Closed = Literal["closed", "timeout", "failed"]
"""How :func:`close_within` ended."""


async def close_within(closer: Callable[[], Awaitable[Any]], seconds: float, what: str) -> Closed:
    """Run ``closer()`` for at most ``seconds``; log a failure or a timeout naming
    ``what``. Never raises (but cancellation): the one way hubbub closes things."""
    task = asyncio.ensure_future(closer())
    try:
        done, _ = await asyncio.wait({task}, timeout=seconds)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if not done:
        task.cancel()
        logger.error("%s did not stop within %g s; abandoned it", what, seconds)
        return "timeout"
    if task.cancelled():  # it cancelled itself (awaited a task it had cancelled, say)
        logger.error("%s was cancelled while stopping", what)
        return "failed"
    if task.exception() is not None:
        logger.error("%s failed to stop: %r", what, task.exception())
        return "failed"
    return "closed"


@dataclass
class _Supervised:
    name: str
    task: asyncio.Task[None]
    restarts: int = 0


class Tasks:
    """Background tasks of one owner (a component, or the runtime itself).

    A task that raises is logged with its name; with ``restart=True`` (a task meant to run until
    stopped, such as a reader loop) it is started again after a back-off that grows with
    consecutive failures, also when it returns, and the back-off resets once a run lasted longer
    than the longest back-off. :meth:`aclose` cancels every task and waits for them.
    """

    def __init__(
        self, owner: str, *, log: logging.Logger | None = None, policy: RetryPolicy | None = None
    ) -> None:
        self.owner = owner
        self._log = log or logger
        self._policy = policy or RESTART_POLICY
        self._tasks: dict[str, _Supervised] = {}
        self.closed = False

    def start(
        self, name: str, func: Callable[[], Awaitable[None]], *, restart: bool = False
    ) -> asyncio.Task[None]:
        """Run ``func()`` in the background as ``name`` (unique within the owner)."""
        if self.closed:
            raise RuntimeError(f"{self.owner} is stopping: cannot start task {name!r}")
        if name in self._tasks and not self._tasks[name].task.done():
            raise ValueError(f"{self.owner} already runs a task named {name!r}")
        entry = _Supervised(name, cast("asyncio.Task[None]", None))
        entry.task = asyncio.create_task(
            self._run(entry, func, restart), name=f"{self.owner}: {name}"
        )
        self._tasks[name] = entry
        return entry.task

    async def _run(
        self, entry: _Supervised, func: Callable[[], Awaitable[None]], restart: bool
    ) -> None:
        failures = 0
        while True:
            began = time.monotonic()
            try:
                await func()
                if not restart or self.closed:
                    return  # done, or its owner is stopping (it may have missed the cancel)
                self._log.warning(
                    "background task %s of %s returned; it is meant to keep running",
                    entry.name,
                    self.owner,
                    extra={"task": entry.name, "owner": self.owner},
                )
            except asyncio.CancelledError:
                raise
            except Exception:
                self._log.exception(
                    "background task %s of %s failed",
                    entry.name,
                    self.owner,
                    extra={"task": entry.name, "owner": self.owner},
                )
                if not restart:
                    return
            if time.monotonic() - began > self._policy.max_delay:
                failures = 0
            failures += 1
            entry.restarts += 1
            delay = self._policy.delay_for(failures)
            self._log.warning(
                "restarting background task %s of %s in %.2f s (restart %d)",
                entry.name,
                self.owner,
                delay,
                entry.restarts,
                extra={"task": entry.name, "owner": self.owner},
            )
            await asyncio.sleep(delay)

    def names(self) -> list[str]:
        """Names of the tasks still running."""
        return [name for name, entry in self._tasks.items() if not entry.task.done()]

    def restarts(self, name: str) -> int:
        """How many times the task ``name`` was restarted."""
        return self._tasks[name].restarts

    async def aclose(self, grace: float = 5.0) -> list[str]:
        """Cancel every task and wait up to ``grace`` seconds; return the names of those that
        ignored cancellation."""
        self.closed = True
        tasks = {entry.task: name for name, entry in self._tasks.items() if not entry.task.done()}
        for task in tasks:
            task.cancel()
        if not tasks:
            return []
        _, pending = await asyncio.wait(tasks, timeout=grace)
        for task in pending:
            self._log.error("background task %s ignored cancellation; abandoned", tasks[task])
        return [tasks[task] for task in pending]


@dataclass
class _Shared:
    value: Any
    close: Callable[[Any], Awaitable[Any] | Any] | None
    users: set[str] = field(default_factory=set)


class SharedResources:
    """Resources shared by key across one runtime's components, counted by user."""

    def __init__(self, *, close_timeout: float = 5.0) -> None:
        self._items: dict[str, _Shared] = {}
        self._pending: dict[str, asyncio.Future[_Shared]] = {}
        self.close_timeout = close_timeout

    def for_user(self, user: str) -> Resources:
        """The view one component uses (``user`` names it in logs)."""
        return Resources(self, user)

    def keys(self) -> list[str]:
        """Keys of the resources open now."""
        return sorted(self._items)

    async def _acquire(
        self,
        key: str,
        user: str,
        factory: Callable[[], T | Awaitable[T]],
        close: Callable[[T], Awaitable[Any] | Any] | None,
    ) -> T:
        shared = self._items.get(key)
        if shared is None:
            pending = self._pending.get(key)
            if pending is not None:  # another component is creating it: share its result
                shared = await asyncio.shield(pending)
            else:
                future: asyncio.Future[_Shared] = asyncio.get_running_loop().create_future()
                self._pending[key] = future
                try:
                    value = factory()
                    if inspect.isawaitable(value):
                        value = await value
                    shared = _Shared(value, cast("Callable[[Any], Any] | None", close))
                    self._items[key] = shared
                    future.set_result(shared)
                except BaseException as exc:
                    future.set_exception(exc)
                    future.exception()  # retrieved: waiters get it, nobody else must
                    raise
                finally:
                    del self._pending[key]
                logger.info("opened shared resource %s for %s", key, user)
        shared.users.add(user)
        return cast(T, shared.value)

    async def _release(self, key: str, user: str) -> None:
        shared = self._items.get(key)
        if shared is None:
            return
        shared.users.discard(user)
        if shared.users:
            return
        del self._items[key]
        await close_within(lambda: _close(shared), self.close_timeout, f"shared resource {key}")
        logger.info("closed shared resource %s (last user: %s)", key, user)

    async def aclose(self) -> None:
        """Close whatever is still open (resources acquired outside any component)."""
        for key in list(self._items):
            closer = functools.partial(_close, self._items.pop(key))
            await close_within(closer, self.close_timeout, f"shared resource {key}")


async def _close(shared: _Shared) -> None:
    value = shared.value
    closer: Any = shared.close
    if closer is not None:
        result = closer(value)
    else:
        method = getattr(value, "aclose", None) or getattr(value, "close", None)
        result = method() if method is not None else None
    if inspect.isawaitable(result):
        await result


class Resources:
    """One component's view of the runtime's shared resources."""

    def __init__(self, shared: SharedResources, user: str) -> None:
        self._shared = shared
        self.user = user
        self._keys: set[str] = set()

    async def acquire(
        self,
        key: str,
        factory: Callable[[], T | Awaitable[T]],
        *,
        close: Callable[[T], Awaitable[Any] | Any] | None = None,
    ) -> T:
        """The resource named ``key``, created by ``factory()`` (sync or async) on first use.

        Every component that asks for the same key gets the same object. It is closed with
        ``close(resource)`` (default: its ``aclose()`` or ``close()``) once every component that
        acquired it has stopped. Name keys by what makes them distinct: ``redis:<url>``.
        """
        value = await self._shared._acquire(key, self.user, factory, close)
        self._keys.add(key)
        return value

    async def release_all(self) -> None:
        """Give back everything this component acquired (the runtime calls it at stop)."""
        for key in sorted(self._keys):
            try:
                await self._shared._release(key, self.user)
            except Exception:
                logger.exception("releasing shared resource %s for %s failed", key, self.user)
        self._keys.clear()
