"""`node texts ...` and `node labels ...`: the teach store on this machine's disk.

They open the node's ``STATE_DIR/teach.sqlite`` directly (SQLite's WAL lets them run while
the node does), so they work on a stopped node and need no broker.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from typing import Annotated

import typer

from common.cli import PasswordOption, broker_endpoint
from node.paths import default_state_dir

texts_app = typer.Typer(
    help="The tweet texts a node keeps for teaching (STATE_DIR/teach.sqlite).",
    no_args_is_help=True,
    add_completion=False,
)
labels_app = typer.Typer(
    help="The labels given in the Teach view: export and import them between nodes.",
    no_args_is_help=True,
    add_completion=False,
)

NodeId = Annotated[
    str | None,
    typer.Option(help="The node whose store this is (default: the host name).", show_default=False),
]
StateDir = Annotated[
    Path | None,
    typer.Option(
        help="The node's state folder (default: ~/.local/state/repedge/NODE_ID).",
        show_default=False,
    ),
]
Entity = Annotated[
    str | None, typer.Option(help="Only this entity (default: all).", show_default=False)
]


def _store(node_id: str | None, state_dir: Path | None):
    from node.teachstore import TEACH_DB, TeachStore

    folder = state_dir or default_state_dir(node_id or socket.gethostname())
    if not (folder / TEACH_DB).exists():
        raise typer.BadParameter(f"no teach store at {folder / TEACH_DB}", param_hint="--state-dir")
    return TeachStore.in_state_dir(folder)


@texts_app.command("purge")
def purge(
    entity: Entity = None,
    labels: Annotated[
        bool, typer.Option("--labels", help="Delete the labels given for them too.")
    ] = False,
    node_id: NodeId = None,
    state_dir: StateDir = None,
) -> None:
    """Delete the kept texts now (of one entity, or all); labels stay unless --labels."""
    store = _store(node_id, state_dir)
    texts, answers = store.purge(entity, answers=labels)
    store.close()
    what = f"entity {entity!r}" if entity else "all entities"
    typer.echo(f"purged {texts} kept texts and {answers} labels of {what} from {store.path}")


@texts_app.command("list")
def list_entities(node_id: NodeId = None, state_dir: StateDir = None) -> None:
    """Entities with kept texts and labels, and how many of each."""
    store = _store(node_id, state_dir)
    for e in store.entities():
        typer.echo(
            f"{e['entity']}\t{e['texts']} texts\t{e['labels']} labels\t{e['skipped']} skipped"
        )
    store.close()


@labels_app.command("export")
def export(
    out: Annotated[Path, typer.Option(help="TSV file to write ('-': standard output).")],
    entity: Entity = None,
    node_id: NodeId = None,
    state_dir: StateDir = None,
) -> None:
    """Write the labels as TSV: id, entity, filtering, polarity, text (RepLab's columns)."""
    store = _store(node_id, state_dir)
    tsv = store.export_tsv(entity)
    store.close()
    if str(out) == "-":
        sys.stdout.write(tsv)
        return
    out.write_text(tsv, encoding="utf-8")
    typer.echo(f"wrote {tsv.count(chr(10)) - 1} labels to {out}")


@labels_app.command("import")
def import_labels(
    path: Annotated[Path, typer.Argument(help="A TSV written by `node labels export`.")],
    node_id: NodeId = None,
    state_dir: StateDir = None,
) -> None:
    """Add labels from another node; a text this node already has a label for is skipped."""
    from node.teachstore import TEACH_DB, TeachStore, TeachStoreError

    folder = state_dir or default_state_dir(node_id or socket.gethostname())
    store = TeachStore(folder / TEACH_DB)
    try:
        added, present = store.import_tsv(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, TeachStoreError) as exc:
        typer.echo(f"error: {path}: {exc}", err=True)
        raise typer.Exit(2) from None
    finally:
        store.close()
    typer.echo(f"imported {added} labels ({present} already here) into {store.path}")


def _teach_client(broker: str, username, password, cafile, certfile, keyfile):
    from node.teach_client import TeachClient

    return TeachClient(broker_endpoint(broker, username, password, cafile, certfile, keyfile))


Broker = Annotated[
    str, typer.Option(help="MQTT broker: mqtt://host:port, or mqtts://host:port for TLS.")
]
Username = Annotated[str | None, typer.Option(help="Broker user with the teach (or admin) role.")]
TlsFile = Annotated[Path | None, typer.Option(show_default=False)]
Target = Annotated[
    str | None,
    typer.Option(
        "--node-id", help="The running node (default: the host name).", show_default=False
    ),
]


Timeout = Annotated[float, typer.Option(help="Seconds to wait for the node's answer.", min=0.1)]
Cafile = Annotated[Path | None, typer.Option(help="CA of an mqtts:// broker.")]


def _remote(op: str, node: str | None, client_args: tuple, timeout: float, **fields) -> None:
    from node.teach_client import TeachClientError

    client = _teach_client(*client_args)
    try:
        answer = client.request(node or socket.gethostname(), op, timeout, **fields)
    except TeachClientError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    finally:
        client.close()
    typer.echo(answer["reason"])
    if answer.get("summary"):
        typer.echo(answer["summary"])
    if answer.get("model"):
        model = answer["model"]
        typer.echo(f"serving {model['name']} {model['version']} ({answer['seconds']} s)")
    if not answer["swapped"]:
        raise typer.Exit(1)


def adapt(
    entity: Annotated[str, typer.Option(help="The entity whose labels to fit a head on.")],
    node_id: Target = None,
    broker: Broker = "mqtt://localhost:1883",
    username: Username = None,
    password: PasswordOption = None,
    cafile: Cafile = None,
    certfile: TlsFile = None,
    keyfile: TlsFile = None,
    timeout: Timeout = 60.0,
) -> None:
    """Fit ENTITY's head from the labels given in the Teach view, on the running node; it
    serves the result only if cross-validation says it is better. Exit 0: swapped;
    1: kept its model (the reason is printed); 2: no answer or an error."""
    _remote("adapt", node_id, (broker, username, password, cafile, certfile, keyfile),
            timeout, entity=entity)  # fmt: skip


def rollback(
    node_id: Target = None,
    broker: Broker = "mqtt://localhost:1883",
    username: Username = None,
    password: PasswordOption = None,
    cafile: Cafile = None,
    certfile: TlsFile = None,
    keyfile: TlsFile = None,
    timeout: Timeout = 60.0,
) -> None:
    """Serve the previous model again (after `node adapt` or a provisioned update)."""
    _remote("rollback", node_id, (broker, username, password, cafile, certfile, keyfile), timeout)
