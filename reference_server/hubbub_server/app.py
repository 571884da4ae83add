"""The Litestar app: :class:`HubbubPlugin` bridges a runtime into any Litestar app, and
:func:`create_app` builds the reference server with it.

The plugin adds the routes (the built-in ones and every ``register_routes`` registration, which
require a caller unless declared public: :func:`hubbub_server.security.require_caller`), the
``runtime`` and ``principal`` dependencies, problem+json error handlers, the request middleware
(request id, metrics, draining) and the browser checks (``Host``, ``Origin``, JSON bodies:
:mod:`hubbub_server.browser`), both installed around the whole app at startup, CORS for
``[server] cors_origins``, the body size limit, and a lifespan that starts the runtime (unless
the caller already did, as ``hubbub serve`` does) and stops it, within ``[server] grace_period``
of the moment the stop began (:mod:`hubbub_server.shutdown`, ``app.state.shutdown``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import AsyncIterator, Iterable
from typing import Any

from litestar import Litestar, Router
from litestar.config.app import AppConfig
from litestar.di import Provide
from litestar.plugins import InitPlugin

from hubbub import __version__
from hubbub.config import Config, load_config
from hubbub.errors import ComponentError
from hubbub.events import UsageRecorded
from hubbub.plugins import Plugins, load_plugins
from hubbub.runtime import Runtime
from hubbub_server.browser import BrowserGuard, check_browser_settings, cors_config
from hubbub_server.heartbeat import Heartbeat
from hubbub_server.metrics import Metrics
from hubbub_server.middleware import RequestMiddleware
from hubbub_server.openapi import openapi_config, openapi_plugins
from hubbub_server.options import AllowEveryMethod
from hubbub_server.problems import EXCEPTION_HANDLERS
from hubbub_server.request import JSONRequest
from hubbub_server.routes import ROUTES
from hubbub_server.routes.mcp import mount_mcp
from hubbub_server.security import provide_principal, require_caller
from hubbub_server.shutdown import Shutdown, ShutdownPlan
from hubbub_server.streams import StreamLimits

__all__ = ["HubbubPlugin", "app_from_env", "check_exposure", "create_app", "is_loopback"]

logger = logging.getLogger("hubbub.server")


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


async def check_exposure(runtime: Runtime, host: str) -> None:
    """Apply the local-mode rule: without provisioned credentials, serve a local user on
    loopback (with a warning) and refuse to serve anywhere else."""
    loopback = is_loopback(host)
    runtime.auth.allow_local = loopback and runtime.config.auth.local_mode
    if await runtime.auth.is_provisioned():
        return
    if not loopback:
        raise ComponentError(
            f"refusing to serve on {host} without authentication: create an API key "
            "(hubbub keys create --user NAME) or enable an auth method, or bind 127.0.0.1"
        )
    if runtime.auth.allow_local:
        logger.warning(
            "no credentials are set up: every request is served as the local user "
            "(fine on loopback; create a key with: hubbub keys create --user NAME)"
        )


class HubbubPlugin(InitPlugin):
    """Serve a hubbub runtime from a Litestar app."""

    def __init__(self, runtime: Runtime, *, metrics: Metrics | None = None) -> None:
        check_browser_settings(runtime.config)  # a ConfigError naming the file and line
        self.runtime = runtime
        self.metrics = metrics or Metrics()

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Litestar) -> AsyncIterator[None]:
        owned = self.runtime.state == "new"
        app.state.drain.clear()  # an app can be started again after a shutdown (tests do)
        if app.state.shutdown.begun:
            app.state.shutdown = self._shutdown(app.state.drain)
        if owned:
            await self.runtime.start()
        counting = asyncio.create_task(self._count_usage(), name="hubbub usage metrics")
        try:
            if self.runtime.auth.allow_local is None:  # `hubbub serve` decided before binding
                await check_exposure(self.runtime, self.runtime.config.server.host)
            yield
        finally:
            # Begun already when a stop signal arrived (hubbub serve); the whole stop, the
            # runtime's included, then fits in [server] grace_period from the signal.
            shutdown: Shutdown = app.state.shutdown
            shutdown.begin()
            counting.cancel()
            self.metrics.close()
            if owned:
                await self.runtime.stop(deadline=shutdown.plan.exit_at)

    def _shutdown(self, drain: asyncio.Event) -> Shutdown:
        return Shutdown(ShutdownPlan.from_config(self.runtime.config), drain)

    async def _count_usage(self) -> None:
        with self.runtime.events.subscribe(lambda e: isinstance(e, UsageRecorded)) as usage:
            async for event in usage:
                assert isinstance(event, UsageRecorded)
                self.metrics.record_usage(event.model, event.usage)

    def _plugin_routes(self) -> list[Any]:
        """Every ``register_routes`` registration, in one router whose guard authenticates the
        caller of each route not declared public (``opt={"public": True}``)."""
        handlers: list[Any] = []
        for registration in self.runtime.plugins.registries()["routes"]:
            built = self.runtime.build("routes", registration.name)  # errors name the plugin
            handlers.extend(built if isinstance(built, Iterable) else [built])
        if not handlers:
            return []
        return [Router(path="/", route_handlers=handlers, guards=[require_caller])]

    def _wrap_app(self, app: Litestar) -> None:
        """Put :class:`RequestMiddleware` and, inside it, :class:`BrowserGuard` around the
        whole app, outside routing (and CORS): they see every request (unrouted ones too), and
        cost no per-route exception handler, which Litestar adds to every route as soon as it
        has any app-level middleware."""
        if not isinstance(app.asgi_handler, RequestMiddleware):
            guarded = BrowserGuard(app.asgi_handler, app, self.runtime.config)
            app.asgi_handler = RequestMiddleware(guarded, self.metrics, app.state)

    def _provide_runtime(self) -> Runtime:
        return self.runtime

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        app_config.route_handlers.extend([*ROUTES, *self._plugin_routes()])
        app_config.dependencies.update(
            {
                # The same object for every request: resolved once, then cached.
                "runtime": Provide(self._provide_runtime, sync_to_thread=False, use_cache=True),
                "principal": Provide(provide_principal),
            }
        )
        app_config.exception_handlers.update(EXCEPTION_HANDLERS)
        # Undecodable JSON bodies (bad UTF-8, deep nesting) are 400s (hubbub_server.request).
        app_config.request_class = app_config.request_class or JSONRequest
        drain = asyncio.Event()
        app_config.state.update(
            # drain: set when the server starts shutting down (new requests get 503, event
            # streams end, requests cut by the end of the grace period end quietly).
            # shutdown: the stop's timing, and what ends streamed completions at the cut.
            {
                "runtime": self.runtime,
                "metrics": self.metrics,
                "drain": drain,
                "shutdown": self._shutdown(drain),
                "streams": StreamLimits(
                    self.runtime.config.events.max_streams_per_caller,
                    self.runtime.config.events.max_streams,
                ),
                # heartbeat: ticks every open event stream, and ends them when draining.
                "heartbeat": Heartbeat(self.runtime.config.server.heartbeat_interval, drain),
            }
        )
        app_config.on_startup.append(self._wrap_app)
        if cors := cors_config(self.runtime.config):  # CORS stays off (or the app's) without
            app_config.cors_config = cors
        app_config.lifespan.append(self._lifespan)
        mount_mcp(app_config, self.runtime)  # /mcp, its lifespan inside the runtime's
        # Litestar 2 takes the body limit from its constructor argument only: an app built
        # around this plugin passes it too (create_app does).
        app_config.request_max_body_size = self.runtime.config.server.max_body_bytes
        return app_config


def create_app(
    config: Config | None = None,
    *,
    plugins: Plugins | None = None,
    extra_plugins: Iterable[object] = (),
    runtime: Runtime | None = None,
) -> Litestar:
    """Build the reference server's app. The runtime starts with the app's lifespan unless it was
    started already.

    :param config: the configuration (default: :func:`hubbub.config.load_config`).
    :param plugins: loaded plugins (default: entry points, minus ``[plugins] disabled``).
    :param extra_plugins: plugin objects to register in addition (tests, embedding).
    :param runtime: an existing runtime to serve instead of building one.
    """
    if runtime is None:
        config = config if config is not None else load_config()
        if plugins is None:
            plugins = load_plugins(
                disabled=config.plugins.disabled, extra=extra_plugins, env=config.env
            )
        runtime = Runtime.from_config(config, plugins=plugins)
    return Litestar(
        plugins=[HubbubPlugin(runtime), *openapi_plugins(), AllowEveryMethod()],
        request_max_body_size=runtime.config.server.max_body_bytes,
        openapi_config=openapi_config(title="Hubbub", version=__version__),
        logging_config=None,
    )


def app_from_env() -> Litestar:
    """App factory for ``uvicorn --factory`` and multi-worker serving: configuration from
    ``$HUBBUB_CONFIG`` and the environment."""
    from hubbub.log import configure_logging

    config = load_config()
    configure_logging(config.logging.level, config.logging.format)
    return create_app(config)
