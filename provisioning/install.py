"""Installing a signed artifact on a node: verify, stage, self-test, switch, keep a rollback.

State folder::

    DIR/active.json          {"active", "previous", "highest_accepted", "history"}; replaced
                             atomically, so switching model and raising the downgrade floor
                             are one step that cannot half-happen
    DIR/slots/<version>/     artifact.json, artifact.json.sig, bundle/ (the active and the
                             previous slot are kept; older ones are pruned)
    DIR/.lock                one installer at a time (node watcher vs. an operator's CLI)

Checks, in order (cheap and key-only checks first, so unsigned data is never acted on):
signature over artifact.json with a configured Ed25519 key -> manifest format -> version newer
than the highest ever accepted -> runtime available -> every file copied to local disk with
its size and sha256 matching -> bundle loads -> canary tweets give the signed labels ->
switch. Any failure leaves active.json untouched, so the previous model keeps serving.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.timestamps import utc_now
from edgemodel.bundle import ModelBundle, write_json_atomic
from edgemodel.canaries import check_canaries
from edgemodel.inference import Classifier
from provisioning.artifact import (
    BUNDLE_DIR,
    MANIFEST_NAME,
    SIGNATURE_NAME,
    ArtifactError,
    ArtifactManifest,
    VerifiedArtifact,
    read_verified,
)
from provisioning.fsutil import (
    CopyError,
    copy_durable,
    fsync_dir,
    is_real_dir,
    is_regular_file,
    write_new_durable,
)
from provisioning.keys import load_trusted_keys
from provisioning.usb import check_real_folders, find_artifacts
from provisioning.versions import is_newer, parse_version

log = logging.getLogger(__name__)

STATE_FILE = "active.json"
SLOTS_DIR = "slots"
LOCK_FILE = ".lock"
HISTORY_LENGTH = 20

EventSink = Callable[[dict[str, Any]], None]


class StateError(Exception):
    """The node's install state cannot be read; installs are refused until it is fixed."""


@dataclass
class InstallResult:
    """What one install attempt did. ``outcome``: installed, rejected, unchanged, no-artifact."""

    ok: bool
    reason: str
    version: str | None = None
    bundle_path: Path | None = None
    classifier: Classifier | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    outcome: str = "rejected"
    artifact: Path | None = None


def _now() -> str:
    return utc_now()  # the wire's one timestamp form (common/timestamps.py)


def read_state(state_dir: Path) -> dict[str, Any]:
    """The node's provisioning state (active.json); {} before the first install."""
    path = Path(state_dir) / STATE_FILE
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise StateError(f"cannot read {path}: {exc}") from exc
    if not isinstance(state, dict):
        raise StateError(f"{path} is not a JSON object")
    return state


def write_state(state_dir: Path, state: dict[str, Any]) -> None:
    """Replace active.json atomically."""
    write_json_atomic(state_dir / STATE_FILE, state)
    fsync_dir(state_dir)  # the rename itself must survive a power cut


@contextmanager
def state_lock(state_dir: Path) -> Iterator[None]:
    """Held while the models switch: the mount watcher, a node-made install and the
    rollbacks never switch at once."""
    with open(state_dir / LOCK_FILE, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def installed_model(state_dir: Path) -> Path | None:
    """The active slot's bundle folder, or None before the first install.

    Needs no keys: what is in a slot was verified when it was installed, and the node
    checks the bundle's hashes again when it loads it.
    """
    active = read_state(state_dir).get("active")
    if not active:
        return None
    folder = Path(state_dir) / SLOTS_DIR / active / BUNDLE_DIR
    return folder if folder.is_dir() else None


@dataclass(frozen=True)
class InstalledSlot:
    """The active model as the node serves it (node.updates.InstalledModel, structurally):
    the slot's bundle folder, the variant that was signed, and the signed canary tweets."""

    path: Path
    variant: str | None
    canaries: list[dict[str, Any]]
    version: str
    # The digest the signed file list implies; the node refuses a slot whose bundle has
    # another (a file changed on the node's disk since install, hashes rewritten or not).
    bundle_sha256: str | None = None


def installed_slot(state_dir: Path) -> InstalledSlot | None:
    """The active slot with its signed variant and canaries; None before the first install.

    The slot's artifact.json was verified when the slot was installed; it is read again
    here for the variant and canaries (an unreadable one leaves both empty).
    """
    folder = installed_model(state_dir)
    if folder is None:
        return None
    variant, canaries, digest = None, [], None
    try:
        signed = ArtifactManifest.from_bytes((folder.parent / MANIFEST_NAME).read_bytes())
        variant, canaries = signed.variant, [c.to_json() for c in signed.canaries]
        digest = signed.signed_bundle_sha256
    except (OSError, ArtifactError) as exc:
        log.warning("cannot read the signed manifest of %s: %s", folder.parent, exc)
    return InstalledSlot(folder, variant, canaries, folder.parent.name, digest)


def signed_bundle_mismatch(signed: ArtifactManifest, bundle: ModelBundle) -> str | None:
    """Why ``bundle`` is not exactly the bundle that was signed, or None if it is: the
    signed files are the bundle's files, no more and no fewer, with the same digests."""
    signed_files, bundle_files = set(signed.files), set(bundle.contract_files())
    if signed_files != bundle_files:
        return (
            f"the signed files {sorted(signed_files)} are not the bundle's files "
            f"{sorted(bundle_files)}"
        )
    if signed.signed_bundle_sha256 != bundle.bundle_sha256:
        return (
            f"bundle digest {bundle.bundle_sha256[:12]}... is not the signed "
            f"{signed.signed_bundle_sha256[:12]}..."
        )
    return None


class Installer:
    def __init__(
        self, state_dir: Path, trusted_keys: list[Path], num_threads: int | None = None
    ) -> None:
        self.state_dir = Path(state_dir)
        self.num_threads = num_threads  # for the Classifier handed to the node
        # A missing or non-Ed25519 key is a configuration error: fail at start-up, loudly.
        self.keys = load_trusted_keys(trusted_keys)
        self.slots = self.state_dir / SLOTS_DIR
        self.slots.mkdir(parents=True, exist_ok=True)

    # -- state ---------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        return read_state(self.state_dir)

    def active_model(self) -> Path | None:
        """The active slot's bundle folder, or None before the first install."""
        return installed_model(self.state_dir)

    def active_slot(self) -> InstalledSlot | None:
        """The active slot with its signed variant and canaries (what the node serves)."""
        return installed_slot(self.state_dir)

    # -- install -------------------------------------------------------------------------

    def install_from(self, mount: Path, on_event: EventSink | None = None) -> InstallResult:
        """Install the newest valid artifact found on ``mount``. Never raises for bad input.

        ``on_event`` sees each event as it happens (the result also lists them all).
        """
        events: list[dict[str, Any]] = []

        def emit(kind: str, **fields: Any) -> None:
            event = {"event": kind, "time": _now(), **fields}
            events.append(event)
            log.info("provisioning %s", event)
            if on_event is not None:
                try:
                    on_event(event)
                except Exception:
                    log.exception("event callback failed")

        try:
            with state_lock(self.state_dir):
                result = self._install_from(Path(mount), emit)
        except Exception as exc:  # a stick pulled mid-read, a full disk: report, keep serving
            log.exception("install from %s failed", mount)
            reason = f"install failed: {type(exc).__name__}: {exc}"
            emit("rejected", version=None, reason=reason, artifact=str(mount))
            result = InstallResult(ok=False, reason=reason)
        result.events = events
        return result

    def _install_from(self, mount: Path, emit: Callable[..., None]) -> InstallResult:
        candidates = find_artifacts(mount)
        if not candidates:
            return InstallResult(
                ok=False, outcome="no-artifact", reason=f"no artifact under {mount}"
            )
        state = self.state()
        verified: list[VerifiedArtifact] = []
        first_rejection: tuple[Path, str] | None = None
        for path in candidates:
            try:
                check_real_folders(mount, path)
                verified.append(read_verified(path, self.keys))
            except ArtifactError as exc:
                emit("rejected", version=None, reason=str(exc), artifact=str(path))
                first_rejection = first_rejection or (path, str(exc))
        if not verified:
            assert first_rejection is not None
            path, reason = first_rejection
            return InstallResult(ok=False, reason=reason, artifact=path)

        artifact = max(verified, key=lambda a: parse_version(a.manifest.version))
        version = artifact.manifest.version
        highest = state.get("highest_accepted")
        if not is_newer(version, highest):
            active = state.get("active")
            if active is not None and parse_version(version) == parse_version(active):
                return InstallResult(
                    ok=False,
                    outcome="unchanged",
                    reason=f"version {version} is already active",
                    version=version,
                    artifact=artifact.path,
                )
            if parse_version(version) == parse_version(highest):
                reason = (
                    f"version {version} was installed before and then rolled back; "
                    "re-sign it with a newer version to install it again"
                )
            else:
                reason = (
                    f"downgrade refused: version {version} is not newer than {highest}, "
                    "the highest version this node has accepted"
                )
            emit("rejected", version=version, reason=reason, artifact=str(artifact.path))
            return InstallResult(ok=False, reason=reason, version=version, artifact=artifact.path)

        emit(
            "install_started",
            version=version,
            reason=None,
            artifact=str(artifact.path),
            signer=artifact.signer.fingerprint,
        )
        try:
            slot, classifier = self._stage_and_self_test(artifact, state)
        except ArtifactError as exc:
            emit("rejected", version=version, reason=str(exc), artifact=str(artifact.path))
            return InstallResult(ok=False, reason=str(exc), version=version, artifact=artifact.path)

        self._switch(state, artifact)
        self._prune()
        reason = f"installed version {version} (previous: {state.get('active') or 'none'})"
        emit(
            "installed",
            version=version,
            reason=reason,
            artifact=str(artifact.path),
            signer=artifact.signer.fingerprint,
            model=classifier.bundle.identity(),
        )
        return InstallResult(
            ok=True,
            outcome="installed",
            reason=reason,
            version=version,
            bundle_path=slot / BUNDLE_DIR,
            classifier=classifier,
            artifact=artifact.path,
        )

    def _stage_and_self_test(
        self, artifact: VerifiedArtifact, state: dict[str, Any]
    ) -> tuple[Path, Classifier]:
        manifest = artifact.manifest
        problem = manifest.runtime.problem()
        if problem:
            raise ArtifactError(f"runtime not available: {problem}")
        slot = self.slots / manifest.version
        if slot.exists():
            if manifest.version in (state.get("active"), state.get("previous")):
                raise ArtifactError(f"slot {slot} is in use")
            shutil.rmtree(slot)  # left over from an interrupted install; never activated

        staging = Path(tempfile.mkdtemp(dir=self.slots, prefix=f".staging-{manifest.version}."))
        try:
            self._copy_checked(artifact, staging)
            os.rename(staging, slot)
            fsync_dir(self.slots)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        try:
            return slot, self._self_test(artifact, slot)
        except BaseException:
            shutil.rmtree(slot, ignore_errors=True)
            raise

    @staticmethod
    def _copy_checked(artifact: VerifiedArtifact, staging: Path) -> None:
        """Copy each file to local disk, checking the bytes written (the stick may change)."""
        (staging / BUNDLE_DIR).mkdir()
        if not is_real_dir(artifact.bundle_dir):  # again, right before use: the stick may change
            raise ArtifactError(f"{artifact.bundle_dir} is a symlink or not a folder; refused")
        for name, entry in artifact.manifest.files.items():
            src = artifact.bundle_dir / name
            if not is_regular_file(src):
                raise ArtifactError(f"{BUNDLE_DIR}/{name} is missing or not a regular file")
            try:
                sha, size = copy_durable(src, staging / BUNDLE_DIR / name, max_bytes=entry.size)
            except (CopyError, OSError) as exc:
                raise ArtifactError(f"cannot copy {BUNDLE_DIR}/{name}: {exc}") from exc
            if size < entry.size:
                raise ArtifactError(
                    f"truncated copy: {BUNDLE_DIR}/{name} has {size} bytes, "
                    f"the signed manifest says {entry.size}"
                )
            if size > entry.size:
                raise ArtifactError(
                    f"oversized file: {BUNDLE_DIR}/{name} is larger than the {entry.size} bytes "
                    "the signed manifest says"
                )
            if sha != entry.sha256:
                raise ArtifactError(
                    f"{BUNDLE_DIR}/{name} does not match its sha256 in the signed manifest "
                    "(corrupted or tampered)"
                )
        write_new_durable(staging / MANIFEST_NAME, artifact.manifest_bytes)
        write_new_durable(staging / SIGNATURE_NAME, artifact.signature)
        fsync_dir(staging / BUNDLE_DIR)
        fsync_dir(staging)

    def _self_test(self, artifact: VerifiedArtifact, slot: Path) -> Classifier:
        try:
            bundle = ModelBundle.load(slot / BUNDLE_DIR, variant=artifact.manifest.variant)
            classifier = Classifier(bundle, num_threads=self.num_threads)
        except Exception as exc:  # a signed but unloadable model is still refused, not raised
            raise ArtifactError(f"self-test failed: the model does not load: {exc}") from exc
        problem = signed_bundle_mismatch(artifact.manifest, bundle)
        if problem:
            raise ArtifactError(f"self-test failed: {problem}")
        problems = check_canaries(classifier, artifact.manifest.canaries)
        if problems:
            raise ArtifactError("self-test failed: " + "; ".join(problems))
        return classifier

    def _switch(self, state: dict[str, Any], artifact: VerifiedArtifact) -> None:
        manifest = artifact.manifest
        history = list(state.get("history", []))[-(HISTORY_LENGTH - 1) :]
        history.append(
            {
                "version": manifest.version,
                "name": manifest.name,
                "installed": _now(),
                "manifest_sha256": artifact.manifest_sha256,
                "signer": artifact.signer.fingerprint,
            }
        )
        write_state(
            self.state_dir,
            {
                "active": manifest.version,
                "previous": state.get("active"),
                "highest_accepted": manifest.version,
                "history": history,
            },
        )

    def _prune(self) -> None:
        state = self.state()
        keep = {state.get("active"), state.get("previous")}
        for entry in self.slots.iterdir():
            if entry.name not in keep:  # older slots and staging left by a crash
                shutil.rmtree(entry, ignore_errors=True)

    # -- rollback ------------------------------------------------------------------------

    def rollback(self) -> InstallResult:
        """Make the previous slot active again. The downgrade floor stays where it is."""
        with state_lock(self.state_dir):
            state = self.state()
            previous, active = state.get("previous"), state.get("active")
            if not previous or not (self.slots / previous / BUNDLE_DIR).is_dir():
                return InstallResult(ok=False, reason="no previous model to roll back to")
            try:
                signed = ArtifactManifest.from_bytes(
                    (self.slots / previous / MANIFEST_NAME).read_bytes()
                )
                bundle = ModelBundle.load(
                    self.slots / previous / BUNDLE_DIR, variant=signed.variant
                )
                classifier = Classifier(bundle, num_threads=self.num_threads)
            except Exception as exc:
                return InstallResult(
                    ok=False, reason=f"previous model in slot {previous} does not load: {exc}"
                )
            write_state(self.state_dir, {**state, "active": previous, "previous": active})
        return InstallResult(
            ok=True,
            outcome="installed",
            reason=f"rolled back from {active} to {previous}",
            version=previous,
            bundle_path=self.slots / previous / BUNDLE_DIR,
            classifier=classifier,
        )
