"""The reference server as a hubbub plugin: it adds ``hubbub serve`` through the same
``register_commands`` hook any plugin uses, and what ``serve`` checks before it listens to
``hubbub config check``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from hubbub import hookimpl

if TYPE_CHECKING:
    from hubbub.runtime import Runtime


async def _check_before_serving(runtime: Runtime) -> None:
    """What ``hubbub serve`` checks once its runtime has started, for ``hubbub config check``:
    the app builds (every plugin route registers) and the exposure rule allows the host."""
    from hubbub_server.app import check_exposure, create_app

    create_app(runtime=runtime)
    await check_exposure(runtime, runtime.config.server.host)


@hookimpl
def register_commands(cli: click.Group) -> None:
    from hubbub.cli import add_config_check
    from hubbub_server.serve import serve

    cli.add_command(serve)
    add_config_check("serve", _check_before_serving)
