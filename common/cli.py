"""What every repedge command line shares: ``--version``, the log level option, and how a
``--broker`` URL with its credentials and TLS files becomes an endpoint."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path
from typing import Annotated

import typer

from common.endpoint import BrokerEndpoint, EndpointError
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


# From the environment too, so the password need not show in `ps` or the shell's history.
PasswordOption = Annotated[
    str | None, typer.Option(help="Broker password.", envvar="REPEDGE_MQTT_PASSWORD")
]
UsernameOption = Annotated[str | None, typer.Option(help="Broker user name.")]


def broker_endpoint(
    broker: str,
    username: str | None = None,
    password: str | None = None,
    cafile: Path | None = None,
    certfile: Path | None = None,
    keyfile: Path | None = None,
) -> BrokerEndpoint:
    """The broker to connect to; a bad --broker (or TLS file) is a usage error (exit 2)."""
    try:
        return BrokerEndpoint.parse(broker, username, password, cafile, certfile, keyfile)
    except EndpointError as exc:
        raise typer.BadParameter(str(exc), param_hint="--broker") from None


# Checked where the settings object is built (its field's choices), so a bad level is the
# same one-line error as any other bad setting.
LogLevel = Annotated[str, typer.Option(help=f"Log level: {', '.join(LOG_LEVELS)}.")]
