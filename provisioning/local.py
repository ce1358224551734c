"""Models made on the node itself (``node adapt``) installed into the same slots as signed ones.

An adapted bundle is the served bundle plus one entity's head; the node fits it from the
labels given in the Teach view, so there is no operator key to sign it with. It goes
through the install path's own rules all the same: its own slot with an ``artifact.json``
(files with sha256 and size, the canary tweets it answered when it was made; no
signature, and ``local.json`` saying where it came from), ``active.json`` replaced
atomically with the previous model kept, so ``node rollback`` and provisioning's rollback
both restore it. A local slot's version continues the installed one in a fourth place
("2" -> "2.0.0.1"), so any newer signed release still installs over it.

The same lock as provisioning/install.py: the mount watcher and a local install never
switch models at once.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edgemodel.bundle import ModelBundle
from edgemodel.canaries import Canary
from edgemodel.inference import Classifier
from provisioning.artifact import (
    BUNDLE_DIR,
    MANIFEST_NAME,
    ArtifactManifest,
    runtime_of,
    stage_bundle,
)
from provisioning.fsutil import fsync_dir
from provisioning.install import (
    HISTORY_LENGTH,
    SLOTS_DIR,
    StateError,
    read_state,
    state_lock,
    write_state,
)
from provisioning.versions import parse_version

LOCAL_MARKER = "local.json"


class LocalInstallError(Exception):
    """The state folder cannot take the model (unreadable state, no previous model)."""


def next_local_version(*versions: str | None) -> str:
    """One past the newest of ``versions`` in the fourth place: 2 -> 2.0.0.1 -> 2.0.0.2."""
    known = [parse_version(v) for v in versions if v]
    newest = max(known) if known else (0,)
    parts = [*newest, 0, 0, 0][:4]
    parts[3] += 1
    return ".".join(map(str, parts))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class LocalSlots:
    """Install node-made bundles into (and roll back within) a provisioning state folder."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.slots = self.state_dir / SLOTS_DIR

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.slots.mkdir(parents=True, exist_ok=True)
        with state_lock(self.state_dir):
            yield

    def install(
        self,
        bundle: ModelBundle,
        classifier: Classifier,
        canaries: Sequence[Canary],
        origin: dict[str, Any],
    ) -> tuple[str, Path]:
        """Copy ``bundle`` into a new slot and make it active; (slot version, bundle folder)."""
        try:
            with self._locked():
                state = read_state(self.state_dir)
                version = next_local_version(state.get("active"), state.get("highest_accepted"))
                slot = self.slots / version
                shutil.rmtree(slot, ignore_errors=True)  # never active: left by a crash
                staging = Path(tempfile.mkdtemp(dir=self.slots, prefix=f".staging-{version}."))
                try:
                    manifest = self._stage(bundle, classifier, canaries, version, staging)
                    (staging / LOCAL_MARKER).write_text(json.dumps(origin, indent=2) + "\n")
                    fsync_dir(staging)
                    os.rename(staging, slot)
                    fsync_dir(self.slots)
                except BaseException:
                    shutil.rmtree(staging, ignore_errors=True)
                    raise
                history = list(state.get("history", []))[-(HISTORY_LENGTH - 1) :]
                history.append(
                    {
                        "version": version,
                        "name": manifest.name,
                        "installed": _now(),
                        "source": origin.get("source", "local"),
                        "signer": None,
                    }
                )
                write_state(
                    self.state_dir,
                    {
                        **state,
                        "active": version,
                        "previous": state.get("active"),
                        "highest_accepted": version,
                        "history": history,
                    },
                )
                self._prune()
        except StateError as exc:
            raise LocalInstallError(str(exc)) from exc
        return version, slot / BUNDLE_DIR

    @staticmethod
    def _stage(
        bundle: ModelBundle,
        classifier: Classifier,
        canaries: Sequence[Canary],
        version: str,
        staging: Path,
    ) -> ArtifactManifest:
        manifest = stage_bundle(
            bundle,
            staging,
            version=version,
            created=_now(),
            runtime=runtime_of(classifier),
            canaries=list(canaries),
        )
        (staging / MANIFEST_NAME).write_bytes(manifest.to_bytes())
        fsync_dir(staging / BUNDLE_DIR)
        return manifest

    def _prune(self) -> None:
        state = read_state(self.state_dir)
        keep = {state.get("active"), state.get("previous")}
        for entry in self.slots.iterdir():
            if entry.name not in keep:
                shutil.rmtree(entry, ignore_errors=True)

    def rollback(self) -> tuple[str, str, Path, str | None]:
        """Make the previous slot active again: (from, to, its bundle folder, its variant).
        The node installs the model it served as a slot before its first adaptation, so
        there is one to go back to."""
        try:
            with self._locked():
                state = read_state(self.state_dir)
                active, previous = state.get("active"), state.get("previous")
                if not active:
                    raise LocalInstallError("nothing installed: no model to roll back from")
                if not previous or not (self.slots / previous / BUNDLE_DIR).is_dir():
                    raise LocalInstallError(f"no previous model kept to roll back to from {active}")
                try:
                    manifest = (self.slots / previous / MANIFEST_NAME).read_bytes()
                    variant: str | None = ArtifactManifest.from_bytes(manifest).variant
                except Exception:  # the bundle's own default variant then
                    variant = None
                write_state(self.state_dir, {**state, "active": previous, "previous": active})
        except StateError as exc:
            raise LocalInstallError(str(exc)) from exc
        return active, previous, self.slots / previous / BUNDLE_DIR, variant
