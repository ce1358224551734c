"""The serving process behind `node start`.

`node start` parses its options (typer, which pulls in pydantic and rich: ~10 MB of RSS)
into one checked :class:`~node.settings.NodeStart` and then execs ``python -m node.serve``
with it, serialized whole, in an environment variable, so the long-running process carries
only what serving needs; it gets the same object back (paths as ``Path``, the broker as
one ``BrokerEndpoint``). :func:`run` can also be called directly. The model is resolved
here, once.

This is the node's composition root: the only module under node/ that imports
provisioning. It builds the model-updates source (provisioning's ``MountUpdates``, see
node/updates.py) and hands it to ``NodeService``; everything else in the node sees only
that interface.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from common.settings import SettingsError, from_json, to_json
from common.text import inert_log_handlers
from edgemodel.defaults import serving_threads

if TYPE_CHECKING:
    from edgemodel.inference import Classifier
    from node.settings import NodeStart
    from node.updates import InstalledModel, ModelUpdates

SPEC_ENV = "REPEDGE_NODE_SPEC"
log = logging.getLogger("repedge.node")


def exec_serve(settings: NodeStart) -> NoReturn:
    """Replace this process (same pid, so signals and supervisors still reach it)."""
    # The environment, not argv: argv (with a broker password) is visible to every user.
    env = {**os.environ, SPEC_ENV: json.dumps(to_json(settings))}
    # numpy's BLAS on one thread: the node's matrices are tiny (head fitting in `node
    # adapt`: 384 x 3), and OpenBLAS's thread pool on a busy 2-core board made that fit
    # 14x slower (50.8 s against 3.6 s for 200 labels, benchmarks/teach_node.py). The
    # model's own threads are the interpreter's, unaffected.
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(name, "1")
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "node.serve"], env)


def default_interpreter_threads() -> int:
    """edgemodel/defaults.py's serving rule (one core fewer than the machine, 1 to 4)."""
    return serving_threads()


class StartError(Exception):
    """A configuration or model problem that stops `node start` with exit status 2."""


def installed_or_default_model(provision_state: Path) -> Path | None:
    """Without --model: the model installed with `provision install`, else the shipped one."""
    from edgemodel.bundle import default_bundle_path

    installed = installed_model(provision_state)
    return installed.path if installed else default_bundle_path()


def installed_model(provision_state: Path) -> InstalledModel | None:
    """The model `provision install` (or the mount watcher) made active, if any."""
    from provisioning.install import StateError, installed_slot

    try:
        return installed_slot(provision_state)
    except StateError as exc:
        raise StartError(str(exc)) from None


def model_updates(settings: NodeStart) -> ModelUpdates:
    """The provisioning side, built here and nowhere else under node/: a mount watcher
    that installs signed artifacts into --provision-state."""
    from provisioning.install import Installer
    from provisioning.keys import KeyFileError
    from provisioning.watch import MountUpdates

    try:
        installer = Installer(
            state_dir=provision_state(settings),
            trusted_keys=settings.trust_keys,
            num_threads=settings.threads or default_interpreter_threads(),
        )
    except KeyFileError as exc:
        raise StartError(f"--trust-key: {exc}") from None
    assert settings.watch_mount is not None
    return MountUpdates(settings.watch_mount, installer)


def adapted_slot_for(model: Path, state_dir: Path) -> Path | None:
    """The active slot's bundle if it is this node's adaptation (provisioning/local.py's
    ``local.json``) of ``model``: the same FlatBuffer. Read without importing provisioning
    (and its cryptography), so a plain --model start stays as small as before."""
    import json as _json

    from edgemodel.bundle import BundleError, ModelBundle

    try:
        active = _json.loads((state_dir / "active.json").read_text()).get("active")
        slot = state_dir / "slots" / str(active)
        if not active or not (slot / "local.json").is_file():
            return None
        if _json.loads((slot / "local.json").read_text()).get("source") != "node adapt":
            return None  # the model served before the first adaptation, not an adaptation
        mine = ModelBundle.load(slot / "bundle")
        given = ModelBundle.load(model)
    except (OSError, ValueError, AttributeError, BundleError):
        return None
    return mine.root if mine.model_sha256 == given.model_sha256 else None


def provision_state(settings: NodeStart) -> Path:
    return settings.provision_state or settings.config.resolved_state_dir / "provisioning"


def load_classifier(
    path: Path,
    variant: str | None,
    threads: int | None,
    canaries: list[dict[str, Any]],
    bundle_sha256: str | None = None,
) -> Classifier:
    """Load and check a model; :class:`StartError` with a clear message if it is unusable.

    Beyond the bundle's own checks (sha256 of every file): the FlatBuffer must load, the
    whole bundle must have ``bundle_sha256`` where one is given (the signed artifact of an
    installed model implies it), and the canary tweets, from the bundle's manifest and from
    ``canaries`` (the signed artifact), must still get their recorded labels.
    """
    from edgemodel.bundle import BundleError
    from edgemodel.inference import Classifier

    try:
        classifier = Classifier.from_path(
            path, variant=variant, num_threads=threads or default_interpreter_threads()
        )
    except BundleError as exc:
        raise StartError(str(exc)) from None
    except Exception as exc:  # the interpreter refuses the file: not a valid FlatBuffer
        raise StartError(f"{path}: the model does not load: {exc}") from None
    served = classifier.bundle.bundle_sha256
    if bundle_sha256 is not None and served != bundle_sha256:
        raise StartError(
            f"{path}: the bundle is not the one that was signed (bundle sha256 "
            f"{served[:12]}..., signed {bundle_sha256[:12]}...); a file changed since install"
        )
    problems = run_canaries(classifier, [*classifier.bundle.manifest.canaries, *canaries])
    if problems:
        raise StartError(
            f"{path}: the model fails its canary tweets, refusing to serve it: "
            + "; ".join(problems)
        )
    return classifier


def run_canaries(classifier: Classifier, canaries: list[dict[str, Any]]) -> list[str]:
    """What goes wrong when ``classifier`` answers ``canaries``; [] when all agree."""
    if not canaries:
        return []
    from edgemodel.canaries import Canary, check_canaries

    try:
        parsed = [
            Canary(text=c["text"], label=c["label"], entity=c.get("entity")) for c in canaries
        ]
    except (KeyError, TypeError) as exc:
        return [f"malformed canary list: {exc!r}"]
    try:
        return check_canaries(classifier, parsed)
    except Exception as exc:
        return [f"running the canaries failed: {type(exc).__name__}: {exc}"]


class LazySlots:
    """provisioning/local.py's ``LocalSlots``, imported on the first adapt or rollback:
    provisioning pulls in cryptography (~9 MiB of RSS) that a node serving a --model
    never needs otherwise."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self._slots: Any = None

    def _get(self) -> Any:
        if self._slots is None:
            from provisioning.local import LocalSlots

            self._slots = LocalSlots(self.state_dir)
        return self._slots

    def install(self, *args: Any, **kwargs: Any) -> tuple[str, Path]:
        return self._get().install(*args, **kwargs)

    def rollback(self) -> tuple[str, str, Path, str | None]:
        return self._get().rollback()


def run(settings: NodeStart) -> int:
    """Serve until SIGTERM/SIGINT; the process exit status."""
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    inert_log_handlers()  # a log line never carries a terminal escape from outside
    from node.memory import return_freed_memory_to_os

    return_freed_memory_to_os()
    from edgemodel.bundle import default_bundle_path
    from node.service import NodeService

    config = settings.config
    try:
        updates = model_updates(settings) if settings.watch_mount else None
        model, variant = settings.model, settings.variant
        canaries: list[dict[str, Any]] = []
        signed_digest: str | None = None
        if model is None:
            # The last installed model, else the shipped default until one is installed
            # (with --watch-mount and no default, tweets wait for the first install).
            if updates is not None:
                installed = updates.active_model()
            else:
                installed = installed_model(provision_state(settings))
            if installed is not None:
                model, canaries = installed.path, list(installed.canaries)
                signed_digest = installed.bundle_sha256
                variant = variant or installed.variant
            else:
                model = default_bundle_path()
            if model is None and updates is None:
                raise StartError(
                    "give --model (no installed model in --provision-state, no default "
                    "model: set REPEDGE_MODEL or restore models/default), or --watch-mount "
                    "to wait for one"
                )
        elif settings.watch_mount is None:
            # --model M, adapted on this node since (`node adapt`): serve the adaptation.
            adapted = adapted_slot_for(model, provision_state(settings))
            if adapted is not None:
                log.info("serving %s: this node's adaptation of --model %s", adapted, model)
                model = adapted
        classifier = (
            load_classifier(model, variant, settings.threads, canaries, signed_digest)
            if model
            else None
        )
    except StartError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    labels = classifier.bundle.labels if classifier else ()
    serving = classifier is not None
    service = NodeService(config, classifier, updates=updates)
    # This frame lives as long as the node: a reference here would keep the first model's
    # interpreter (its packed weights, ~20 MB for 2.0.0) alive after any swap.
    del classifier
    # `node adapt` installs into the same slots as signed models (rollback included).
    service.model_slots = LazySlots(provision_state(settings))
    service.interpreter_threads = settings.threads
    metrics_server = None
    if settings.metrics_port is not None:
        # Imported only when asked for: prometheus_client adds ~1 MiB to the process.
        from node.metrics import attach as attach_metrics

        try:
            metrics_server = attach_metrics(
                service,
                settings.metrics_port,
                settings.metrics_host,
                labels,
            )
        except OSError as exc:
            print(f"error: --metrics-port {settings.metrics_port}: {exc}", file=sys.stderr)
            return 2
    if settings.ha_discovery:
        from node.ha_discovery import attach as attach_ha_discovery

        attach_ha_discovery(service)
    from node.systemd import attach as attach_systemd

    notifier = attach_systemd(service)  # READY=1 and the watchdog, under systemd
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    service.start()
    if not serving:
        log.warning("no model installed yet: tweets wait with the broker until one is provisioned")

    stop.wait()
    notifier.stopping()
    service.stop()
    if metrics_server is not None:
        metrics_server.close()
    return 0


def main() -> int:
    raw = os.environ.pop(SPEC_ENV, None)  # not inherited by anything we start
    if raw is None:
        print(f"node.serve is started by `node start` (it reads ${SPEC_ENV})", file=sys.stderr)
        return 2
    from node.settings import NodeStart

    try:
        settings = from_json(NodeStart, json.loads(raw))
    except (SettingsError, ValueError, TypeError) as exc:
        print(f"error: ${SPEC_ENV}: {exc}", file=sys.stderr)
        return 2
    return run(settings)


if __name__ == "__main__":
    sys.exit(main())
