"""The reference server as a hubbub plugin: it adds ``hubbub serve`` through the same
``register_commands`` hook any plugin uses."""

from __future__ import annotations

import click

from hubbub import hookimpl


@hookimpl
def register_commands(cli: click.Group) -> None:
    from hubbub_server.serve import serve

    cli.add_command(serve)
