"""Auth method ``api_key``: bearer API keys, and the ``hubbub keys`` commands that manage them.

The keys themselves live in the account store, where every process and host sharing it sees
them (:class:`hubbub.auth.apikeys.ApiKeys`, the runtime's ``api_keys``): this plugin is the thin
adapter that lets the authenticator try them, and the command line that makes them. A key reads
``hbk_<id>_<secret>``; a well-formed key that is unknown, revoked or expired is refused outright,
any other bearer token is left to the next auth method.

**Upgrading**: at start, the keys of the old key database (``api_keys.sqlite3`` in the data
directory, or ``[plugins.api_keys] path``) are imported into the account store once and the file
is renamed ``api_keys.sqlite3.imported`` (:mod:`hubbub_plugins.api_keys_import`): keys handed out
before keep working.

    hubbub keys create --user alice --name laptop   # prints the key alone on its last line
    hubbub keys create --user ci --model offline/echo --scope chat --expires-in 30
    hubbub keys create --user ci --tool 'basic.*' --tool time.get_current_time
    hubbub keys list [--user alice]
    hubbub keys revoke <id>

Each command starts a runtime from the configuration, so it works on whatever account store the
servers use, and a revocation reaches running servers (at once through a shared event log; within
``[sessions] check_interval`` otherwise).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import click
import msgspec

from hubbub import hookimpl
from hubbub.auth import check_user_name
from hubbub.auth.apikeys import METHOD, ApiKeyInfo, ApiKeys, check_label
from hubbub.auth.roles import ADMIN, USER
from hubbub.auth.scopes import check_models, check_scopes, check_tools
from hubbub.contracts import Credentials
from hubbub.errors import ComponentError, InvalidRequestError
from hubbub.models import Health, Principal
from hubbub_plugins.api_keys_import import import_old_keys

if TYPE_CHECKING:
    from hubbub.registry import ComponentContext, Registrar
    from hubbub.runtime import Runtime

T = TypeVar("T")

PLUGIN = "api_keys"
OLD_DATABASE = "api_keys.sqlite3"
"""The old key database's name in the data directory (imported once, then renamed)."""


class ApiKeySettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Settings of the ``api_keys`` plugin (``[plugins.api_keys]``)."""

    path: str | None = None
    """Where the old key database was kept, if not ``api_keys.sqlite3`` in the data directory:
    its keys are imported into the account store once (keys now live there)."""
    revocation_poll_interval: Annotated[float, msgspec.Meta(ge=0.05, le=60)] | None = None
    """Obsolete and ignored (a warning says so): revocations now reach every process through
    the event log, and the account store is read again after ``[sessions] check_interval``.
    Accepted so that older configuration files still load; remove it."""


class ApiKeyMethod:
    """The ``api_key`` :class:`hubbub.contracts.AuthMethod`: the runtime's
    :class:`~hubbub.auth.apikeys.ApiKeys`, tried by the authenticator.

    :param keys: the runtime's API keys.
    :param old_database: the old key database to import at start (if it exists).
    :param log: where the import is logged.
    """

    def __init__(
        self, keys: ApiKeys, *, old_database: Path | None = None, log: logging.Logger | None = None
    ) -> None:
        self.keys = keys
        self.old_database = old_database
        self._log = log or logging.getLogger(f"hubbub.plugins.{PLUGIN}")

    async def start(self) -> None:
        """Import the old key database if there is one, then refuse to start
        (:class:`~hubbub.auth.CredentialsLostError`) when credentials were set up for this data
        directory but the account store holds none."""
        if self.old_database is not None:
            await import_old_keys(self.old_database, self.keys, self._log)
        await self.keys.ensure_not_lost()

    async def health(self) -> Health:
        return Health(detail=await self.keys.describe())

    async def aclose(self) -> None:
        """Nothing to release: the keys are the runtime's."""

    async def is_provisioned(self) -> bool:
        """Whether any key was ever made (revoked ones count: revoking the last key must not
        re-open local mode); :class:`~hubbub.auth.CredentialsLostError` when the account store
        lost every credential."""
        if await self.keys.exists():
            return True
        await self.keys.ensure_not_lost()
        return False

    async def authenticate(self, credentials: Credentials) -> Principal | None:
        if credentials.bearer is None:
            return None
        return await self.keys.verify(credentials.bearer)


def _build(context: ComponentContext[ApiKeySettings]) -> ApiKeyMethod:
    settings = context.settings or ApiKeySettings()
    if settings.revocation_poll_interval is not None:
        context.logger.warning(
            "[plugins.api_keys] revocation_poll_interval is obsolete and ignored: remove it "
            "(revocations reach every process through the event log)"
        )
    try:
        keys = context.api_keys
    except RuntimeError:
        raise ComponentError(
            "the api_key method keeps keys in the account store, and none serves "
            "(no plugin registers one, or [accounts] backend names none)"
        ) from None
    old = Path(settings.path) if settings.path else context.data_dir / OLD_DATABASE
    return ApiKeyMethod(keys, old_database=old, log=context.logger)


@hookimpl
def register_auth_methods(register: Registrar) -> None:
    register(
        METHOD,
        _build,
        settings=ApiKeySettings,
        description="bearer API keys in the account store (hubbub keys create)",
    )


# -- the commands -----------------------------------------------------------------------------


def _with_keys(config_path: str | None, action: Callable[[Runtime], Awaitable[T]]) -> T:
    from hubbub.cli import run_with_accounts

    return run_with_accounts(config_path, action)


def _usage(option: str, check: Callable[[], object]) -> None:
    """Run ``check``; an :class:`InvalidRequestError` becomes a usage error (one line, exit
    code 2) naming ``option``."""
    from hubbub.cli import UsageProblem

    try:
        check()
    except InvalidRequestError as exc:
        raise UsageProblem(f"{option}: {exc}") from None


def _state(info: ApiKeyInfo, now: float) -> str:
    if info.revoked_at is not None:
        return "revoked"
    if info.expires_at is not None and info.expires_at <= now:
        return "expired"
    return "active"


def _when(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%MZ")


def _keys() -> None:
    """Create, list and revoke API keys."""


@hookimpl
def register_commands(cli: click.Group) -> None:
    from hubbub.cli import config_option

    existing = cli.commands.get("keys")  # hubbub's own group (with rotate-signing), or ours
    keys = existing if isinstance(existing, click.Group) else cli.group(name="keys")(_keys)

    @keys.command()
    @click.option("--user", required=True, help="The principal the key authenticates as.")
    @click.option("--name", default="", help="A label to recognise the key by.")
    @click.option("--admin", is_flag=True, help="Give the key the admin role.")
    @click.option(
        "--scope", "scopes", multiple=True, help="Restrict the key to this scope (repeatable)."
    )
    @click.option(
        "--model", "models", multiple=True, help="Restrict the key to this model (repeatable)."
    )
    @click.option(
        "--tool",
        "tools",
        multiple=True,
        help="Restrict the key to this tool, or pattern of tools such as 'basic.*' (repeatable).",
    )
    @click.option(
        "--expires-in",
        type=click.FloatRange(min=0, min_open=True, max=36_500),
        default=None,
        help="Days until the key stops working (default: never).",
    )
    @config_option
    def create(
        user: str,
        name: str,
        admin: bool,
        scopes: tuple[str, ...],
        models: tuple[str, ...],
        tools: tuple[str, ...],
        expires_in: float | None,
        config_path: str | None,
    ) -> None:
        """Create a key; it is printed alone on the last line, and only this once."""
        _usage("--user", lambda: check_user_name(user))
        _usage("--name", lambda: check_label(name))
        _usage("--scope", lambda: check_scopes(scopes))
        _usage("--model", lambda: check_models(models))
        _usage("--tool", lambda: check_tools(tools))
        roles = (USER, ADMIN) if admin else (USER,)

        async def make(runtime: Runtime) -> tuple[ApiKeyInfo, str]:
            expires_at = None if expires_in is None else time.time() + expires_in * 86_400
            served = [model.id for model in runtime.llm.models()]
            return await runtime.api_keys.create(
                user,
                name=name,
                roles=roles,
                scopes=scopes,
                models=models,
                tools=tools,
                expires_at=expires_at,
                known_models=served,
            )

        info, key = _with_keys(config_path, make)
        click.echo(
            f"created API key {info.id} for {user}" + (f" ({name})" if name else ""), err=True
        )
        click.echo("store it now: it cannot be shown again", err=True)
        click.echo(key)

    @keys.command(name="list")
    @click.option("--user", default=None, help="Only this principal's keys.")
    @config_option
    def list_keys(user: str | None, config_path: str | None) -> None:
        """List keys, newest first (never their secrets): id, owner, state, name, then what
        restricts them."""
        if user is not None:
            _usage("--user", lambda: check_user_name(user))
        now = time.time()
        for info in _with_keys(config_path, lambda rt: rt.api_keys.list(user)):
            extras = []
            if info.models:
                extras.append("models=" + ",".join(info.models))
            if info.tools:
                extras.append("tools=" + ",".join(info.tools))
            if info.scopes:
                extras.append("scopes=" + ",".join(info.scopes))
            if ADMIN in info.roles:
                extras.append("admin")
            if info.expires_at is not None:
                extras.append("expires=" + _when(info.expires_at))
            line = f"{info.id}  {info.owner}  {_state(info, now)}  {info.name}".rstrip()
            click.echo("  ".join([line, *extras]))

    @keys.command()
    @click.argument("key_id")
    @config_option
    def revoke(key_id: str, config_path: str | None) -> None:
        """Revoke a key at once, on every server sharing the account store."""
        if not _with_keys(config_path, lambda rt: rt.api_keys.revoke(key_id)):
            raise click.ClickException(f"no active API key {key_id!r}")
        click.echo(f"revoked API key {key_id}")
