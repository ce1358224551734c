"""Sub-commands that live in other packages, imported only when they are run or listed.

`node bench` is the bench package's typer app: mounting it by module name keeps bench (and
everything it imports) out of `node start`, and keeps node from importing bench at all.
"""

from __future__ import annotations

import importlib

import click
import typer
from typer.core import TyperGroup

# sub-command -> "module:attribute" of a typer.Typer holding that one command.
LAZY_COMMANDS = {"bench": "bench.cli:app", "replay": "node.replay:app"}


class LazyCommandsGroup(TyperGroup):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*super().list_commands(ctx), *LAZY_COMMANDS]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = LAZY_COMMANDS.get(cmd_name)
        if target is None:
            return super().get_command(ctx, cmd_name)
        module, _, attribute = target.partition(":")
        command = typer.main.get_command(getattr(importlib.import_module(module), attribute))
        command.name = cmd_name
        return command
