"""``hubbub serve``: run the reference server under uvicorn.

One worker (the default) runs in this process: the runtime starts before the server accepts
connections, so configuration and startup problems are one-line errors. On SIGINT/SIGTERM the
whole stop fits in ``[server] grace_period`` (:mod:`hubbub_server.shutdown`): the server stops
accepting, answers new requests on open connections with 503 and ``Connection: close``, ends
event streams with a final ``shutdown`` event, lets requests in flight and replies in progress
finish until the cut (streamed completions still running then end with a final chunk and
``[DONE]``, replies are stopped), then stops the runtime with what remains.

Several workers (``--workers``) each run their own runtime through :func:`worker_app`, loading
the same file with the same command-line options, and stop the same way. They need a shared
event log and cache (:func:`hubbub.config.workers.check_workers`: refused otherwise), and their
``/metrics`` add up (prometheus-client's multiprocess mode, in a directory made for the run:
the one environment variable ``serve`` sets, because prometheus-client reads it at import).

Every connection goes through :class:`~hubbub_server.connections.HubbubHttpProtocol` (uvicorn's
httptools protocol with the ``[server]`` connection limits: header timeout, header size, body
rate, connection cap, keep-alive timeout), on uvloop when it is installed, in one process as in
workers. The soft open-files limit is raised, within the hard limit, to fit
``max_connections``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from types import FrameType
from typing import Any

import click
import uvicorn
from litestar import Litestar
from prometheus_client.multiprocess import mark_process_dead
from uvicorn.server import HANDLED_SIGNALS
from uvicorn.supervisors.multiprocess import Multiprocess

from hubbub.cli import cli_errors, config_option
from hubbub.config import Config, load_config
from hubbub.config.workers import check_workers
from hubbub.log import configure_logging
from hubbub.runtime import Runtime
from hubbub_server.app import check_exposure, create_app
from hubbub_server.connections import ConnectionConfig, ConnectionLimits
from hubbub_server.fdlimit import raise_open_files_limit
from hubbub_server.metrics import MULTIPROCESS_DIR
from hubbub_server.shutdown import Shutdown, ShutdownPlan

__all__ = ["serve", "worker_app"]

logger = logging.getLogger("hubbub.server")


def _begin_stop(loop: asyncio.AbstractEventLoop | None, state: Any, at: float) -> None:
    """From a signal handler: begin the app's stop (:meth:`Shutdown.begin`) on its event loop,
    where the drain signal and the replies live, as of ``at`` (when the signal came)."""
    if loop is None or loop.is_closed():
        return
    shutdown: Shutdown = state.shutdown
    with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
        loop.call_soon_threadsafe(lambda: shutdown.begin(state.runtime, at=at))


class _DrainingServer(uvicorn.Server):
    """A uvicorn server whose stop follows the app's :class:`~hubbub_server.shutdown.Shutdown`:
    it begins as soon as a stop signal arrives, and connections are waited for only until the
    plan's cut (plus a moment for final chunks), so that stopping the runtime fits after it."""

    def __init__(
        self, config: uvicorn.Config, state: Any, on_listening: Callable[[int], None]
    ) -> None:
        super().__init__(config)
        self.app_state = state
        self.on_listening = on_listening
        self._loop: asyncio.AbstractEventLoop | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        try:
            await super().startup(sockets)
        except SystemExit:  # uvicorn's answer to a failed bind; it has logged the reason
            self.should_exit = True
            return
        if self.started:
            self.on_listening(self.servers[0].sockets[0].getsockname()[1])

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Like uvicorn's, minus re-raising the signal afterwards: that would kill the process
        before the runtime stops. A graceful stop exits 0."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        original = {sig: signal.signal(sig, self.handle_exit) for sig in HANDLED_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        _begin_stop(self._loop, self.app_state, time.monotonic())
        super().handle_exit(sig, frame)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        shutdown: Shutdown = self.app_state.shutdown
        shutdown.begin(self.app_state.runtime)  # begun by the signal, unless it stops otherwise
        wait = max(0.0, shutdown.plan.connections_at - time.monotonic())
        self.config.timeout_graceful_shutdown = wait  # type: ignore[assignment]  # a float works
        await super().shutdown(sockets)


def _describe(runtime: Runtime, url: str) -> None:
    config = runtime.config
    lines = [f"hubbub serving on {url}  (OpenAPI: {url}/schema, health: {url}/health/ready)"]
    registries = runtime.plugins.registries()
    for spec in runtime.kinds.values():  # what the configuration selects, kind by kind
        if spec.section is None:
            continue
        names = spec.selected(config, registries[spec.name].names())
        if spec.selection == "one" and len(names) > 1:
            lines.append(f"  {spec.name}: {names[0]}, fallback {names[1]}")
        else:
            lines.append(f"  {spec.name}: {', '.join(names) or 'none'}")
    lines.append(
        f"  models: {', '.join(m.id for m in runtime.llm.models())} "
        f"(default {config.llm.default_model})"
    )
    lines.append(f"  data: {config.data_dir}")
    _announce(config, lines)


def _announce(config: Config, lines: list[str]) -> None:
    """Tell the operator what is served: lines on stderr, or one log record (the first line,
    the others as ``details``) when the log is JSON, whose every line must be one object."""
    if config.logging.format == "json":
        logger.info("%s", lines[0].strip(), extra={"details": [x.strip() for x in lines[1:]]})
    else:
        for line in lines:
            click.echo(line, err=True)


def _check_port(host: str, port: int) -> None:
    """Fail early, in one line, when the address cannot be bound (uvicorn binds after the
    runtime has started, and reports this with a traceback and exit code 3)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host.strip("[]"), port))
        except OSError as exc:
            raise click.ClickException(
                f"cannot listen on {host}:{port}: {exc.strerror or exc}"
            ) from None


async def _serve_one(config: Config, log_level: str) -> None:
    _check_port(config.server.host, config.server.port)
    app = create_app(config)
    runtime: Runtime = app.state.runtime
    try:
        await runtime.start()
        await check_exposure(runtime, config.server.host)
    except BaseException:
        await runtime.stop()
        raise
    server = _DrainingServer(
        ConnectionConfig(
            app,
            host=config.server.host,
            port=config.server.port,
            log_level=log_level.lower(),
            access_log=False,
            log_config=None,
            timeout_graceful_shutdown=int(max(1, config.server.grace_period)),
            lifespan="on",
            limits=ConnectionLimits.from_config(config.server),
            trusted_proxies=config.server.trusted_proxies,
        ),
        app.state,
        on_listening=lambda port: _describe(runtime, f"http://{config.server.host}:{port}"),
    )
    # Everything built so far lives as long as the process: keep the garbage collector from
    # scanning it again and again while serving.
    gc.collect()
    gc.freeze()
    try:
        await server.serve()
    finally:
        shutdown: Shutdown = app.state.shutdown
        await runtime.stop(deadline=shutdown.plan.exit_at if shutdown.begun else None)
    if not server.started:
        raise click.ClickException(f"could not listen on {config.server.host}:{config.server.port}")


_WORKER_LOAD: dict[str, Any] = {}
"""How a worker process loads its configuration: set from :class:`_WorkerConfig` as the worker
starts, read by :func:`worker_app`."""


class _WorkerConfig(ConnectionConfig):
    """uvicorn's settings and the connection limits, plus how each worker loads the same
    configuration (the file and the command-line overrides). uvicorn pickles it into every
    worker process, so nothing is passed through the process environment."""

    def __init__(
        self, *args: Any, hubbub_source: str | None, hubbub_overrides: dict[str, Any], **kw: Any
    ) -> None:
        super().__init__(*args, **kw)
        self.hubbub_source = hubbub_source
        self.hubbub_overrides = hubbub_overrides

    def load(self) -> None:
        _WORKER_LOAD.update(source=self.hubbub_source, overrides=self.hubbub_overrides)
        super().load()
        app = _WORKER_LOAD.pop("app", None)
        if app is not None:
            _begin_stop_on_signals(app.state)


def _begin_stop_on_signals(state: Any) -> None:
    """In a worker (uvicorn's own server, loading the app from inside its signal handlers):
    chain the stop-signal handlers the server has installed, so that the app's stop begins as
    the signal arrives, as in one process. The server waits for connections for the plan's
    share of the grace period (``timeout_graceful_shutdown``, set by :func:`_serve_workers`)."""
    if threading.current_thread() is not threading.main_thread():
        return
    loop = asyncio.get_running_loop()
    for sig in HANDLED_SIGNALS:
        previous = signal.getsignal(sig)
        if not callable(previous):
            continue

        def chained(signum: int, frame: FrameType | None, previous: Any = previous) -> None:
            _begin_stop(loop, state, time.monotonic())
            previous(signum, frame)

        signal.signal(sig, chained)


def worker_app() -> Litestar:
    """The app of one worker process (``serve --workers N`` or ``--reload``): the configuration
    the parent loaded, read again from the same file with the same command-line overrides."""
    config = load_config(_WORKER_LOAD.get("source"), overrides=_WORKER_LOAD.get("overrides"))
    configure_logging(config.logging.level, config.logging.format)
    app = create_app(config)
    _WORKER_LOAD["app"] = app
    return app


class _Supervisor(Multiprocess):
    """uvicorn's supervisor of worker processes, which also retires the metrics of a worker
    that died or was replaced (its open streams and health stop counting; its counters still
    count)."""

    def __init__(self, config: uvicorn.Config, sockets: list[socket.socket], metrics: str) -> None:
        super().__init__(config, sockets)
        self.metrics_dir = metrics

    def _retire(self, before: set[int | None]) -> None:
        for pid in before - {process.pid for process in self.processes}:
            if pid is not None:
                mark_process_dead(pid, self.metrics_dir)  # type: ignore[no-untyped-call]

    def keep_subprocess_alive(self) -> None:
        before = {process.pid for process in self.processes}
        super().keep_subprocess_alive()
        self._retire(before)

    def handle_signals(self) -> None:
        before = {process.pid for process in self.processes}
        super().handle_signals()
        self._retire(before)


@contextlib.contextmanager
def _shared_metrics() -> Iterator[str]:
    """A fresh directory where every worker keeps its metrics (prometheus-client's
    multiprocess mode), removed when the server stops. prometheus-client reads where it is
    from ``$PROMETHEUS_MULTIPROC_DIR`` when a worker imports it, and has no other way to be
    told: set here, before the workers start, and restored after."""
    previous = os.environ.get(MULTIPROCESS_DIR)
    with tempfile.TemporaryDirectory(prefix="hubbub-metrics-") as path:
        os.environ[MULTIPROCESS_DIR] = path
        try:
            yield path
        finally:
            if previous is None:
                os.environ.pop(MULTIPROCESS_DIR, None)
            else:
                os.environ[MULTIPROCESS_DIR] = previous


def _serve_workers(config: Config, overrides: dict[str, Any], *, reload: bool) -> None:
    """Run several worker processes (or one that reloads on code changes) on one socket."""
    from uvicorn.supervisors import ChangeReload

    worker_config = _WorkerConfig(
        "hubbub_server.serve:worker_app",
        factory=True,
        host=config.server.host,
        port=config.server.port,
        workers=None if reload else config.server.workers,
        reload=reload,
        log_level=config.logging.level.lower(),
        access_log=False,
        log_config=None,  # uvicorn's lines go through hubbub's handler (worker_app sets it up)
        # how long each worker waits for its connections once its stop began (a float works)
        timeout_graceful_shutdown=ShutdownPlan.from_config(config).connections_after,
        hubbub_source=config.source,
        hubbub_overrides=overrides,
        limits=ConnectionLimits.from_config(config.server),
        trusted_proxies=config.server.trusted_proxies,
    )
    server = uvicorn.Server(worker_config)
    sock = worker_config.bind_socket()
    if reload:
        ChangeReload(worker_config, target=server.run, sockets=[sock]).run()
        return
    with _shared_metrics() as metrics:
        _Supervisor(worker_config, [sock], metrics).run()


def _run(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` on uvloop when it is installed (as uvicorn's own runner does), else on the
    standard event loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        factory = None
    else:
        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main)


async def _preflight(config: Config) -> None:
    """Start and stop a runtime once: configuration, plugins, components and the exposure rule
    are checked before any worker starts."""
    async with Runtime.from_config(config) as runtime:
        await check_exposure(runtime, config.server.host)


@click.command()
@config_option
@click.option("--host", default=None, help="Address to bind (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port to listen on (default 8000).")
@click.option("--workers", type=int, default=None, help="Worker processes (default 1).")
@click.option(
    "--log-level",
    default=None,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], case_sensitive=False),
)
@click.option("--reload", is_flag=True, help="Restart when code changes (development).")
def serve(
    config_path: str | None,
    host: str | None,
    port: int | None,
    workers: int | None,
    log_level: str | None,
    reload: bool,
) -> None:
    """Run the reference server."""
    options: dict[str, Any] = {
        "server.host": host,
        "server.port": port,
        "server.workers": workers,
        "logging.level": log_level.upper() if log_level else None,
    }
    overrides = {path: value for path, value in options.items() if value is not None}
    with cli_errors():
        config = load_config(config_path, overrides=overrides)
    configure_logging(config.logging.level, config.logging.format)
    raise_open_files_limit(config.server.max_connections)  # workers inherit it
    if config.server.workers > 1 or reload:
        with cli_errors():  # fail here, once and in one line, rather than in every worker
            if not reload:  # workers that would not share events and leases are refused
                check_workers(config, option=f"--workers {workers}" if workers else None)
            asyncio.run(_preflight(config))
        mode = "reloading on code changes" if reload else f"{config.server.workers} workers"
        url = f"http://{config.server.host}:{config.server.port}"
        _announce(config, [f"hubbub serving on {url} ({mode})"])
        _serve_workers(config, overrides, reload=reload)
        return
    try:
        with cli_errors():
            _run(_serve_one(config, config.logging.level))
    except KeyboardInterrupt:  # a second Ctrl-C
        sys.exit(130)
