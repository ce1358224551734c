"""What every repedge command line shares: ``--version`` and the log level option."""

from __future__ import annotations

from importlib import metadata
from typing import Annotated

import typer

from common.settings import LOG_LEVELS


def repedge_version() -> str:
    try:
        return metadata.version("repedge")
    except metadata.PackageNotFoundError:  # a source tree that is not installed
        return "unknown (not installed)"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"repedge {repedge_version()}")
        raise typer.Exit()


VersionOption = Annotated[
    bool,
    typer.Option(
        "--version",
        is_eager=True,
        callback=_print_version,
        help="Print repedge's version and exit.",
    ),
]


# Checked where the settings object is built (its field's choices), so a bad level is the
# same one-line error as any other bad setting.
LogLevel = Annotated[str, typer.Option(help=f"Log level: {', '.join(LOG_LEVELS)}.")]
