"""`provision`: sign model bundles, carry them on a USB stick, install them on a node."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from common.cli import VersionOption
from edgemodel.bundle import BundleError, ModelBundle
from edgemodel.canaries import DEFAULT_CANARIES, compute_canaries
from edgemodel.inference import Classifier
from provisioning.artifact import (
    ArtifactError,
    build_artifact,
    check_files,
    read_verified,
    runtime_of,
)
from provisioning.install import Installer, StateError
from provisioning.keys import KeyFileError, fingerprint, load_private_key, load_trusted_keys
from provisioning.keys import generate_keypair as _generate_keypair
from provisioning.usb import write_to_stick
from provisioning.versions import VersionError

app = typer.Typer(
    help=(
        "Signed model updates for air-gapped nodes. On the trainer host: `keygen` once, then "
        "`bundle` (sign a model) and `write` (copy it to a USB stick). On the node: `install` "
        "(or run `node start --watch-mount`), which accepts only models signed by a key the "
        "node trusts."
    ),
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",  # re-flows docstring paragraphs instead of keeping breaks
)


@app.callback()
def _main(version: VersionOption = False) -> None:
    """Signed model bundles for air-gapped nodes."""


TrustKeys = Annotated[
    list[Path],
    typer.Option(
        "--trust-key",
        help="Public key (.pub) the node trusts; repeat for several. Artifacts signed by any "
        "other key are refused.",
    ),
]
StateDir = Annotated[
    Path,
    typer.Option(
        "--state-dir",
        help="Where the node keeps installed models (slots/) and active.json.",
    ),
]


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(1)


@app.command()
def keygen(
    private_key: Annotated[
        Path, typer.Argument(help="Private key file to create (kept secret, mode 0600).")
    ],
    public_key: Annotated[
        Path | None,
        typer.Option("--public", help="Public key file to create [default: PRIVATE_KEY.pub]."),
    ] = None,
) -> None:
    """Create an Ed25519 signing key pair (run once, on the trainer host).

    Copy the .pub file to every node's configuration; keep the private key off the nodes.
    Set REPEDGE_KEY_PASSPHRASE to encrypt the private key.
    """
    public_key = public_key or private_key.with_name(private_key.name + ".pub")
    try:
        public = _generate_keypair(private_key, public_key)
    except KeyFileError as exc:
        raise _fail(str(exc)) from exc
    typer.echo(f"private key: {private_key} (mode 0600, keep it secret)")
    typer.echo(f"public key:  {public_key} (give this to the nodes)")
    typer.echo(f"fingerprint: {fingerprint(public)}")


@app.command()
def bundle(
    bundle_dir: Annotated[Path, typer.Argument(metavar="BUNDLE", help="Model bundle folder.")],
    key: Annotated[Path, typer.Option("--key", help="Private signing key from `keygen`.")],
    version: Annotated[
        str,
        typer.Option(
            "--version",
            help="Release version, dotted integers compared numerically (3, 1.4.2). Nodes "
            "refuse anything not newer than what they already accepted.",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Folder to write the artifact into.")] = (
        Path("artifacts")
    ),
    canary: Annotated[
        list[str] | None,
        typer.Option(
            "--canary",
            help="Tweet whose label the node re-checks before switching; repeat for several "
            "[default: a built-in set of five].",
        ),
    ] = None,
) -> None:
    """Sign a model bundle into an artifact ready for a USB stick.

    Runs the model on the canary tweets now and records their labels, so a node can prove
    it runs the same model the same way before serving it.
    """
    try:
        signing_key = load_private_key(key)
        model = ModelBundle.load(bundle_dir)
        classifier = Classifier(model)
        canaries, warnings = compute_canaries(classifier, canary or list(DEFAULT_CANARIES))
        path = build_artifact(
            model, signing_key, version, out, canaries, runtime=runtime_of(classifier)
        )
    except (KeyFileError, BundleError, ArtifactError, VersionError, ValueError) as exc:
        raise _fail(str(exc)) from exc
    for warning in warnings:
        typer.secho(f"warning: {warning}", fg=typer.colors.YELLOW, err=True)
    typer.echo(f"artifact: {path}")
    typer.echo(f"signed by {fingerprint(signing_key.public_key())}, version {version}")
    for c in canaries:
        typer.echo(f"  canary {c.label:>9}: {c.text}")


@app.command()
def write(
    artifact: Annotated[Path, typer.Argument(help="Artifact folder made by `bundle`.")],
    to: Annotated[Path, typer.Option("--to", help="Mount point of the USB stick.")],
) -> None:
    """Copy an artifact onto a USB stick (atomically) and verify the copy by reading it back.

    Unmount the stick before pulling it out.
    """
    try:
        path = write_to_stick(artifact, to)
    except (ArtifactError, OSError) as exc:
        raise _fail(str(exc)) from exc
    typer.echo(f"written and verified: {path}")


@app.command()
def verify(
    artifact: Annotated[Path, typer.Argument(help="Artifact folder (on disk or on a stick).")],
    trust_key: TrustKeys,
) -> None:
    """Check an artifact's signature and file hashes without installing it."""
    try:
        verified = read_verified(artifact, load_trusted_keys(trust_key))
        check_files(verified.bundle_dir, verified.manifest)
    except (KeyFileError, ArtifactError, OSError) as exc:
        raise _fail(str(exc)) from exc
    m = verified.manifest
    typer.echo(f"ok: {m.name} version {m.version}, signed by {verified.signer.fingerprint}")
    # What the node's label records will carry as model.bundle_sha256 once it serves this.
    typer.echo(f"bundle sha256: {m.signed_bundle_sha256}")


@app.command()
def install(
    mount: Annotated[
        Path, typer.Option("--from", help="Mount point of the USB stick (or an artifact folder).")
    ],
    state_dir: StateDir,
    trust_key: TrustKeys,
) -> None:
    """Install the newest signed model from a stick on this node.

    Verifies signature and hashes, refuses downgrades, self-tests the model on its canary
    tweets, then switches. On any failure the current model stays active. Restart the node
    service afterwards unless it runs with --watch-mount (which installs by itself).
    """
    try:
        installer = Installer(state_dir, trust_key)
    except KeyFileError as exc:
        raise _fail(str(exc)) from exc
    result = installer.install_from(mount)
    if result.ok or result.outcome == "unchanged":
        typer.echo(result.reason)
        return
    raise _fail(f"{result.reason} (active model unchanged)")


@app.command()
def rollback(state_dir: StateDir, trust_key: TrustKeys) -> None:
    """Make the previously installed model active again (restart the node service after)."""
    try:
        result = Installer(state_dir, trust_key).rollback()
    except (KeyFileError, StateError) as exc:
        raise _fail(str(exc)) from exc
    if not result.ok:
        raise _fail(result.reason)
    typer.echo(result.reason)


@app.command()
def status(state_dir: StateDir) -> None:
    """Show the active and previous model versions and the downgrade floor."""
    path = state_dir / "active.json"
    if not path.exists():
        typer.echo("no model installed yet")
        return
    typer.echo(json.dumps(json.loads(path.read_text()), indent=2))
