"""The serving process behind `node start`.

`node start` parses its options (typer, which pulls in pydantic and rich: ~10 MB of RSS)
and then execs ``python -m node.serve`` with the options in an environment variable, so
the long-running process carries only what serving needs. :func:`run` can also be
called directly.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any, NoReturn

SPEC_ENV = "REPEDGE_NODE_SPEC"
log = logging.getLogger("repedge.node")


def exec_serve(spec: dict[str, Any]) -> NoReturn:
    """Replace this process (same pid, so signals and supervisors still reach it)."""
    # The environment, not argv: argv (with a broker password) is visible to every user.
    env = {**os.environ, SPEC_ENV: json.dumps(spec)}
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "node.serve"], env)


def default_interpreter_threads() -> int:
    """One core fewer than the machine has (1 to 4): the node's MQTT thread and, usually,
    the broker run on the same board, and interpreter threads that outnumber the free
    cores wait on each other, which shows up in the latency tail."""
    return max(1, min(4, (os.cpu_count() or 1) - 1))


def run(spec: dict[str, Any]) -> int:
    """Serve until SIGTERM/SIGINT; the process exit status."""
    logging.basicConfig(
        level=spec.get("log_level", "info").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from node.memory import return_freed_memory_to_os

    return_freed_memory_to_os()
    from edgemodel.bundle import BundleError, default_bundle_path
    from edgemodel.inference import Classifier
    from node.service import NodeConfig, NodeService

    try:
        config = NodeConfig(**{**spec["config"], "state_dir": Path(spec["config"]["state_dir"])})
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    model = Path(spec["model"]) if spec.get("model") else None
    installer = None
    if spec.get("watch_mount"):
        from provisioning.install import Installer
        from provisioning.keys import KeyFileError

        try:
            installer = Installer(
                state_dir=Path(spec["provision_state"]),
                trusted_keys=[Path(k) for k in spec.get("trust_keys", [])],
                num_threads=spec.get("threads") or default_interpreter_threads(),
            )
        except KeyFileError as exc:
            print(f"error: --trust-key: {exc}", file=sys.stderr)
            return 2
        if model is None:
            # The last installed model, else the shipped default until one is installed.
            model = installer.active_model() or default_bundle_path()

    classifier = None
    if model is not None:
        try:
            classifier = Classifier.from_path(
                model,
                variant=spec.get("variant"),
                num_threads=spec.get("threads") or default_interpreter_threads(),
            )
        except BundleError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2

    service = NodeService(config, classifier)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    service.start()

    watcher = None
    if installer is not None:
        from provisioning.watch import MountWatcher

        watcher = MountWatcher(
            mount=Path(spec["watch_mount"]),
            installer=installer,
            on_installed=lambda new, result: service.swap_classifier(new),
            on_event=service.record_event,
        )
        watcher.start()
    if classifier is None:
        log.warning("no model installed yet: tweets wait with the broker until one is provisioned")

    stop.wait()
    if watcher is not None:
        watcher.stop()
    service.stop()
    return 0


def main() -> int:
    raw = os.environ.pop(SPEC_ENV, None)  # not inherited by anything we start
    if raw is None:
        print(f"node.serve is started by `node start` (it reads ${SPEC_ENV})", file=sys.stderr)
        return 2
    return run(json.loads(raw))


if __name__ == "__main__":
    sys.exit(main())
