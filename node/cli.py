"""`node`: run a repedge edge node."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Annotated

import typer

from common.cli import LogLevel, PasswordOption, VersionOption
from common.cliconfig import ConfigFile, PrintConfig, configurable
from common.endpoint import BrokerEndpoint, EndpointError
from common.settings import SettingsError
from node.lazy_commands import LazyCommandsGroup
from node.paths import default_state_dir

# The defaults of `node start` are NodeConfig's: one place for the CLI, files and docs.
from node.settings import NodeConfig, NodeStart
from node.teach_cli import adapt as teach_adapt
from node.teach_cli import labels_app, texts_app
from node.teach_cli import rollback as teach_rollback

app = typer.Typer(
    cls=LazyCommandsGroup,
    help=(
        "repedge edge node: classifies the reputation polarity of tweets it receives over\n"
        "MQTT with a quantized model bundle, and publishes one JSON record per tweet.\n\n"
        "Quick start:  broker start  &  node start   (serves the shipped models/default)\n"
        "then:  mosquitto_pub -t repedge/tweets -q 1 -m 'I love my new car'\n"
        "and:   mosquitto_sub -t repedge/labels -v"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def _main(version: VersionOption = False) -> None:
    """Keeps `start` a named sub-command (`node start`), room for more later."""


app.add_typer(texts_app, name="texts")
app.add_typer(labels_app, name="labels")
app.command("adapt")(teach_adapt)
app.command("rollback")(teach_rollback)


# --model has no REPEDGE_MODEL: that variable already names the fallback model, used
# only when nothing is installed (see --model's help).
@app.command(cls=configurable("REPEDGE_", no_env=("model",)))
def start(
    config: ConfigFile = None,
    print_config: PrintConfig = False,
    model: Annotated[
        Path | None,
        typer.Option(
            help="Model bundle folder, or a .tflite file with its bundle files beside it. "
            "Default: the model last installed into --provision-state (provision install "
            "or --watch-mount), else $REPEDGE_MODEL, else the shipped models/default.",
            show_default=False,
        ),
    ] = NodeStart.model,
    variant: Annotated[
        str | None,
        typer.Option(
            help="Variant of a bundle folder (int8, fp16, ...); default: the bundle's.",
            show_default=False,
        ),
    ] = NodeStart.variant,
    broker: Annotated[
        str, typer.Option(help="MQTT broker: mqtt://host:port, or mqtts://host:port for TLS.")
    ] = NodeConfig.broker.url,
    node_id: Annotated[
        str | None,
        typer.Option(
            help="Name of this node: its MQTT client id, topics and state folder. "
            "Default: the host name.",
            show_default=False,
        ),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(
            help="Interpreter threads (default: CPU cores - 1, from 1 to 4).", show_default=False
        ),
    ] = NodeStart.threads,
    username: Annotated[
        str | None,
        typer.Option(
            help="Broker user name (default with --password: the node id, the name "
            "`broker users add NODE_ID --role node` gives a node).",
            show_default=False,
        ),
    ] = None,
    password: PasswordOption = None,
    cafile: Annotated[
        Path | None,
        typer.Option(
            help="With mqtts://: the CA certificate that signed the broker's (ca.crt from "
            "`broker certs`). Default: the system's trusted CAs.",
            show_default=False,
        ),
    ] = None,
    certfile: Annotated[
        Path | None,
        typer.Option(
            help="With mqtts://: this node's client certificate (for a broker started with "
            "--require-client-cert); needs --keyfile.",
            show_default=False,
        ),
    ] = None,
    keyfile: Annotated[
        Path | None,
        typer.Option(help="The private key of --certfile.", show_default=False),
    ] = None,
    tweets_topic: Annotated[str, typer.Option(help="Topic tweets arrive on.")] = (
        NodeConfig.tweets_topic
    ),
    labels_topic: Annotated[str, typer.Option(help="Topic label records go to.")] = (
        NodeConfig.labels_topic
    ),
    errors_topic: Annotated[str, typer.Option(help="Topic error records go to.")] = (
        NodeConfig.errors_topic
    ),
    telemetry_interval: Annotated[
        float, typer.Option(help="Seconds between telemetry reports.")
    ] = NodeConfig.telemetry_interval_s,
    max_batch: Annotated[int, typer.Option(help="Most tweets per inference batch.")] = (
        NodeConfig.max_batch
    ),
    max_batch_tokens: Annotated[
        int,
        typer.Option(
            help="Most tokens (rows x padded length) per interpreter call; bounds "
            "the interpreter's working memory."
        ),
    ] = NodeConfig.max_batch_tokens,
    max_wait_ms: Annotated[
        float,
        typer.Option(
            help="Longest a growing batch waits for more tweets (a lone tweet never waits)."
        ),
    ] = NodeConfig.max_wait_ms,
    queue_size: Annotated[
        int,
        typer.Option(
            help="Tweets held in memory; also the MQTT Receive Maximum, so the "
            "broker holds the rest."
        ),
    ] = NodeConfig.queue_size,
    max_bytes: Annotated[int, typer.Option(help="Largest accepted payload, in bytes.")] = (
        NodeConfig.max_bytes
    ),
    state_dir: Annotated[
        Path | None,
        typer.Option(
            help="Folder for the record store that makes redeliveries repeat the "
            "same record. Default: ~/.local/state/repedge/NODE_ID.",
            show_default=False,
        ),
    ] = None,
    session_expiry: Annotated[
        int,
        typer.Option(
            help="Seconds the broker keeps queueing tweets for this node while it is offline."
        ),
    ] = NodeConfig.session_expiry_s,
    drain_timeout: Annotated[
        float, typer.Option(help="Seconds to finish queued work on SIGTERM/Ctrl-C.")
    ] = NodeConfig.drain_timeout_s,
    share_group: Annotated[
        str | None,
        typer.Option(
            help="Join this MQTT 5 shared subscription group ($share/GROUP/TWEETS_TOPIC): the "
            "broker deals each tweet to one member of the group. Every member needs its "
            "own --node-id (docs/fleet.md).",
            show_default=False,
        ),
    ] = NodeConfig.share_group,
    watch_mount: Annotated[
        Path | None,
        typer.Option(
            help="Watch this folder (e.g. a USB stick mount point) for signed model "
            "updates and hot-swap them in.",
            show_default=False,
        ),
    ] = NodeStart.watch_mount,
    trust_key: Annotated[
        list[Path] | None,
        typer.Option(
            help="Public key trusted to sign model updates (repeatable).", show_default=False
        ),
    ] = None,
    provision_state: Annotated[
        Path | None,
        typer.Option(
            help="Folder where installed models and provisioning state live. "
            "Default: STATE_DIR/provisioning.",
            show_default=False,
        ),
    ] = NodeStart.provision_state,
    entity: Annotated[
        str | None,
        typer.Option(
            help="The brand this node monitors: the entity of tweets that arrive without "
            "one (reputation polarity for that brand rather than plain sentiment).",
            show_default=False,
        ),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            help="Serve Prometheus metrics on http://METRICS_HOST:PORT/metrics (off by "
            "default; 9464 is the usual choice).",
            show_default=False,
        ),
    ] = NodeStart.metrics_port,
    metrics_host: Annotated[
        str,
        typer.Option(
            help="Address the metrics server listens on: 0.0.0.0 for a Prometheus on "
            "another machine."
        ),
    ] = NodeStart.metrics_host,
    ha_discovery: Annotated[
        bool,
        typer.Option(
            "--ha-discovery/--no-ha-discovery",
            help="Announce this node's sensors to Home Assistant (MQTT discovery: "
            "retained configs under homeassistant/).",
        ),
    ] = NodeStart.ha_discovery,
    texts_per_entity: Annotated[
        int,
        typer.Option(
            help="Labelled tweets kept per entity in STATE_DIR/teach.sqlite for the Teach "
            "view (the most recent ones; 0 keeps none). docs/teach.md.",
        ),
    ] = NodeConfig.texts_per_entity,
    log_level: LogLevel = NodeStart.log_level,
) -> None:
    """Serve a model: read tweets from MQTT, publish labels, until SIGTERM or Ctrl-C."""
    node_id = node_id or socket.gethostname()
    state_dir = state_dir or default_state_dir(node_id)
    try:
        endpoint = BrokerEndpoint.parse(
            broker,
            # With --auth, a node's broker user is named after the node (broker/roles.py).
            username=username or (node_id if password else None),
            password=password,
            cafile=cafile and cafile.absolute(),
            certfile=certfile and certfile.absolute(),
            keyfile=keyfile and keyfile.absolute(),
        )
        settings = NodeStart(
            config=NodeConfig(
                node_id=node_id,
                broker=endpoint,
                tweets_topic=tweets_topic,
                labels_topic=labels_topic,
                errors_topic=errors_topic,
                telemetry_interval_s=telemetry_interval,
                max_batch=max_batch,
                max_batch_tokens=max_batch_tokens,
                max_wait_ms=max_wait_ms,
                queue_size=queue_size,
                max_bytes=max_bytes,
                state_dir=state_dir.absolute(),
                session_expiry_s=session_expiry,
                drain_timeout_s=drain_timeout,
                default_entity=entity.strip() if entity and entity.strip() else None,
                share_group=share_group,
                texts_per_entity=texts_per_entity,
            ),
            model=model and model.absolute(),
            variant=variant,
            threads=threads,
            watch_mount=watch_mount and watch_mount.absolute(),
            trust_keys=[k.absolute() for k in trust_key or []],
            provision_state=(provision_state or state_dir / "provisioning").absolute(),
            metrics_port=metrics_port,
            metrics_host=metrics_host,
            ha_discovery=ha_discovery,
            log_level=log_level.strip().lower(),
        )
    except (EndpointError, SettingsError) as exc:
        # One line and the usage-error status, no traceback (issue 20).
        typer.echo(f"node start: error: {exc}", err=True)
        raise typer.Exit(2) from None
    from node.serve import exec_serve

    exec_serve(settings)  # the model is resolved there, once
