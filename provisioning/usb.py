"""The USB stick side: where artifacts live on a stick, and copying them there safely.

Stick layout: ``MOUNTPOINT/repedge/<name>-<version>/`` (one folder per artifact). A copy is
written under a hidden temporary name and renamed into place only when complete and
fsynced, so a node polling the stick never sees half an artifact under its real name.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from provisioning.artifact import (
    BUNDLE_DIR,
    MANIFEST_NAME,
    SIGNATURE_NAME,
    ArtifactError,
    artifact_dir_name,
    check_files,
    read_manifest_unverified,
)
from provisioning.fsutil import (
    copy_durable,
    fsync_dir,
    is_real_dir,
    is_regular_file,
    sha256_uncached,
)

STICK_DIR = "repedge"


def find_artifacts(mount: Path) -> list[Path]:
    """Artifact folders on a stick (or ``mount`` itself if it is one); temp copies skipped.

    Symlinked folders are listed too, so that the installer refuses them with a reason
    (:func:`check_real_folders`) instead of ignoring them without a word.
    """
    if (mount / MANIFEST_NAME).exists():
        return [mount]
    root = mount / STICK_DIR
    try:
        entries = sorted(root.iterdir())
    except OSError:
        return []
    return [p for p in entries if not p.name.startswith(".") and p.is_dir()]


def check_real_folders(mount: Path, artifact: Path) -> None:
    """Refuse an artifact reached through a symlinked folder on the stick.

    ``MOUNT/repedge``, the artifact folder and its ``bundle/`` must be real folders: a link
    could point at any folder on the node (or at another stick's files), and the files'
    own O_NOFOLLOW checks do not look at the folders above them. ``mount`` itself is the
    operator's choice and may be a link.
    """
    folders = [artifact / BUNDLE_DIR]
    if artifact != mount:
        folders[:0] = [mount / STICK_DIR, artifact]
    for folder in folders:
        if os.path.islink(folder):
            raise ArtifactError(f"{folder} is a symlink; symlinked folders are refused")
        if not is_real_dir(folder):
            raise ArtifactError(f"{folder} is missing or not a folder")


def write_to_stick(artifact: Path, mount: Path) -> Path:
    """Copy an artifact folder onto a mounted stick, atomically, and read it back.

    Returns the artifact's folder on the stick. An identical copy already there is kept.
    """
    manifest, manifest_bytes = read_manifest_unverified(artifact)
    check_files(artifact / BUNDLE_DIR, manifest)  # never copy a broken source
    if not mount.is_dir():
        raise ArtifactError(f"{mount} is not a folder; is the stick mounted?")
    root = mount / STICK_DIR
    if os.path.islink(root):
        raise ArtifactError(f"{root} is a symlink; write to a real folder on the stick")
    created_root = not root.exists()
    root.mkdir(exist_ok=True)
    if created_root:
        fsync_dir(mount)
    final = root / artifact_dir_name(manifest.name, manifest.version)
    if final.exists():
        try:
            _read_back(artifact, final, manifest_bytes)
        except ArtifactError as exc:
            raise ArtifactError(
                f"{final} already exists and differs ({exc}); delete it first"
            ) from exc
        return final

    staging = Path(tempfile.mkdtemp(dir=root, prefix=f".{final.name}."))
    try:
        (staging / BUNDLE_DIR).mkdir()
        for name in manifest.files:
            copy_durable(artifact / BUNDLE_DIR / name, staging / BUNDLE_DIR / name)
        for name in (MANIFEST_NAME, SIGNATURE_NAME):
            copy_durable(artifact / name, staging / name)
        fsync_dir(staging / BUNDLE_DIR)
        fsync_dir(staging)
        os.rename(staging, final)
        fsync_dir(root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    try:
        _read_back(artifact, final, manifest_bytes)
    except ArtifactError:
        shutil.rmtree(final, ignore_errors=True)  # a bad copy must not look like an artifact
        raise
    return final


def _read_back(source: Path, copy: Path, manifest_bytes: bytes) -> None:
    """The copy on the stick, as read from the medium, equals the source."""
    manifest, copied_bytes = read_manifest_unverified(copy)
    if copied_bytes != manifest_bytes:
        raise ArtifactError(f"{copy / MANIFEST_NAME} differs from {source / MANIFEST_NAME}")
    signature = copy / SIGNATURE_NAME
    if not is_regular_file(signature) or sha256_uncached(signature) != sha256_uncached(
        source / SIGNATURE_NAME
    ):
        raise ArtifactError(f"{signature} differs from the source's")
    check_files(copy / BUNDLE_DIR, manifest)
