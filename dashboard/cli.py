"""`dashboard`: live views of a repedge deployment, from its MQTT topics."""

from __future__ import annotations

import hashlib
import logging
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from common.cli import PasswordOption, UsernameOption, VersionOption, broker_endpoint
from common.endpoint import BrokerEndpoint
from common.settings import SettingsError
from common.text import inert_log_handlers
from dashboard.history import (
    HistoryDatabaseError,
    HistoryRecorder,
    HistoryStore,
    Retention,
    default_db_path,
)
from dashboard.settings import DashboardSettings
from dashboard.source import DEFAULT_TOPICS, Subscriber
from dashboard.state import DashboardState

if TYPE_CHECKING:
    from dashboard.alert_monitor import AlertMonitor

DEFAULT_RETENTION = "minute=7d,hour=90d,day=forever"

app = typer.Typer(
    help=(
        "repedge dashboards: node status and telemetry, reputation per entity, errors;\n"
        "read from the broker's repedge topics; reputation history kept in a database.\n\n"
        "  dashboard serve --broker mqtt://localhost:1883   (then open http://127.0.0.1:8080/)\n"
        "  dashboard top --broker mqtt://localhost:1883     (in a terminal; q quits)\n"
        "  dashboard collect --db postgresql://...          (history only, no web page)"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def _main(version: VersionOption = False) -> None:
    """Live views of a repedge deployment."""


Broker = Annotated[
    str, typer.Option(help="MQTT broker: mqtt://host:port, or mqtts://host:port for TLS.")
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
History = Annotated[int, typer.Option(help="Minutes of the live per-minute view kept in memory.")]
Recent = Annotated[int, typer.Option(help="Labelled tweets kept per entity.")]
Db = Annotated[
    str | None,
    typer.Option(
        help="Reputation history database: a SQLite file, or postgresql://user@host/db. "
        f"Default: {default_db_path()}",
        show_default=False,
    ),
]
NoHistory = Annotated[
    bool, typer.Option("--no-history", help="Keep nothing on disk: the live hour only.")
]
RetentionOpt = Annotated[
    str,
    typer.Option(
        "--retention",
        help="How long each resolution is kept, behind the newest minute recorded.",
    ),
]
FlushInterval = Annotated[
    float,
    typer.Option(help="Seconds between history writes; a kill -9 loses at most this much."),
]


AlertEntities = Annotated[
    list[str] | None,
    typer.Option(
        "--alert-entity",
        help="Entity to watch for negative spikes (repeatable): only these get alerts, "
        "Home Assistant sensors and topics. Default: the first --alert-max-entities seen.",
        show_default=False,
    ),
]
AlertMax = Annotated[
    int,
    typer.Option(help="Most entities watched for spikes without --alert-entity."),
]
NoAlerts = Annotated[
    bool,
    typer.Option(
        "--no-alerts", help="Evaluate no spike alerts (publish nothing on repedge/alerts)."
    ),
]


def _log_to_stderr() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    inert_log_handlers()  # topics and broker errors quote outside text


def _checked(**values: object) -> DashboardSettings:
    """The run's settings, checked: a bad value is one line and exit status 2."""
    try:
        return DashboardSettings(**values)  # type: ignore[arg-type]
    except SettingsError as exc:
        typer.echo(f"dashboard: error: {exc}", err=True)
        raise typer.Exit(2) from None


@dataclass
class AlertOptions:
    off: bool = False
    entities: list[str] | None = None
    max_entities: int = DashboardSettings.alert_max_entities


def _start_alerts(options: AlertOptions, state: DashboardState, source: Subscriber):
    """The spike-alert monitor (dashboard/alert_monitor.py), publishing through the
    dashboard's own connection; None with --no-alerts."""
    if options.off:
        return None
    from dashboard.alert_monitor import AlertMonitor

    def publish(topic: str, payload: str, retain: bool) -> None:
        source.client.publish(topic, payload, qos=1, retain=retain)

    monitor = AlertMonitor(
        entities=options.entities, max_entities=options.max_entities, publish=publish
    )
    monitor.on_change = state.mark_changed
    state.alert_monitor = monitor
    monitor.start()
    return monitor


@dataclass
class HistoryOptions:
    db: str | None = None
    off: bool = False
    retention: str = DEFAULT_RETENTION
    flush_interval: float = DashboardSettings.flush_interval


def _open_history(options: HistoryOptions) -> tuple[HistoryStore | None, HistoryRecorder | None]:
    """The store to read and, unless another process records into it, a recorder."""
    if options.off:
        return None, None
    try:
        retention = Retention.parse(options.retention)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--retention") from None
    try:
        store = HistoryStore(options.db or default_db_path(), retention)
    except HistoryDatabaseError as exc:
        typer.echo(f"dashboard: {exc}", err=True)
        raise typer.Exit(1) from None
    if not store.claim_writer():
        logging.getLogger("repedge.dashboard").warning(
            "history: another dashboard records into %s; this one only reads it", store.where
        )
        return store, None
    return store, HistoryRecorder(store, options.flush_interval)


def _start(
    broker: str,
    username: str | None,
    password: str | None,
    tls_files: tuple[Path | None, Path | None, Path | None],
    topic: list[str] | None,
    history: int,
    recent: int,
    recorder: HistoryRecorder | None = None,
    session: str | None = None,
    session_expiry_s: int = 0,
) -> tuple[DashboardState, Subscriber]:
    address = broker_endpoint(broker, username, password, *tls_files)
    state = DashboardState(history_minutes=history, recent=recent, recorder=recorder)
    if recorder is not None:
        recorder.start()
    source = Subscriber(state, address, topic or DEFAULT_TOPICS, session, session_expiry_s)
    source.start()
    return state, source


def _stop_history(store: HistoryStore | None, recorder: HistoryRecorder | None) -> None:
    """The last flush (a clean stop loses nothing), then the database."""
    if recorder is not None:
        recorder.stop()
    if store is not None:
        store.close()


def _stop_reading(
    monitor: AlertMonitor | None,
    source: Subscriber,
    store: HistoryStore | None,
    recorder: HistoryRecorder | None,
) -> None:
    """Stop in dependency order: the monitor's last evaluation is published while the
    connection is still up, and the history gets its last flush after the last label."""
    if monitor is not None:
        monitor.stop()
    source.stop()
    _stop_history(store, recorder)


def _wait_until_stopped(poll_s: float) -> None:
    """Block until Ctrl-C or SIGTERM (kill, systemd, the demo's cleanup): both stop cleanly."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(poll_s):
            pass
    except KeyboardInterrupt:
        pass


@app.command()
def serve(
    broker: Broker = DashboardSettings.broker,
    username: UsernameOption = None,
    password: PasswordOption = None,
    cafile: Cafile = None,
    certfile: Certfile = None,
    keyfile: Keyfile = None,
    port: Annotated[int, typer.Option(help="HTTP port of the dashboard.")] = DashboardSettings.port,
    host: Annotated[
        str, typer.Option(help="Address to listen on (0.0.0.0: every interface).")
    ] = DashboardSettings.host,
    topic: Topics = None,
    history: History = DashboardSettings.history,
    recent: Recent = DashboardSettings.recent,
    push_interval: Annotated[
        float, typer.Option(help="Seconds between batched updates to the browsers.")
    ] = DashboardSettings.push_interval,
    db: Db = None,
    no_history: NoHistory = False,
    retention: RetentionOpt = DEFAULT_RETENTION,
    flush_interval: FlushInterval = DashboardSettings.flush_interval,
    alert_entity: AlertEntities = None,
    alert_max_entities: AlertMax = DashboardSettings.alert_max_entities,
    no_alerts: NoAlerts = False,
) -> None:
    """Serve the live web dashboard (no internet needed: every file is served locally)."""
    _checked(
        broker=broker,
        port=port,
        host=host,
        history=history,
        recent=recent,
        push_interval=push_interval,
        flush_interval=flush_interval,
        alert_max_entities=alert_max_entities,
    )
    from dashboard.web import DashboardServer, Hub

    _log_to_stderr()
    tls_files = (cafile, certfile, keyfile)
    store, recorder = _open_history(HistoryOptions(db, no_history, retention, flush_interval))
    state, source = _start(broker, username, password, tls_files, topic, history, recent, recorder)
    monitor = _start_alerts(
        AlertOptions(no_alerts, alert_entity, alert_max_entities), state, source
    )
    hub = Hub(state, push_interval)
    teacher, teach_routes = _teach(source.broker, state)
    try:
        server = DashboardServer((host, port), state, hub, store, extra_routes=teach_routes)
    except OSError as exc:
        teacher.close()
        _stop_reading(monitor, source, store, recorder)
        typer.echo(f"cannot listen on {host}:{port}: {exc}", err=True)
        raise typer.Exit(1) from None
    hub.start()
    server.start()
    typer.echo(f"dashboard: {server.url} (broker {source.broker})", err=True)
    try:
        _wait_until_stopped(0.5)
    finally:
        hub.stop()
        server.close()
        teacher.close()
        _stop_reading(monitor, source, store, recorder)


def _teach(endpoint: BrokerEndpoint, state: DashboardState):
    """The Teach view's MQTT client (dashboard/teach_web.py) and its routes, with the
    history chart's click-through to the nodes' texts (dashboard/history_tweets.py)."""
    from dashboard.history_tweets import NodeTexts
    from dashboard.history_web import tweets_route
    from dashboard.teach_web import teach_routes
    from node.teach_client import TeachClient

    client = TeachClient(endpoint)

    def node_ids() -> list[str]:
        return sorted(n["node_id"] for n in state.snapshot()["nodes"])

    def online() -> list[str]:
        return sorted(n["node_id"] for n in state.snapshot()["nodes"] if n["state"] == "online")

    routes = teach_routes(client, node_ids)
    routes["/api/history/tweets"] = tweets_route(NodeTexts(client, online))
    return client, routes


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


@app.command()
def top(
    broker: Broker = DashboardSettings.broker,
    username: UsernameOption = None,
    password: PasswordOption = None,
    cafile: Cafile = None,
    certfile: Certfile = None,
    keyfile: Keyfile = None,
    topic: Topics = None,
    history: History = DashboardSettings.history,
    recent: Recent = DashboardSettings.recent,
    once: Annotated[
        bool, typer.Option(help="Wait --wait seconds, print one frame, exit (for scripts).")
    ] = False,
    wait: Annotated[
        float, typer.Option(help="Seconds to collect before --once prints.")
    ] = DashboardSettings.wait,
    db: Db = None,
    no_history: NoHistory = False,
    retention: RetentionOpt = DEFAULT_RETENTION,
    flush_interval: FlushInterval = DashboardSettings.flush_interval,
) -> None:
    """Show the dashboard in the terminal, with the last 24 h per entity; q quits."""
    _checked(
        broker=broker, history=history, recent=recent, wait=wait, flush_interval=flush_interval
    )
    import time

    from dashboard.top import run

    tls_files = (cafile, certfile, keyfile)
    store, recorder = _open_history(HistoryOptions(db, no_history, retention, flush_interval))
    state, source = _start(broker, username, password, tls_files, topic, history, recent, recorder)
    signal.signal(signal.SIGTERM, _interrupt)  # a kill stops as cleanly as q: history flushed
    try:
        if once:
            time.sleep(wait)
            if recorder is not None:
                recorder.flush()
        run(state, once=once, store=store)
    except KeyboardInterrupt:
        pass
    finally:
        _stop_reading(None, source, store, recorder)


@app.command()
def collect(
    broker: Broker = DashboardSettings.broker,
    username: UsernameOption = None,
    password: PasswordOption = None,
    cafile: Cafile = None,
    certfile: Certfile = None,
    keyfile: Keyfile = None,
    topic: Topics = None,
    db: Db = None,
    retention: RetentionOpt = DEFAULT_RETENTION,
    flush_interval: FlushInterval = DashboardSettings.flush_interval,
    alert_entity: AlertEntities = None,
    alert_max_entities: AlertMax = DashboardSettings.alert_max_entities,
    no_alerts: NoAlerts = False,
    session: Annotated[
        str | None,
        typer.Option(
            help="MQTT client id of the collector's persistent session. Default: "
            "repedge-collect-<hash of --db>, so each database has its own.",
            show_default=False,
        ),
    ] = None,
    session_expiry: Annotated[
        int,
        typer.Option(
            help="Seconds the broker keeps the session, queueing labels, while collect is "
            "down (a restart loses nothing published meanwhile); 0: a clean session."
        ),
    ] = DashboardSettings.session_expiry,
) -> None:
    """Record reputation history and evaluate spike alerts headless (a central site): no
    web page, no terminal view."""
    _checked(
        broker=broker,
        flush_interval=flush_interval,
        alert_max_entities=alert_max_entities,
        session_expiry=session_expiry,
    )
    _log_to_stderr()
    store, recorder = _open_history(HistoryOptions(db, False, retention, flush_interval))
    if recorder is None:
        typer.echo(f"dashboard collect: another process records into {store.where}", err=True)
        _stop_history(store, None)
        raise typer.Exit(1)
    tls_files = (cafile, certfile, keyfile)
    session_id = (
        session or "repedge-collect-" + hashlib.sha256(store.where.encode()).hexdigest()[:10]
    )
    state, source = _start(
        broker, username, password, tls_files, topic, 1, 1, recorder,
        session=session_id if session_expiry else None, session_expiry_s=session_expiry,
    )  # fmt: skip
    monitor = _start_alerts(
        AlertOptions(no_alerts, alert_entity, alert_max_entities), state, source
    )
    typer.echo(f"dashboard collect: {source.broker} -> {store.where}", err=True)
    try:
        _wait_until_stopped(1.0)
    finally:
        _stop_reading(monitor, source, store, recorder)


@app.command()
def teach(
    node: Annotated[str, typer.Option(help="The node whose kept tweets to label.")],
    entity: Annotated[str, typer.Option(help="The entity (brand) to teach.")],
    broker: Broker = DashboardSettings.broker,
    username: UsernameOption = None,
    password: PasswordOption = None,
    cafile: Cafile = None,
    certfile: Certfile = None,
    keyfile: Keyfile = None,
) -> None:
    """Label a node's kept tweets in the terminal (a headless site's Teach view): one per
    line, 1 negative, 2 neutral, 3 positive, 0 not about the brand, s skip, z undo,
    a adapt, q quit. The broker user needs the teach role."""
    import sys

    from dashboard.teach_term import run
    from node.teach_client import TeachClient, TeachClientError

    client = TeachClient(broker_endpoint(broker, username, password, cafile, certfile, keyfile))
    try:
        given = run(client, node, entity, sys.stdin.readline, sys.stdout)
    except TeachClientError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    finally:
        client.close()
    typer.echo(f"\n{given} labels given; they are kept on node {node}")
