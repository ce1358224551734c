"""The signed artifact: a model bundle plus a signed manifest, as one folder.

Layout::

    <name>-<version>/
        artifact.json       the manifest: version, runtime, sha256 + size of every file, canaries
        artifact.json.sig   64-byte Ed25519 signature over artifact.json's exact bytes
        bundle/             the model bundle (edgemodel.bundle): manifest.json, labels.json,
                            tokenizer.json, <variant>.tflite

The signature covers the manifest bytes as stored, so the verifier checks the bytes it read
and parses those same bytes; nothing is re-serialised. The manifest names no algorithm and
no key: the node decides both (Ed25519, its configured keys).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgemodel.bundle import MANIFEST_FILE, ModelBundle, bundle_digest
from edgemodel.canaries import Canary
from edgemodel.inference import Classifier, load_interpreter_class
from provisioning.fsutil import (
    copy_durable,
    fsync_dir,
    is_regular_file,
    read_bounded,
    sha256_uncached,
    write_new_durable,
)
from provisioning.keys import SIGNATURE_BYTES, TrustedKey, find_signer, sign
from provisioning.versions import VersionError, parse_version, runtime_version_at_least

if TYPE_CHECKING:  # cryptography loads where a key is used (provisioning/keys.py)
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

ARTIFACT_FORMAT = "repedge-artifact/1"
MANIFEST_NAME = "artifact.json"
SIGNATURE_NAME = "artifact.json.sig"
BUNDLE_DIR = "bundle"
MAX_MANIFEST_BYTES = 1 << 20
MAX_FILES = 32
# Bundle file names are flat and plain: no separators, no "..", no hidden files.
_SAFE_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ArtifactError(Exception):
    """An artifact is unsigned, wrongly signed, malformed or does not match its manifest."""


@dataclass(frozen=True)
class FileEntry:
    sha256: str
    size: int


@dataclass(frozen=True)
class RuntimeRequirement:
    """What the node needs to run the model: the interpreter package and its least version."""

    interpreter: str
    min_version: str

    def problem(self) -> str | None:
        """Why this node cannot meet the requirement, or None if it can."""
        try:
            _, available = load_interpreter_class()
        except RuntimeError:
            return f"this node has no TFLite interpreter; the model needs {self.interpreter}"
        if available != self.interpreter:
            return f"the model needs {self.interpreter}, this node runs {available}"
        installed = metadata.version(available)
        if not runtime_version_at_least(installed, self.min_version):
            return (
                f"the model needs {self.interpreter} >= {self.min_version}, "
                f"this node has {installed}"
            )
        return None


@dataclass(frozen=True)
class ArtifactManifest:
    name: str
    version: str
    created: str
    runtime: RuntimeRequirement
    bundle_version: str
    variant: str
    files: dict[str, FileEntry]
    canaries: list[Canary]
    format: str = ARTIFACT_FORMAT
    # The bundle's own digest (ModelBundle.bundle_sha256) at signing; None in artifacts
    # signed before it existed.
    bundle_sha256: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "name": self.name,
            "version": self.version,
            "created": self.created,
            "runtime": {
                "interpreter": self.runtime.interpreter,
                "min_version": self.runtime.min_version,
            },
            "bundle": {
                "version": self.bundle_version,
                "variant": self.variant,
                **({"sha256": self.bundle_sha256} if self.bundle_sha256 else {}),
            },
            "files": {
                name: {"sha256": e.sha256, "size": e.size} for name, e in sorted(self.files.items())
            },
            "canaries": [c.to_json() for c in self.canaries],
        }

    @property
    def signed_bundle_sha256(self) -> str:
        """The bundle digest the signed file list implies (edgemodel.bundle.bundle_digest):
        what ModelBundle.bundle_sha256 of the installed bundle must be."""
        return bundle_digest({name: e.sha256 for name, e in self.files.items()})

    def to_bytes(self) -> bytes:
        return (json.dumps(self.to_json(), indent=2, ensure_ascii=False) + "\n").encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> ArtifactManifest:
        """Parse and validate strictly; only called on bytes whose signature checked out."""
        try:
            doc = json.loads(data.decode("utf-8"))
        except RecursionError:
            raise ArtifactError(f"{MANIFEST_NAME} is not valid JSON: nested too deeply") from None
        except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
            raise ArtifactError(f"{MANIFEST_NAME} is not valid JSON: {exc}") from exc
        try:
            if doc["format"] != ARTIFACT_FORMAT:
                raise ArtifactError(
                    f"unknown artifact format {doc['format']!r} (this node reads {ARTIFACT_FORMAT})"
                )
            parse_version(doc["version"])
            files = {name: _file_entry(name, e) for name, e in doc["files"].items()}
            canaries = [
                Canary(text=_str(c["text"]), label=_str(c["label"]), entity=c.get("entity"))
                for c in doc["canaries"]
            ]
            manifest = cls(
                name=_str(doc["name"]),
                version=doc["version"],
                created=_str(doc["created"]),
                runtime=RuntimeRequirement(
                    interpreter=_str(doc["runtime"]["interpreter"]),
                    min_version=_str(doc["runtime"]["min_version"]),
                ),
                bundle_version=_str(doc["bundle"]["version"]),
                variant=_str(doc["bundle"]["variant"]),
                files=files,
                canaries=canaries,
                bundle_sha256=_optional_sha256(doc["bundle"].get("sha256")),
            )
        except VersionError as exc:
            raise ArtifactError(str(exc)) from exc
        except (KeyError, TypeError, AttributeError) as exc:
            raise ArtifactError(f"malformed {MANIFEST_NAME}: {exc!r}") from exc
        if not 0 < len(files) <= MAX_FILES or MANIFEST_FILE not in files:
            raise ArtifactError(f"{MANIFEST_NAME} must list the bundle's files")
        if not canaries:
            raise ArtifactError(f"{MANIFEST_NAME} lists no canary tweets; nothing to self-test")
        if manifest.bundle_sha256 not in (None, manifest.signed_bundle_sha256):
            raise ArtifactError(f"{MANIFEST_NAME}: bundle sha256 does not match its file list")
        return manifest


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {value!r}")
    return value


def _optional_sha256(value: Any) -> str | None:
    if value is not None and not (isinstance(value, str) and _SHA256.match(value)):
        raise ArtifactError(f"{MANIFEST_NAME}: bad bundle sha256")
    return value


def _file_entry(name: str, entry: Any) -> FileEntry:
    if not _SAFE_FILE.match(name):
        raise ArtifactError(f"{MANIFEST_NAME} lists an unsafe file name {name!r}")
    sha, size = entry["sha256"], entry["size"]
    if not (isinstance(sha, str) and _SHA256.match(sha)):
        raise ArtifactError(f"{MANIFEST_NAME}: bad sha256 for {name}")
    if not (isinstance(size, int) and not isinstance(size, bool) and size >= 0):
        raise ArtifactError(f"{MANIFEST_NAME}: bad size for {name}")
    return FileEntry(sha256=sha, size=size)


@dataclass(frozen=True)
class VerifiedArtifact:
    """An artifact whose manifest is signed by a trusted key (its files not yet checked)."""

    path: Path
    manifest: ArtifactManifest
    signer: TrustedKey
    # The exact bytes that were verified: the node stores these, never a re-read of the stick.
    manifest_bytes: bytes
    signature: bytes

    @property
    def manifest_sha256(self) -> str:
        return hashlib.sha256(self.manifest_bytes).hexdigest()

    @property
    def bundle_dir(self) -> Path:
        return self.path / BUNDLE_DIR


def artifact_dir_name(name: str, version: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._-") or "model"
    return f"{safe}-{version}"


def read_verified(path: Path, keys: Sequence[TrustedKey]) -> VerifiedArtifact:
    """Check the signature with the pinned keys, then parse. Raises ArtifactError."""
    manifest_path, signature_path = path / MANIFEST_NAME, path / SIGNATURE_NAME
    if not is_regular_file(manifest_path):
        raise ArtifactError(f"{path} has no {MANIFEST_NAME}")
    if not is_regular_file(signature_path):
        raise ArtifactError(f"unsigned artifact: {path} has no {SIGNATURE_NAME}")
    data = read_bounded(manifest_path, MAX_MANIFEST_BYTES)
    if len(data) > MAX_MANIFEST_BYTES:
        raise ArtifactError(f"{manifest_path} is larger than {MAX_MANIFEST_BYTES} bytes")
    signature = read_bounded(signature_path, SIGNATURE_BYTES)
    if len(signature) != SIGNATURE_BYTES:
        raise ArtifactError(
            f"{SIGNATURE_NAME} holds {len(signature)} bytes or more, not a "
            f"{SIGNATURE_BYTES}-byte Ed25519 signature"
        )
    signer = find_signer(keys, data, signature)
    if signer is None:
        trusted = ", ".join(k.fingerprint for k in keys)
        raise ArtifactError(
            f"bad signature: {MANIFEST_NAME} is not signed by a trusted key (it was changed "
            f"after signing, or signed with another key; trusted: {trusted})"
        )
    manifest = ArtifactManifest.from_bytes(data)
    return VerifiedArtifact(
        path=path,
        manifest=manifest,
        signer=signer,
        manifest_bytes=data,
        signature=signature,
    )


def check_files(bundle_dir: Path, manifest: ArtifactManifest) -> None:
    """Compare every bundle file as stored (read past the page cache) with the manifest."""
    for name, entry in manifest.files.items():
        file = bundle_dir / name
        if not is_regular_file(file):
            raise ArtifactError(f"{BUNDLE_DIR}/{name} is missing or not a regular file")
        size = file.stat().st_size
        if size != entry.size:
            raise ArtifactError(
                f"truncated or altered copy: {BUNDLE_DIR}/{name} has {size} bytes, "
                f"the manifest says {entry.size}"
            )
        if sha256_uncached(file) != entry.sha256:
            raise ArtifactError(f"{BUNDLE_DIR}/{name} does not match its sha256 in the manifest")


def read_manifest_unverified(path: Path) -> tuple[ArtifactManifest, bytes]:
    """For the packaging side only (copying our own artifact): parse without a key."""
    file = path / MANIFEST_NAME
    if not is_regular_file(file):
        raise ArtifactError(f"{path} is not an artifact: {MANIFEST_NAME} is missing")
    data = file.read_bytes()
    return ArtifactManifest.from_bytes(data), data


def bundle_files(bundle: ModelBundle) -> list[str]:
    """The files the bundle contract names; strays in the folder are not shipped."""
    return bundle.contract_files()


def runtime_of(classifier: Classifier) -> RuntimeRequirement:
    """The interpreter that ran the canaries at packaging time is the least the node needs."""
    return RuntimeRequirement(
        interpreter=classifier.runtime, min_version=metadata.version(classifier.runtime)
    )


def stage_bundle(bundle: ModelBundle, staging: Path, **fields: Any) -> ArtifactManifest:
    """Copy the bundle's files durably into ``staging/bundle/``: the manifest listing them
    (sha256, size) under the bundle's name, version and variant, with ``fields`` (version,
    created, runtime, canaries, ...). A signed artifact and a node-made slot share it."""
    (staging / BUNDLE_DIR).mkdir()
    files = {}
    for name in bundle_files(bundle):
        sha, size = copy_durable(bundle.root / name, staging / BUNDLE_DIR / name)
        files[name] = FileEntry(sha256=sha, size=size)
    return ArtifactManifest(
        name=bundle.manifest.name,
        bundle_version=bundle.manifest.version,
        variant=bundle.variant,
        files=files,
        **fields,
    )


def build_artifact(
    bundle: ModelBundle,
    key: Ed25519PrivateKey,
    version: str,
    out_dir: Path,
    canaries: Iterable[Canary],
    runtime: RuntimeRequirement,
) -> Path:
    """Copy the bundle into ``out_dir/<name>-<version>/``, write and sign its manifest."""
    parse_version(version)
    final = out_dir / artifact_dir_name(bundle.manifest.name, version)
    if final.exists():
        raise ArtifactError(f"{final} already exists; remove it or pick another version")
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir, prefix=f".{final.name}."))
    try:
        manifest = stage_bundle(
            bundle,
            staging,
            version=version,
            created=datetime.now(UTC).isoformat(timespec="seconds"),
            runtime=runtime,
            canaries=list(canaries),
            bundle_sha256=bundle.bundle_sha256,
        )
        data = manifest.to_bytes()
        # The node reads at most MAX_MANIFEST_BYTES (read_verified): never sign what it refuses.
        if len(data) > MAX_MANIFEST_BYTES:
            raise ArtifactError(
                f"{MANIFEST_NAME} would have {len(data)} bytes, more than the "
                f"{MAX_MANIFEST_BYTES} a node reads (too many canaries: fewer entity heads "
                "or shorter canary texts)"
            )
        signature = sign(key, data)
        key.public_key().verify(signature, data)  # never ship a signature we cannot check
        write_new_durable(staging / MANIFEST_NAME, data)
        write_new_durable(staging / SIGNATURE_NAME, signature)
        fsync_dir(staging / BUNDLE_DIR)
        fsync_dir(staging)
        staging.chmod(0o755)  # mkdtemp makes 0700; the artifact is not secret
        os.rename(staging, final)
        fsync_dir(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return final
