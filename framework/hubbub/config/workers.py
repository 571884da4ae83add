"""Whether a configuration may run in several processes at once (``hubbub serve --workers N``).

Every worker process has its own runtime. Events reach only the streams of the process whose
event log they went through, and one reply at a time per conversation is a lease in the cache:
with the in-process (``memory``) event log or cache, workers would split the events between
them and could reply twice to one conversation. So more than one worker needs both shared, and
is refused otherwise, in one line naming what to set.
"""

from __future__ import annotations

from hubbub.config.schema import Config
from hubbub.errors import ConfigError, ConfigIssue

__all__ = ["PROCESS_LOCAL", "check_workers"]

PROCESS_LOCAL = "memory"
"""The backend name (of ``[events] backend`` and ``[cache] backend``) that lives in one
process."""


def check_workers(config: Config, *, option: str | None = None) -> None:
    """Refuse ``[server] workers`` above 1 unless the event log and the cache are shared
    between processes.

    :param option: the command-line option that set the number of workers (``"--workers 2"``),
        named in the error instead of ``[server] workers``.
    :raises ConfigError: one issue saying which settings to change.
    """
    workers = config.server.workers
    if workers <= 1:
        return
    needed = []
    if (config.events.backend or PROCESS_LOCAL) == PROCESS_LOCAL:  # unset: memory
        needed.append(("event log", '[events] backend = "redis"'))
    if config.cache.backend == PROCESS_LOCAL:
        needed.append(("cache", '[cache] backend = "redis"'))
    fallback = config.cache.fallback == PROCESS_LOCAL and config.cache.backend != PROCESS_LOCAL
    if not needed and not fallback:
        return
    if not needed:  # the cache is shared, but would not be while it falls back to memory
        advice = (
            '[cache] fallback = "memory": a worker whose cache fell back would take reply '
            "leases only it sees; remove the fallback"
        )
        if option is not None:
            raise ConfigError([ConfigIssue(path="", message=f"{option} cannot use {advice}")])
        raise ConfigError(
            [config.issue("cache.fallback", f"{workers} workers cannot use {advice}")]
        )
    what = " and ".join(name for name, _ in needed)
    settings = " and ".join(setting for _, setting in needed)
    url = "" if config.redis.url is not None else " with [redis] url"
    advice = f"a shared {what}: set {settings}{url}"
    if option is not None:
        raise ConfigError([ConfigIssue(path="", message=f"{option} needs {advice}")])
    raise ConfigError([config.issue("server.workers", f"{workers} workers need {advice}")])
