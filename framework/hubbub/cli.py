"""The ``hubbub`` command line.

Core commands live here: ``version``, ``plugins``, ``config check|show|init``, ``store copy``,
``users add|passwd|disable|enable|list``, ``keys rotate-signing``. Plugins add more
through the ``register_commands`` hook (the reference server adds ``serve`` that way). A plugin
that fails to load or to add its commands is reported and skipped, so every other command, and
``hubbub plugins`` to see what is wrong, keeps working.

Exit codes: 0 success, 1 failure, 2 usage or configuration error.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import platform
import sys
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from hubbub.config import Config, encode_config, env_var, load_config
from hubbub.config.toml import dump_toml
from hubbub.config.workers import check_workers
from hubbub.errors import ConfigError, HubbubError, PluginError
from hubbub.plugins import Plugins, load_plugins

if TYPE_CHECKING:
    from hubbub.runtime import Runtime

__all__ = [
    "ConfigProblem",
    "Loaded",
    "UsageProblem",
    "add_config_check",
    "cli",
    "cli_errors",
    "config_option",
    "load_for_cli",
    "main",
]

F = TypeVar("F", bound=Callable[..., Any])

_CONFIG_CHECKS: dict[str, Callable[[Runtime], Awaitable[None]]] = {}


def add_config_check(name: str, check: Callable[[Runtime], Awaitable[None]]) -> None:
    """Have ``hubbub config check`` also run ``await check(runtime)`` on the runtime it starts:
    what a plugin's command checks before it starts serving (``hubbub serve`` adds its own this
    way, from ``register_commands``). ``check`` raises a :class:`~hubbub.errors.HubbubError` to
    report a problem. Adding a check under the same ``name`` again replaces it."""
    _CONFIG_CHECKS[name] = check


class ConfigProblem(click.ClickException):
    """A configuration error: every issue on its own line, exit code 2."""

    exit_code = 2

    def __init__(self, error: ConfigError) -> None:
        super().__init__(str(error))
        self.error = error

    def show(self, file: Any = None) -> None:
        for issue in self.error.issues:
            click.echo(f"error: {issue}", err=True)


class UsageProblem(click.ClickException):
    """A usage error explained in one line (without click's usage block): exit code 2."""

    exit_code = 2


def config_option(func: F) -> F:
    """The ``--config FILE`` option every command that reads the configuration takes."""
    return click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False),
        default=None,
        help="Configuration file (default: $HUBBUB_CONFIG, else ./hubbub.toml if present).",
    )(func)


@dataclass
class Loaded:
    """A validated configuration, its plugins, and each plugin's decoded settings."""

    config: Config
    plugins: Plugins
    settings: dict[str, Any]


def load_for_cli(config_path: str | None) -> Loaded:
    """Load the configuration and its plugins, validate both, and turn problems into CLI errors
    (exit 2 for configuration, 1 for plugins)."""
    from hubbub.runtime.selection import check_config

    with cli_errors():
        config = load_config(config_path)
        plugins = load_plugins(disabled=config.plugins.disabled, env=config.env)
        plugins.raise_for_failures()
        settings = check_config(config, plugins)
    return Loaded(config, plugins, settings)


@contextlib.contextmanager
def cli_errors(config: Config | None = None) -> Iterator[None]:
    """Turn hubbub's errors into one-line command-line errors: configuration problems exit 2,
    the others 1. With ``config``, configuration problems that do not say where they are yet
    are pointed at their file and line."""
    try:
        yield
    except ConfigError as exc:
        raise ConfigProblem(config.locate(exc) if config is not None else exc) from None
    except HubbubError as exc:
        raise click.ClickException(str(exc)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="hubbub", message="hubbub %(version)s")
def cli() -> None:
    """Hubbub: a plugin-based framework for conversational LLM back ends."""


@cli.command()
def version() -> None:
    """Show the versions of hubbub and Python."""
    from hubbub import __version__

    click.echo(f"hubbub {__version__}")
    click.echo(f"python {platform.python_version()} ({sys.executable})")


@cli.command(name="plugins")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")
@config_option
def plugins_command(as_json: bool, config_path: str | None) -> None:
    """List plugins: name, version, source, hooks and what each provides."""
    try:
        disabled = load_config(config_path).plugins.disabled
    except ConfigError:
        disabled = []  # show the plugins anyway; `hubbub config check` explains the config
    plugins = load_plugins(disabled=disabled)
    provides: dict[str, list[str]] = {}
    descriptions: dict[str, str] = {}
    registration_error = None
    try:
        for kind, registry in plugins.registries().items():
            for registration in registry:
                label = f"{kind}:{registration.name}"
                provides.setdefault(registration.plugin, []).append(label)
                descriptions[label] = registration.description
    except PluginError as exc:
        registration_error = str(exc)
    rows = [
        {
            "name": info.name,
            "version": info.version,
            "source": info.source,
            "distribution": info.distribution,
            "hooks": info.hooks,
            "provides": provides.get(info.name, []),
            "error": info.error,
        }
        for info in sorted(plugins.info.values(), key=lambda i: (i.source != "built-in", i.name))
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        for row in rows:
            click.echo(f"{row['name']} {row['version'] or ''} ({row['source']})".replace("  ", " "))
            if row["error"]:
                click.echo(f"  error: {row['error']}")
            if row["hooks"]:
                click.echo(f"  hooks: {', '.join(row['hooks'])}")
            for label in provides.get(str(row["name"]), []):
                described = f": {descriptions[label]}" if descriptions[label] else ""
                click.echo(f"  provides {label}{described}")
        if not rows:
            click.echo("no plugins loaded (is HUBBUB_LOAD_PLUGINS set to an empty list?)")
    if registration_error:
        click.echo(f"error: {registration_error}", err=True)
    if registration_error or plugins.failures:
        sys.exit(1)


@cli.group(name="config")
def config_group() -> None:
    """Check, show or create the configuration."""


@config_group.command(name="check")
@config_option
def config_check(config_path: str | None) -> None:
    """Validate the configuration against the installed plugins, then start and stop what it
    configures, as ``hubbub serve`` does before it listens: a store that cannot open, a default
    model no provider serves or a refused exposure is reported too. Writes what starting
    writes (the data directory and its databases)."""
    loaded = load_for_cli(config_path)
    config = loaded.config
    with cli_errors(config):
        check_workers(config)  # [server] workers above 1 needs shared backends
        asyncio.run(_start_and_stop(loaded))
    where = config.source or "built-in defaults"
    if config.overrides:
        variables = ", ".join(env_var(path) for path in config.overrides)
        where += f" with environment overrides ({variables})"
    click.echo(f"ok: {where} is valid")


async def _start_and_stop(loaded: Loaded) -> None:
    """Start a runtime from ``loaded``, run the checks commands added, and stop it. Its log
    stays quiet: a problem is reported once, as the error it raises."""
    from hubbub.runtime import Runtime

    logging.disable(logging.ERROR)
    try:
        async with Runtime(loaded.config, loaded.plugins, loaded.settings) as runtime:
            for check in list(_CONFIG_CHECKS.values()):
                await check(runtime)
    finally:
        logging.disable(logging.NOTSET)


@config_group.command(name="show")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of TOML.")
@config_option
def config_show(as_json: bool, config_path: str | None) -> None:
    """Print the effective configuration (file, environment and defaults), secrets redacted."""
    loaded = load_for_cli(config_path)
    data = encode_config(loaded.config, loaded.settings)
    click.echo(json.dumps(data, indent=2) if as_json else dump_toml(data), nl=as_json)


@config_group.command(name="init")
@click.argument("path", type=click.Path(dir_okay=False), default="hubbub.toml")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def config_init(path: str, force: bool) -> None:
    """Write a commented example configuration covering every section."""
    from hubbub.config.reference import render_example_toml
    from hubbub.runtime.selection import settings_types

    target = Path(path)
    if target.exists() and not force:
        raise UsageProblem(f"{path} exists; pass --force to overwrite it")
    plugins = load_plugins()
    try:
        settings = settings_types(plugins.registries())
    except PluginError as exc:  # still write the core sections
        click.echo(f"warning: plugin settings left out: {exc}", err=True)
        settings = {}
    target.write_text(render_example_toml(settings), encoding="utf-8")
    click.echo(f"wrote {path}")


@cli.group(name="store")
def store_group() -> None:
    """Work on the memory store (conversations, messages, summaries, memories)."""


@store_group.command(name="copy")
@click.option(
    "--from",
    "source_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="Configuration file whose [memory] store is copied.",
)
@click.option(
    "--to",
    "target_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="Configuration file whose [memory] store receives the copy.",
)
@click.option(
    "--batch-size",
    default=500,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="Items read and written at a time.",
)
def store_copy(source_path: str, target_path: str, batch_size: int) -> None:
    """Copy every conversation (with its messages and summary) and every memory from the
    memory store configured in --from into the one configured in --to, keeping ids,
    timestamps and order. What the target holds already is skipped, so running it again
    copies only what is new (and what changed in the source since: a later conversation or
    summary replaces the older copy). Only the two stores start, each as `hubbub serve`
    would build it from its file (never its fallback); copying a store onto itself is
    refused."""
    from hubbub.store_copy import SameStoreError, copy_configured

    source, target = load_for_cli(source_path), load_for_cli(target_path)

    def progress(report: Any) -> None:
        if report.owners % 100 == 0:
            done = report.conversations
            seen = done.copied + done.updated + done.skipped
            click.echo(f"{report.owners} owners, {seen} conversations so far...", err=True)

    with cli_errors():
        try:
            report = asyncio.run(
                copy_configured(
                    (source.config, source.plugins, source.settings),
                    (target.config, target.plugins, target.settings),
                    batch_size=batch_size,
                    progress=progress,
                )
            )
        except SameStoreError as exc:  # a usage problem: exit code 2
            raise UsageProblem(f"--from and --to: {exc}") from None
    click.echo(f"copied {source.config.source} -> {target.config.source}")
    for line in report.lines():
        click.echo(f"  {line}")


# -- accounts: hubbub users ..., hubbub keys rotate-signing --------------------------------

T = TypeVar("T")


def run_with_accounts(config_path: str | None, action: Callable[[Runtime], Awaitable[T]]) -> T:
    """Run ``action(runtime)`` in a runtime started from the configuration (its log quiet:
    problems are reported once, as the error), for commands that change accounts, sessions or
    keys on whatever store the servers use; hubbub's errors become one line, exit code 1 (2
    for the configuration). For plugins' commands too (``hubbub keys create``)."""
    from hubbub.runtime import Runtime

    loaded = load_for_cli(config_path)

    async def main() -> T:
        logging.disable(logging.ERROR)
        try:
            async with Runtime(loaded.config, loaded.plugins, loaded.settings) as runtime:
                if not runtime.has_accounts:
                    raise click.ClickException(
                        "users, sessions and API keys live in the account store, and none is "
                        "configured ([accounts] backend)"
                    )
                return await action(runtime)
        finally:
            logging.disable(logging.NOTSET)

    with cli_errors(loaded.config):
        return asyncio.run(main())


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise click.UsageError("--password-stdin: no password on standard input")
        return password
    if not sys.stdin.isatty():
        raise click.UsageError("standard input is not a terminal: use --password-stdin")
    value: str = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    return value


@cli.group(name="users")
def users_group() -> None:
    """Local accounts (the ``local`` sign-in method)."""


@users_group.command(name="add")
@click.argument("name")
@click.option("--admin", is_flag=True, help="Give the account the admin role.")
@click.option("--email", default=None, help="The account's e-mail address.")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@click.option("--no-password", is_flag=True, help="No password (no password login).")
@config_option
def users_add(
    name: str,
    admin: bool,
    email: str | None,
    password_stdin: bool,
    no_password: bool,
    config_path: str | None,
) -> None:
    """Create the account NAME."""
    password = None if no_password else _read_password(password_stdin)
    run_with_accounts(
        config_path, lambda rt: rt.users.add(name, password, admin=admin, email=email)
    )
    click.echo(f"created user {name}" + (" (admin)" if admin else ""))


@users_group.command(name="passwd")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@config_option
def users_passwd(name: str, password_stdin: bool, config_path: str | None) -> None:
    """Set NAME's password; their sessions end."""
    password = _read_password(password_stdin)

    async def change(runtime: Runtime) -> int:
        return (await runtime.admin.update(name, password=password))[1]

    ended = run_with_accounts(config_path, change)
    click.echo(f"password of {name} changed; {ended} sessions ended")


@users_group.command(name="disable")
@click.argument("name")
@config_option
def users_disable(name: str, config_path: str | None) -> None:
    """Disable NAME: no more logins; their sessions end."""

    async def disable(runtime: Runtime) -> int:
        return (await runtime.admin.update(name, disabled=True))[1]

    ended = run_with_accounts(config_path, disable)
    click.echo(f"disabled user {name}; {ended} sessions ended")


@users_group.command(name="enable")
@click.argument("name")
@config_option
def users_enable(name: str, config_path: str | None) -> None:
    """Enable NAME again."""
    run_with_accounts(config_path, lambda rt: rt.admin.update(name, disabled=False))
    click.echo(f"enabled user {name}")


@users_group.command(name="list")
@config_option
def users_list(config_path: str | None) -> None:
    """List the accounts (never their password hashes)."""
    for user in run_with_accounts(config_path, lambda rt: rt.users.list()):
        state = "disabled" if user.disabled else "active"
        roles = ",".join(sorted(user.roles))
        password = "password" if user.password_hash else "no password"
        click.echo(f"{user.id}  {roles}  {state}  {password}")


@cli.group(name="keys")
def keys_group() -> None:
    """API keys and the keys that sign access tokens."""


@keys_group.command(name="rotate-signing")
@click.option(
    "--retire-after",
    type=click.FloatRange(min=0),
    default=None,
    help="Seconds the current key keeps verifying (default: the access tokens' lifetime "
    "plus the allowed clock skew).",
)
@config_option
def rotate_signing(retire_after: float | None, config_path: str | None) -> None:
    """Add a new signing key; the current one verifies until it retires."""
    from hubbub.auth.keyfiles import ROTATION_DELAY, KeyringSource

    loaded = load_for_cli(config_path)
    sessions = loaded.config.sessions
    keep = retire_after if retire_after is not None else sessions.access_token_ttl + sessions.leeway
    with cli_errors(loaded.config):
        source = KeyringSource(loaded.config)
        existed = (path := source.file_path()) is not None and path.exists()
        rotated = source.rotate(retire_after=keep)
    newest = max(rotated.keys.values(), key=lambda key: key.created_at)
    if not existed:
        click.echo(f"signing keyring created in {path} (key {newest.kid})")
        return
    click.echo(
        f"signing key {newest.kid} added in {path}: it signs in {ROTATION_DELAY:.0f} s, once "
        f"every server has loaded it (they look every 5 s); the keys before it verify for "
        f"{keep:.0f} s more"
    )


def _add_plugin_commands(group: click.Group) -> None:
    try:
        disabled = load_config().plugins.disabled
    except ConfigError:
        disabled = []
    # A plugin that failed to load is not reported here: every command that needs the plugins
    # says so itself (serve, config check, keys: an error; plugins: its listing), once.
    plugins = load_plugins(disabled=disabled)
    for plugin_name in plugins.implementers("register_commands"):
        try:
            plugins.call_one(plugin_name, "register_commands", cli=group)
        except PluginError as exc:
            click.echo(f"warning: {exc}", err=True)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``hubbub`` console script."""
    _add_plugin_commands(cli)
    cli.main(args=argv, prog_name="hubbub")
