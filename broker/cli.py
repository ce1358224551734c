"""`broker`: run repedge's Mosquitto broker and manage its users."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from broker.bridge import TWEETS_IN_MODES, BridgeConfig, BridgeError
from broker.certs import CertError, check_tls_dir, make_certs
from broker.config import (
    BrokerConfig,
    MosquittoMissing,
    UnsafeConfig,
    default_data_dir,
    find_program,
    write_config,
)
from broker.roles import (
    RoleError,
    check_name,
    check_node_name,
    check_role,
    check_share_group,
    read_roles,
    read_share_groups,
    set_role,
)
from broker.users import UserError, add_user, list_users, remove_user
from common.cli import VersionOption
from common.cliconfig import ConfigFile, PrintConfig, configurable

app = typer.Typer(
    help=(
        "Run the MQTT broker (Mosquitto) that repedge nodes and clients talk to, with\n"
        "repedge's settings: persistence on, large per-client queues, localhost only.\n\n"
        "Quick start:  broker start   (then, in another shell:  node start --model BUNDLE)"
    ),
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def _main(version: VersionOption = False) -> None:
    """repedge's Mosquitto: config, users and roles, certificates."""


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


@app.command(cls=configurable("REPEDGE_BROKER_"))
def start(
    config: ConfigFile = None,
    print_config: PrintConfig = False,
    port: Annotated[
        int | None,
        typer.Option(help="TCP port for MQTT (default 1883, with --tls 8883).", show_default=False),
    ] = None,
    host: Annotated[
        str, typer.Option(help="Address the MQTT listener binds (0.0.0.0 for all interfaces).")
    ] = BrokerConfig.host,
    data_dir: DataDir = None,
    websockets_port: Annotated[
        int | None,
        typer.Option(
            help="Also listen for MQTT over WebSockets on this port. Off by default; note "
            "that Mosquitto binds it on ALL interfaces whatever --host says.",
            show_default=False,
        ),
    ] = BrokerConfig.websockets_port,
    auth: Annotated[
        bool,
        typer.Option(
            "--auth",
            help="Require a user name and password (add users with `broker users add`) and "
            "apply the acl file in the data folder.",
        ),
    ] = BrokerConfig.auth,
    max_queued_messages: Annotated[
        int, typer.Option(help="Messages queued per client while it is offline or slow.")
    ] = BrokerConfig.max_queued_messages,
    autosave_changes: Annotated[
        int,
        typer.Option(
            help="Save the database to disk every N changes (queued or delivered messages, "
            "retained messages, subscriptions). A broker crash loses at most the last N "
            "acknowledged tweets; smaller N costs throughput (docs/broker.md).",
            min=1,
        ),
    ] = BrokerConfig.autosave_interval,
    autosave_seconds: Annotated[
        int | None,
        typer.Option(
            help="Save every S seconds instead (Mosquitto's own default is 60): cheaper under "
            "a large backlog, but a crash loses up to S seconds of acknowledged tweets.",
            min=1,
            show_default=False,
        ),
    ] = None,
    tls: Annotated[
        Path | None,
        typer.Option(
            "--tls",
            help="Serve MQTT (and WebSockets) over TLS only, with the CA and server "
            "certificate in this folder (make it with `broker certs --out DIR`).",
            show_default=False,
        ),
    ] = None,
    require_client_cert: Annotated[
        bool,
        typer.Option(
            "--require-client-cert",
            help="With --tls: refuse clients without a certificate signed by the CA.",
        ),
    ] = BrokerConfig.require_client_cert,
    bridge_to: Annotated[
        str | None,
        typer.Option(
            help="Forward this broker's repedge/labels, repedge/errors and repedge/nodes/# "
            "to a central broker, mqtt[s]://HOST:PORT, under sites/SITE/ (a Mosquitto "
            "bridge: queued on disk while the centre is away). Needs --site.",
            show_default=False,
        ),
    ] = None,
    site: Annotated[
        str | None,
        typer.Option(help="This site's name at the central broker.", show_default=False),
    ] = None,
    bridge_user: Annotated[
        str | None, typer.Option(help="User name at the central broker.", show_default=False)
    ] = None,
    bridge_password: Annotated[
        str | None, typer.Option(help="Password at the central broker.", show_default=False)
    ] = None,
    bridge_cafile: Annotated[
        Path | None,
        typer.Option(
            help="CA certificate of an mqtts:// central broker (default: the system's CAs).",
            show_default=False,
        ),
    ] = None,
    bridge_tweets_in: Annotated[
        str,
        typer.Option(
            help="Also take tweets from the central broker: 'site' (those it publishes on "
            "sites/SITE/repedge/tweets) or 'shared' (its repedge/tweets, spread over all "
            f"sites). One of: {', '.join(TWEETS_IN_MODES)}."
        ),
    ] = BridgeConfig.tweets_in,
    bridge_protocol: Annotated[
        str,
        typer.Option(
            help="MQTT version of the bridge: mqttv50, or mqttv311 for a central broker that "
            "only speaks MQTT 3.1.1 (RabbitMQ before 3.13)."
        ),
    ] = BridgeConfig.protocol,
    mosquitto: Annotated[
        Path | None,
        typer.Option(
            help="Path of the mosquitto program (default: found on PATH or /usr/sbin).",
            show_default=False,
        ),
    ] = None,
    tweets_topic: Annotated[
        str,
        typer.Option(
            help="The nodes' tweets topic (their --tweets-topic): what the ACLs let nodes "
            "read and feeders write, and what a bridge takes in."
        ),
    ] = BrokerConfig.tweets_topic,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Write and print the config, do not start.")
    ] = False,
) -> None:
    """Write the config into the data folder and run Mosquitto in the foreground.

    Stop it with Ctrl-C (or SIGTERM); it saves its queues to disk on the way out.
    """
    if require_client_cert and tls is None:
        raise _fail("--require-client-cert needs --tls DIR", 2)
    port = port or (8883 if tls else 1883)
    bridge = None
    if bridge_to or site:
        if not (bridge_to and site):
            raise _fail("--bridge-to and --site go together", 2)
        try:
            bridge = BridgeConfig(
                bridge_to,
                site,
                bridge_user,
                bridge_password,
                bridge_cafile,
                bridge_tweets_in,
                bridge_protocol,
                tweets_topic,
            )
        except BridgeError as exc:
            raise _fail(str(exc), 2) from None
    try:
        config = BrokerConfig(
            data_dir=data_dir or default_data_dir(),
            port=port,
            host=host,
            websockets_port=websockets_port,
            auth=auth,
            max_queued_messages=max_queued_messages,
            autosave_interval=autosave_seconds or autosave_changes,
            autosave_on_changes=autosave_seconds is None,
            tls_dir=tls,
            require_client_cert=require_client_cert,
            bridge=bridge,
            tweets_topic=tweets_topic,
        )
    except ValueError as exc:  # SettingsError, EndpointError: one line, nothing written
        raise _fail(str(exc), 2) from None
    try:
        if tls is not None:
            check_tls_dir(tls)
        program = None if dry_run else find_program("mosquitto", mosquitto)
        path = write_config(config)
    except MosquittoMissing as exc:
        raise _fail(str(exc)) from None
    except (UnsafeConfig, CertError, ValueError) as exc:
        raise _fail(str(exc), 2) from None
    if dry_run:
        typer.echo(path.read_text(encoding="utf-8"))
        return
    scheme = "mqtts" if tls else "mqtt"
    typer.echo(f"repedge broker: {scheme}://{host}:{port}  config {path}", err=True)
    if auth:
        users = list_users(config.password_file)
        roles = read_roles(config.data_dir)
        if not users:
            typer.echo(
                "warning: --auth with no users yet; add one with `broker users add NAME --role R`",
                err=True,
            )
        for name in users:
            if name not in roles:
                typer.echo(
                    f"warning: user {name} has no role and no access; give it one with "
                    f"`broker users add {name} --role ...`",
                    err=True,
                )
    sys.stdout.flush()
    sys.stderr.flush()
    # exec: signals (Ctrl-C, SIGTERM from systemd) go straight to Mosquitto.
    os.execv(program, [program, "-c", str(path)])


@app.command()
def certs(
    out: Annotated[Path, typer.Option(help="Folder for the CA, server and client files.")],
    san: Annotated[
        list[str] | None,
        typer.Option(
            help="Extra host name or IP address the server certificate is valid for "
            "(repeatable; localhost, 127.0.0.1, ::1 and this host's name are always in).",
            show_default=False,
        ),
    ] = None,
    client: Annotated[
        list[str] | None,
        typer.Option(
            help="Also make a client certificate NAME.crt/NAME.key (repeatable).",
            show_default=False,
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option("--force", help="Re-issue the server and named client certificates."),
    ] = False,
) -> None:
    """Make a private CA, a server certificate and client certificates for --tls.

    Run it again to add clients: the CA and existing certificates are kept. Keys are 0600;
    copy ca.crt (and a client's NAME.crt/NAME.key) to each client, never ca.key.
    """
    try:
        report = make_certs(out, san or [], client or [], force=force)
    except (CertError, OSError) as exc:
        raise _fail(str(exc), 2) from None
    for path in report.created:
        typer.echo(f"created {path}")
    for path in report.kept:
        typer.echo(f"kept    {path}")
    typer.echo(f"serve with: broker start --tls {out}")


@users_app.command("add")
def users_add(
    name: Annotated[
        str, typer.Argument(help="User name; for a node, its node id (`node start --node-id`).")
    ],
    role: Annotated[
        str,
        typer.Option(
            help="What the user may do: node (read tweets, write labels/errors and only its "
            "own repedge/nodes/NAME/# and Home Assistant configs), feeder (write tweets), "
            "dashboard (read repedge/#), site (a site's bridge at a central broker: write "
            "sites/NAME/repedge/#, read tweets), admin (everything).",
        ),
    ],
    password: Annotated[
        str | None,
        typer.Option(
            help="Password (prompted for, without echo, when omitted).", show_default=False
        ),
    ] = None,
    share_group: Annotated[
        str | None,
        typer.Option(
            help="For a node started with `node start --share-group G`: G. A node user may "
            "subscribe to exactly one tweets filter, $share/G/<tweets topic> with this option, "
            "the tweets topic itself without it.",
            show_default=False,
        ),
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Add a user, or change an existing user's password, role or share group."""
    try:  # before prompting for a password
        check_name(name)
        check_role(role)
        check_node_name(name, role)
        check_share_group(role, share_group)
    except RoleError as exc:
        raise _fail(str(exc)) from None
    if password is None:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    config = BrokerConfig(data_dir=data_dir or default_data_dir())
    try:
        add_user(config.password_file, name, password)
        set_role(config.data_dir, config.acl_file, name, role, share_group)
    except (UserError, MosquittoMissing, RoleError) as exc:
        raise _fail(str(exc)) from None
    group = f", share group {share_group}" if share_group else ""
    typer.echo(
        f"user {name} ({role}{group}) saved in {config.password_file}; acl {config.acl_file}"
    )
    # The dynamic security plugin reads its file at start only; SIGHUP rereads passwd and acl.
    typer.echo("a running broker applies it on restart (SIGHUP: passwords and acl only)")


@users_app.command("remove")
def users_remove(
    name: Annotated[str, typer.Argument(help="User name.")],
    data_dir: DataDir = None,
) -> None:
    """Remove a user."""
    config = BrokerConfig(data_dir=data_dir or default_data_dir())
    try:
        remove_user(config.password_file, name)
        set_role(config.data_dir, config.acl_file, name, None)
    except (UserError, MosquittoMissing) as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"user {name} removed")


@users_app.command("list")
def users_list(data_dir: DataDir = None) -> None:
    """List the users in the password file, with their roles."""
    config = BrokerConfig(data_dir=data_dir or default_data_dir())
    roles = read_roles(config.data_dir)
    groups = read_share_groups(config.data_dir)
    for name in list_users(config.password_file):
        group = f" {groups[name]}" if name in groups else ""
        typer.echo(f"{name} {roles.get(name, '(no role: no access)')}{group}")
