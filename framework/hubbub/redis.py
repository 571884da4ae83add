"""The Redis client processes share, one per ``[redis] url``.

Every component that uses Redis (the event log, the cache, reply leases) asks for it with
:func:`shared_redis`: the first call opens the client, later ones get the same object, and it is
closed after the last component that used it has stopped::

    client = await shared_redis(context.resources, context.config)
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from hubbub.config.issues import make_issue
from hubbub.errors import ConfigError
from hubbub.models import Health

if TYPE_CHECKING:
    import redis.asyncio

    from hubbub.config import Config
    from hubbub.services import Resources

__all__ = ["ping_health", "redacted_url", "redis_url", "shared_redis"]


def redis_url(config: Config, needed_by: str) -> str:
    """The configured ``[redis] url`` in clear, or a :class:`~hubbub.errors.ConfigError` saying
    that ``needed_by`` (a setting such as ``events.backend``) needs it."""
    if config.redis.url is None:
        raise ConfigError(
            [
                make_issue(
                    "redis.url",
                    f"{needed_by} uses Redis, but [redis] url is not set (add url = "
                    '"redis://host:6379/0" to a [redis] table)',
                    config.text,
                    config.source,
                    config.overrides,
                )
            ]
        )
    return config.redis.url.reveal()


def redacted_url(url: str) -> str:
    """``url`` without its password, for logs and health details."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + host))


async def shared_redis(
    resources: Resources,
    config: Config,
    *,
    needed_by: str = "a component",
    pool: str = "",
) -> redis.asyncio.Redis:
    """The runtime's client for ``[redis] url`` (one per URL, shared by every component that
    asks; a cluster client with ``[redis] cluster = true``), with ``[redis] timeout`` on
    connecting and on every reply. Connections are opened when first used, so this never waits
    for Redis. A component whose calls must not share connections with the others (its
    timeouts cancel calls mid-flight) names a ``pool`` of its own."""
    url = redis_url(config, needed_by)
    timeout = config.redis.timeout

    def make() -> Any:
        import redis.asyncio

        if config.redis.cluster:
            return redis.asyncio.RedisCluster.from_url(
                url, socket_connect_timeout=timeout, socket_timeout=timeout, client_name="hubbub"
            )
        return redis.asyncio.Redis.from_url(
            url,
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
            health_check_interval=30,
            client_name="hubbub",
        )

    client: redis.asyncio.Redis = await resources.acquire(
        f"redis{'-cluster' if config.redis.cluster else ''}:{redacted_url(url)}"
        + (f"#{pool}" if pool else ""),
        make,
        close=lambda c: c.aclose(),
    )
    return client


async def ping_health(
    client: redis.asyncio.Redis | None,
    where: str,
    failures: tuple[type[BaseException], ...],
    within: float | None,
) -> Health:
    """A Redis-backed component's health: ``ok`` with the PING time while Redis at ``where``
    (a redacted URL) answers, within ``within`` seconds unless that is ``None``; ``down`` with
    the reason when it does not (``failures``: the errors that mean it does not), or when
    ``client`` is ``None`` (not started)."""
    if client is None:
        return Health(status="down", detail="not started")
    began = time.perf_counter()
    try:
        async with asyncio.timeout(within):
            await client.ping()
    except TimeoutError:
        return Health(status="down", detail=f"Redis at {where} does not answer within {within} s")
    except failures as exc:
        why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return Health(status="down", detail=f"Redis at {where} does not answer: {why}")
    latency = (time.perf_counter() - began) * 1000
    return Health(detail=f"Redis at {where}, PING {latency:.1f} ms")
