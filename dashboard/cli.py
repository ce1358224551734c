"""`dashboard`: live views of a repedge deployment, from its MQTT topics."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

from broker.endpoint import BrokerEndpoint, EndpointError
from dashboard.source import DEFAULT_TOPICS, Subscriber
from dashboard.state import DashboardState

app = typer.Typer(
    help=(
        "repedge dashboards: node status and telemetry, reputation per entity, errors;\n"
        "read from the broker's repedge topics, kept in memory (the last hour).\n\n"
        "  dashboard serve --broker mqtt://localhost:1883   (then open http://127.0.0.1:8080/)\n"
        "  dashboard top --broker mqtt://localhost:1883     (in a terminal; q quits)"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)

Broker = Annotated[
    str, typer.Option(help="MQTT broker: mqtt://host:port, or mqtts://host:port for TLS.")
]
Username = Annotated[str | None, typer.Option(help="Broker user name.")]
Password = Annotated[
    str | None, typer.Option(help="Broker password.", envvar="REPEDGE_MQTT_PASSWORD")
]
Cafile = Annotated[
    Path | None,
    typer.Option(
        help="With mqtts://: the CA certificate that signed the broker's (ca.crt from "
        "`broker certs`). Default: the system's trusted CAs.",
        show_default=False,
    ),
]
Certfile = Annotated[
    Path | None,
    typer.Option(
        help="With mqtts://: a client certificate (for a broker started with "
        "--require-client-cert); needs --keyfile.",
        show_default=False,
    ),
]
Keyfile = Annotated[
    Path | None, typer.Option(help="The private key of --certfile.", show_default=False)
]
Topics = Annotated[
    list[str] | None,
    typer.Option(
        "--topic",
        help="Topic filter to read (repeatable). Default: repedge/labels, repedge/errors, "
        "repedge/nodes/+/+. Labels and errors are recognised by a last level of "
        "`labels` / `errors`, node reports by …/nodes/<id>/<status|telemetry|events>.",
        show_default=False,
    ),
]
History = Annotated[int, typer.Option(help="Minutes of per-minute history kept.", min=1)]
Recent = Annotated[int, typer.Option(help="Labelled tweets kept per entity.", min=1)]


def _start(
    broker: str,
    username: str | None,
    password: str | None,
    tls_files: tuple[Path | None, Path | None, Path | None],
    topic: list[str] | None,
    history: int,
    recent: int,
) -> tuple[DashboardState, Subscriber]:
    cafile, certfile, keyfile = tls_files
    try:
        address = BrokerEndpoint.parse(broker, username, password, cafile, certfile, keyfile)
    except EndpointError as exc:
        raise typer.BadParameter(str(exc), param_hint="--broker") from None
    state = DashboardState(history_minutes=history, recent=recent)
    source = Subscriber(state, address, topic or DEFAULT_TOPICS)
    source.start()
    return state, source


@app.command()
def serve(
    broker: Broker = "mqtt://localhost:1883",
    username: Username = None,
    password: Password = None,
    cafile: Cafile = None,
    certfile: Certfile = None,
    keyfile: Keyfile = None,
    port: Annotated[int, typer.Option(help="HTTP port of the dashboard.")] = 8080,
    host: Annotated[
        str, typer.Option(help="Address to listen on (0.0.0.0: every interface).")
    ] = "127.0.0.1",
    topic: Topics = None,
    history: History = 60,
    recent: Recent = 50,
    push_interval: Annotated[
        float, typer.Option(help="Seconds between batched updates to the browsers.", min=0.05)
    ] = 0.5,
) -> None:
    """Serve the live web dashboard (no internet needed: every file is served locally)."""
    from dashboard.web import DashboardServer, Hub

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    tls_files = (cafile, certfile, keyfile)
    state, source = _start(broker, username, password, tls_files, topic, history, recent)
    hub = Hub(state, push_interval)
    try:
        server = DashboardServer((host, port), state, hub)
    except OSError as exc:
        source.stop()
        typer.echo(f"cannot listen on {host}:{port}: {exc}", err=True)
        raise typer.Exit(1) from None
    hub.start()
    server.start()
    # SIGTERM (kill, systemd, the demo's cleanup) stops as cleanly as Ctrl-C.
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    typer.echo(f"dashboard: {server.url} (broker {source.broker})", err=True)
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        hub.stop()
        server.close()
        source.stop()


@app.command()
def top(
    broker: Broker = "mqtt://localhost:1883",
    username: Username = None,
    password: Password = None,
    cafile: Cafile = None,
    certfile: Certfile = None,
    keyfile: Keyfile = None,
    topic: Topics = None,
    history: History = 60,
    recent: Recent = 50,
    once: Annotated[
        bool, typer.Option(help="Wait --wait seconds, print one frame, exit (for scripts).")
    ] = False,
    wait: Annotated[float, typer.Option(help="Seconds to collect before --once prints.")] = 2.0,
) -> None:
    """Show the dashboard in the terminal; q quits."""
    import time

    from dashboard.top import run

    tls_files = (cafile, certfile, keyfile)
    state, source = _start(broker, username, password, tls_files, topic, history, recent)
    try:
        if once:
            time.sleep(wait)
        run(state, once=once)
    except KeyboardInterrupt:
        pass
    finally:
        source.stop()
