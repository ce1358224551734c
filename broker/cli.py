"""`broker`: run repedge's Mosquitto broker and manage its users."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from broker.config import (
    BrokerConfig,
    MosquittoMissing,
    default_data_dir,
    find_program,
    write_config,
)
from broker.users import UserError, add_user, list_users, remove_user

app = typer.Typer(
    help=(
        "Run the MQTT broker (Mosquitto) that repedge nodes and clients talk to, with\n"
        "repedge's settings: persistence on, large per-client queues, localhost only.\n\n"
        "Quick start:  broker start   (then, in another shell:  node start --model BUNDLE)"
    ),
    no_args_is_help=True,
    add_completion=False,
)
users_app = typer.Typer(
    help="Manage the users allowed in when the broker runs with --auth.",
    no_args_is_help=True,
)
app.add_typer(users_app, name="users")

DataDir = Annotated[
    Path | None,
    typer.Option(
        help="Folder for the rendered config, the persistence database, passwd and acl "
        "files. Default: ~/.local/state/repedge/broker.",
        show_default=False,
    ),
]


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code)


@app.command()
def start(
    port: Annotated[int, typer.Option(help="TCP port for MQTT.")] = 1883,
    host: Annotated[
        str, typer.Option(help="Address the MQTT listener binds (0.0.0.0 for all interfaces).")
    ] = "127.0.0.1",
    data_dir: DataDir = None,
    websockets_port: Annotated[
        int | None,
        typer.Option(
            help="Also listen for MQTT over WebSockets on this port. Off by default; note "
            "that Mosquitto binds it on ALL interfaces whatever --host says.",
            show_default=False,
        ),
    ] = None,
    auth: Annotated[
        bool,
        typer.Option(
            "--auth",
            help="Require a user name and password (add users with `broker users add`) and "
            "apply the acl file in the data folder.",
        ),
    ] = False,
    max_queued_messages: Annotated[
        int, typer.Option(help="Messages queued per client while it is offline or slow.")
    ] = 500_000,
    mosquitto: Annotated[
        Path | None,
        typer.Option(
            help="Path of the mosquitto program (default: found on PATH or /usr/sbin).",
            show_default=False,
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Write and print the config, do not start.")
    ] = False,
) -> None:
    """Write the config into the data folder and run Mosquitto in the foreground.

    Stop it with Ctrl-C (or SIGTERM); it saves its queues to disk on the way out.
    """
    config = BrokerConfig(
        data_dir=data_dir or default_data_dir(),
        port=port,
        host=host,
        websockets_port=websockets_port,
        auth=auth,
        max_queued_messages=max_queued_messages,
    )
    try:
        program = None if dry_run else find_program("mosquitto", mosquitto)
    except MosquittoMissing as exc:
        raise _fail(str(exc)) from None
    path = write_config(config)
    if dry_run:
        typer.echo(path.read_text(encoding="utf-8"))
        return
    typer.echo(f"repedge broker: mqtt://{host}:{port}  config {path}", err=True)
    if auth and not list_users(config.password_file):
        typer.echo("warning: --auth with no users yet; add one with `broker users add`", err=True)
    sys.stdout.flush()
    sys.stderr.flush()
    # exec: signals (Ctrl-C, SIGTERM from systemd) go straight to Mosquitto.
    os.execv(program, [program, "-c", str(path)])


@users_app.command("add")
def users_add(
    name: Annotated[str, typer.Argument(help="User name.")],
    password: Annotated[
        str | None,
        typer.Option(
            help="Password (prompted for, without echo, when omitted).", show_default=False
        ),
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Add a user, or change an existing user's password."""
    if password is None:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    config = BrokerConfig(data_dir=data_dir or default_data_dir())
    try:
        add_user(config.password_file, name, password)
    except (UserError, MosquittoMissing) as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"user {name} saved in {config.password_file}")
    typer.echo("a running broker picks the change up on restart (or SIGHUP)")


@users_app.command("remove")
def users_remove(
    name: Annotated[str, typer.Argument(help="User name.")],
    data_dir: DataDir = None,
) -> None:
    """Remove a user."""
    config = BrokerConfig(data_dir=data_dir or default_data_dir())
    try:
        remove_user(config.password_file, name)
    except (UserError, MosquittoMissing) as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"user {name} removed")


@users_app.command("list")
def users_list(data_dir: DataDir = None) -> None:
    """List the users in the password file."""
    config = BrokerConfig(data_dir=data_dir or default_data_dir())
    for name in list_users(config.password_file):
        typer.echo(name)
