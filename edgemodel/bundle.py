"""The model bundle: the one contract between trainer, provisioning and node.

A bundle is a folder::

    manifest.json      identity, preprocessing, the sha256 of every other file, metrics
    labels.json        class names, in the order of the model's logits
    tokenizer.json     Hugging Face `tokenizers` file (WordPiece for the BERT family)
    <variant>.tflite   one or more FlatBuffer variants: fp32, fp16, int8, int8-full, int4
    entity_heads.json  optional per-entity heads (edgemodel.entity_heads, `trainer adapt`)

The manifest lists the sha256 of every other file, and :meth:`ModelBundle.load` checks
every file it serves against it: labels.json, the tokenizer, the selected FlatBuffer and the
heads. The bundle's own identity, :attr:`ModelBundle.bundle_sha256`, is one digest over
all of its files (manifest.json included); label records carry it, so two bundles that
differ in any file (two adapted brands of one parent, say) are told apart.

The trainer writes bundles with :func:`write_bundle`; the node and provisioning read them
with :meth:`ModelBundle.load`. Nothing else in the code base knows these file names.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edgemodel.entity_heads import ENTITY_HEADS_FILE, EntityHeadsError, load_entity_heads
from edgemodel.textclean import CleaningConfig

# Format 2 adds labels_sha256, so that every file of a bundle is covered by its manifest.
# Format 1 bundles (models/default up to 2.0.0) still load: their labels.json is checked
# against nothing, but bundle_sha256 covers its bytes all the same.
BUNDLE_FORMAT = "repedge-bundle/2"
LEGACY_FORMATS = ("repedge-bundle/1",)
MANIFEST_FILE = "manifest.json"
LABELS_FILE = "labels.json"
TOKENIZER_FILE = "tokenizer.json"

# Variant name -> (file name, quantization scheme). The order is the node's preference
# when a bundle does not name a default.
VARIANT_FILES: dict[str, tuple[str, str]] = {
    "int8": ("int8.tflite", "dynamic-range int8 weights, float activations"),
    "fp16": ("fp16.tflite", "float16 weights"),
    "fp32": ("fp32.tflite", "float32"),
    "int8-full": ("int8-full.tflite", "full-integer int8, calibrated on unpadded tweets"),
    "int4": (
        "int4.tflite",
        "int4 dense weights (dynamic range), int4 token table with per-row scales",
    ),
}

# The FlatBuffer's signature: every variant takes these int32 [batch, seq] inputs and
# returns float32 logits [batch, num_labels] under this name.
INPUT_NAMES = ("input_ids", "segment_ids", "attention_mask")
OUTPUT_NAME = "logits"
# Optional outputs (bundles without them keep working): whether a tweet given with an
# entity is about it (logits over RELATED_LABELS), and the pooled sentence vector that
# per-entity heads (trainer adapt) read.
RELATED_OUTPUT = "related_logits"
RELATED_LABELS = ("unrelated", "related")
EMBEDDING_OUTPUT = "embedding"

_CHUNK = 1 << 20
# File names a manifest may give: flat and plain (no separators, "..", hidden files).
_SAFE_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# manifest.json and labels.json are read whole; a real one has a few kilobytes.
MAX_JSON_BYTES = 4 << 20


def _shipped_bundle_dir() -> Path:
    """The product's default model (see models/default/MODEL_CARD.md): installed from a
    wheel it is edgemodel/default_model/ (pyproject.toml maps models/default there), in a
    checkout models/default. REPEDGE_MODEL points elsewhere."""
    here = Path(__file__).resolve()
    installed = here.parent / "default_model"
    return installed if installed.is_dir() else here.parents[1] / "models" / "default"


DEFAULT_BUNDLE_DIR = _shipped_bundle_dir()


def default_bundle_path() -> Path | None:
    """The bundle `node start` serves when no --model is given, if there is one."""
    chosen = Path(os.environ.get("REPEDGE_MODEL") or DEFAULT_BUNDLE_DIR)
    return chosen if (chosen / MANIFEST_FILE).is_file() or chosen.is_file() else None


class BundleError(Exception):
    """A bundle is missing, incomplete, corrupt or of an unknown format."""


def bundle_digest(file_digests: Mapping[str, str]) -> str:
    """The digest of a whole bundle from the sha256 of each of its files: sha256 of the
    ``sha256sum``-style listing, a line ``<sha256>  <file>`` per file, sorted by name.
    Reproduce it in a bundle folder with
    ``sha256sum manifest.json labels.json tokenizer.json *.tflite [entity_heads.json] |
    LC_ALL=C sort -k 2 | sha256sum`` (every file the manifest names, and only those)."""
    listing = "".join(f"{sha}  {name}\n" for name, sha in sorted(file_digests.items()))
    return hashlib.sha256(listing.encode()).hexdigest()


def _is_sha256(value: Any) -> bool:
    return isinstance(value, str) and _SHA256.match(value) is not None


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class VariantInfo:
    file: str
    sha256: str
    size_bytes: int
    quantization: str


@dataclass
class Manifest:
    """What a bundle says about itself. Serialised as manifest.json."""

    name: str
    version: str
    base_model: str
    architecture: str
    max_length: int
    variants: dict[str, VariantInfo]
    tokenizer_sha256: str
    default_variant: str = "int8"
    # Whether the entity a tweet is about goes in as the second segment
    # ([CLS] tweet [SEP] entity [SEP]); RepLab polarity is relative to an entity.
    entity_input: bool = False
    cleaning: CleaningConfig = field(default_factory=CleaningConfig)
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    metrics: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    format: str = BUNDLE_FORMAT
    # Per-entity corrections (edgemodel.entity_heads), e.g. from `trainer adapt`:
    # {"file": "entity_heads.json", "sha256": ..., "entities": [...]}; None without.
    entity_heads: dict[str, Any] | None = None
    # Canary tweets, [{"text", "entity", "label"}]: labels recorded when the bundle was
    # made. `node start` refuses a model that no longer gives them (a corrupted weight
    # that still matches its sha256, a runtime that computes differently). Optional.
    canaries: list[dict[str, Any]] = field(default_factory=list)
    # sha256 of labels.json (format 2; None in format 1 manifests).
    labels_sha256: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> Manifest:
        if not isinstance(data, dict):
            raise BundleError("malformed manifest: not a JSON object")
        fmt = data.get("format")
        if fmt != BUNDLE_FORMAT and fmt not in LEGACY_FORMATS:
            raise BundleError(
                f"unknown bundle format {fmt!r} (this node reads {BUNDLE_FORMAT} and "
                f"{', '.join(LEGACY_FORMATS)})"
            )
        if fmt == BUNDLE_FORMAT and not _is_sha256(data.get("labels_sha256")):
            raise BundleError(f"malformed manifest: {BUNDLE_FORMAT} needs labels_sha256")
        try:
            fields = dict(data)
            fields["variants"] = {k: VariantInfo(**v) for k, v in data["variants"].items()}
            fields["cleaning"] = CleaningConfig(**data.get("cleaning", {}))
            manifest = cls(**fields)
        except (KeyError, TypeError, AttributeError) as exc:
            raise BundleError(f"malformed manifest: {exc}") from exc
        manifest.check_file_entries()
        return manifest

    def check_file_entries(self) -> None:
        """Every file the manifest names is a plain name with a sha256 to check it by."""
        entries = [(v.file, v.sha256) for v in self.variants.values()]
        entries.append((TOKENIZER_FILE, self.tokenizer_sha256))
        if self.entity_heads is not None:
            heads = self.entity_heads
            if not isinstance(heads, dict):
                raise BundleError("malformed manifest: entity_heads must be an object or null")
            entries.append((heads.get("file"), heads.get("sha256")))
        for name, sha in entries:
            if not (isinstance(name, str) and _SAFE_FILE.match(name)):
                raise BundleError(f"malformed manifest: unsafe or missing file name {name!r}")
            if name in (MANIFEST_FILE, LABELS_FILE):
                raise BundleError(f"malformed manifest: {name} cannot be a model file")
            if not _is_sha256(sha):
                raise BundleError(f"malformed manifest: no valid sha256 for {name}")


@dataclass
class ModelBundle:
    """A bundle on disk with one variant selected for serving."""

    root: Path
    manifest: Manifest
    labels: list[str]
    variant: str
    # sha256 of manifest.json and labels.json as read by load(): the bundle digest covers
    # those bytes, not a later re-read.
    manifest_file_sha256: str = ""
    labels_file_sha256: str = ""
    # Whether verify() has checked the served files against the manifest.
    verified: bool = False

    @property
    def model_path(self) -> Path:
        return self.root / self.manifest.variants[self.variant].file

    @property
    def tokenizer_path(self) -> Path:
        return self.root / TOKENIZER_FILE

    def contract_files(self) -> list[str]:
        """Every file the bundle contract names (what provisioning ships); strays in the
        folder are not part of the bundle."""
        files = [MANIFEST_FILE, LABELS_FILE, TOKENIZER_FILE]
        files += sorted({v.file for v in self.manifest.variants.values()})
        if self.manifest.entity_heads:
            files.append(self.manifest.entity_heads["file"])
        return files

    @property
    def entity_heads_path(self) -> Path | None:
        heads = self.manifest.entity_heads
        return self.root / heads["file"] if heads else None

    @property
    def model_sha256(self) -> str:
        return self.manifest.variants[self.variant].sha256

    def file_digests(self) -> dict[str, str]:
        """sha256 of every file of the bundle: manifest.json and labels.json as read, the
        others as the manifest lists them (verify() checks those that are served)."""
        m = self.manifest
        files = {MANIFEST_FILE: self.manifest_file_sha256, LABELS_FILE: self.labels_file_sha256}
        files[TOKENIZER_FILE] = m.tokenizer_sha256
        files.update({v.file: v.sha256 for v in m.variants.values()})
        if m.entity_heads:
            files[m.entity_heads["file"]] = m.entity_heads["sha256"]
        return files

    @property
    def bundle_sha256(self) -> str:
        """One digest of the whole bundle (:func:`bundle_digest` of :meth:`file_digests`)."""
        return bundle_digest(self.file_digests())

    def identity(self) -> dict[str, str]:
        """What records and telemetry say about the model that produced them: ``sha256``
        is the served FlatBuffer's, ``bundle_sha256`` the whole bundle's."""
        return {
            "name": self.manifest.name,
            "version": self.manifest.version,
            "variant": self.variant,
            "sha256": self.model_sha256,
            "bundle_sha256": self.bundle_sha256,
        }

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], variant: str | None = None, verify: bool = True
    ) -> ModelBundle:
        """Open a bundle folder, or a ``.tflite`` file with its bundle files beside it.

        A file path selects the variant stored in that file; a folder selects ``variant``
        or the manifest's default. With ``verify`` the selected FlatBuffer and the
        tokenizer are checked against the manifest's sha256.
        """
        path = Path(path)
        if not path.exists():
            raise BundleError(f"no model at {path}")
        root = path.parent if path.is_file() else path
        manifest_path = root / MANIFEST_FILE
        if not manifest_path.is_file():
            raise BundleError(
                f"{root} is not a model bundle: {MANIFEST_FILE} is missing "
                f"(a bare .tflite needs {MANIFEST_FILE}, {LABELS_FILE} and {TOKENIZER_FILE} "
                "beside it)"
            )
        manifest_bytes = _read_bounded(manifest_path)
        manifest = Manifest.from_json(_parse_json(manifest_path, manifest_bytes))
        labels_bytes = _read_bounded(root / LABELS_FILE)
        labels = _parse_json(root / LABELS_FILE, labels_bytes)
        if not (isinstance(labels, list) and labels and all(isinstance(x, str) for x in labels)):
            raise BundleError(f"{root / LABELS_FILE} must be a non-empty list of class names")

        if path.is_file():
            matches = [k for k, v in manifest.variants.items() if v.file == path.name]
            if not matches:
                raise BundleError(f"{path.name} is not listed in {manifest_path}")
            chosen = matches[0]
        else:
            chosen = variant or manifest.default_variant
        if chosen not in manifest.variants:
            raise BundleError(
                f"bundle {root} has no variant {chosen!r}; it has {sorted(manifest.variants)}"
            )
        bundle = cls(
            root=root,
            manifest=manifest,
            labels=labels,
            variant=chosen,
            manifest_file_sha256=hashlib.sha256(manifest_bytes).hexdigest(),
            labels_file_sha256=hashlib.sha256(labels_bytes).hexdigest(),
        )
        if manifest.labels_sha256 is not None and bundle.labels_file_sha256 != (
            manifest.labels_sha256
        ):
            raise BundleError(
                f"{root / LABELS_FILE} does not match its manifest (sha256 "
                f"{bundle.labels_file_sha256[:12]}..., expected {manifest.labels_sha256[:12]}...)"
            )
        if verify:
            bundle.verify()
        return bundle

    def verify(self) -> None:
        """Check every file that is served (the selected FlatBuffer, the tokenizer, the
        heads) against the manifest; labels.json was checked by load()."""
        info = self.manifest.variants[self.variant]
        checked = [
            (self.model_path, info.sha256),
            (self.tokenizer_path, self.manifest.tokenizer_sha256),
        ]
        heads = self.manifest.entity_heads
        if heads:
            checked.append((self.root / heads["file"], heads["sha256"]))
        for file, expected in checked:
            if not file.is_file():
                raise BundleError(f"bundle file missing: {file}")
            actual = sha256_file(file)
            if actual != expected:
                raise BundleError(
                    f"{file} does not match its manifest (sha256 {actual[:12]}..., "
                    f"expected {expected[:12]}...)"
                )
        self.verified = True


def _read_bounded(path: Path) -> bytes:
    if path.exists() and not path.is_file():  # a FIFO or device would block or never end
        raise BundleError(f"{path} is not a regular file")
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_JSON_BYTES + 1)
    except FileNotFoundError as exc:
        raise BundleError(f"bundle file missing: {path}") from exc
    except OSError as exc:
        raise BundleError(f"cannot read {path}: {exc}") from exc
    if len(data) > MAX_JSON_BYTES:
        raise BundleError(f"{path} is larger than {MAX_JSON_BYTES} bytes")
    return data


def _parse_json(path: Path, data: bytes) -> Any:
    try:
        return json.loads(data.decode("utf-8"))
    except RecursionError:
        raise BundleError(f"{path} is not valid JSON: nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise BundleError(f"{path} is not valid JSON: {exc}") from exc


def _read_json(path: Path) -> Any:
    return _parse_json(path, _read_bounded(path))


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON so that a reader sees the old file or the new one, never half of one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; bundle files are meant to be shared
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bundle(
    root: str | os.PathLike[str],
    *,
    variant_files: Mapping[str, str | os.PathLike[str]],
    tokenizer_file: str | os.PathLike[str],
    labels: list[str],
    name: str,
    version: str,
    base_model: str,
    architecture: str,
    max_length: int,
    entity_input: bool = False,
    cleaning: CleaningConfig | None = None,
    default_variant: str | None = None,
    metrics: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None,
    entity_heads_file: str | os.PathLike[str] | None = None,
) -> ModelBundle:
    """Assemble a bundle folder from FlatBuffers and a tokenizer; return it loaded.

    ``variant_files`` maps variant names (keys of :data:`VARIANT_FILES`) to .tflite files,
    which are copied in under their canonical names unless they already sit there.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    unknown = set(variant_files) - set(VARIANT_FILES)
    if unknown:
        raise BundleError(f"unknown variants {sorted(unknown)}; known: {sorted(VARIANT_FILES)}")
    if not variant_files:
        raise BundleError("a bundle needs at least one FlatBuffer variant")

    variants: dict[str, VariantInfo] = {}
    for variant, src in variant_files.items():
        file, quantization = VARIANT_FILES[variant]
        _copy_into(Path(src), root / file)
        variants[variant] = VariantInfo(
            file=file,
            sha256=sha256_file(root / file),
            size_bytes=(root / file).stat().st_size,
            quantization=quantization,
        )
    _copy_into(Path(tokenizer_file), root / TOKENIZER_FILE)
    write_json_atomic(root / LABELS_FILE, list(labels))

    heads = None
    if entity_heads_file is not None:
        # The shared check (edgemodel.entity_heads): never write a bundle a node refuses.
        try:
            checked = load_entity_heads(entity_heads_file, len(labels), len(RELATED_LABELS))
        except EntityHeadsError as exc:
            raise BundleError(str(exc)) from exc
        _copy_into(Path(entity_heads_file), root / ENTITY_HEADS_FILE)
        heads = {
            "file": ENTITY_HEADS_FILE,
            "sha256": sha256_file(root / ENTITY_HEADS_FILE),
            "entities": sorted(h.entity for h in checked.values()),
        }
    else:
        (root / ENTITY_HEADS_FILE).unlink(missing_ok=True)

    if default_variant is None:
        default_variant = next(v for v in VARIANT_FILES if v in variants)
    manifest = Manifest(
        name=name,
        version=version,
        base_model=base_model,
        architecture=architecture,
        max_length=max_length,
        variants=variants,
        tokenizer_sha256=sha256_file(root / TOKENIZER_FILE),
        labels_sha256=sha256_file(root / LABELS_FILE),
        default_variant=default_variant,
        entity_input=entity_input,
        cleaning=cleaning or CleaningConfig(),
        metrics=metrics or {},
        training=training or {},
        entity_heads=heads,
    )
    write_json_atomic(root / MANIFEST_FILE, manifest.to_json())
    return ModelBundle.load(root)


def write_derived_bundle(
    parent: ModelBundle,
    root: str | os.PathLike[str],
    *,
    variant_files: Mapping[str, str | os.PathLike[str]],
    tokenizer_file: str | os.PathLike[str] | None = None,
    **changes: Any,
) -> ModelBundle:
    """A new bundle that keeps ``parent``'s identity, preprocessing and entity heads;
    ``changes`` overrides any :func:`write_bundle` argument (version, metrics, ...)."""
    m = parent.manifest
    fields: dict[str, Any] = {
        "labels": parent.labels,
        "name": m.name,
        "version": m.version,
        "base_model": m.base_model,
        "architecture": m.architecture,
        "max_length": m.max_length,
        "entity_input": m.entity_input,
        "cleaning": m.cleaning,
        "training": m.training,
        "entity_heads_file": parent.entity_heads_path,
    }
    return write_bundle(
        root,
        variant_files=variant_files,
        tokenizer_file=tokenizer_file or parent.tokenizer_path,
        **(fields | changes),
    )


def update_manifest(root: str | os.PathLike[str], **changes: Any) -> Manifest:
    """Rewrite fields of an existing manifest (e.g. metrics after evaluation)."""
    root = Path(root)
    manifest = Manifest.from_json(_read_json(root / MANIFEST_FILE))
    for key, value in changes.items():
        if not hasattr(manifest, key):
            raise BundleError(f"manifest has no field {key!r}")
        setattr(manifest, key, value)
    # Rewriting a manifest writes the current format, so labels.json gets its sha256.
    manifest.format = BUNDLE_FORMAT
    if manifest.labels_sha256 is None:
        manifest.labels_sha256 = sha256_file(root / LABELS_FILE)
    write_json_atomic(root / MANIFEST_FILE, manifest.to_json())
    return manifest


def _copy_into(src: Path, dst: Path) -> None:
    if not src.is_file():
        raise BundleError(f"no such file: {src}")
    if dst.exists() and src.resolve() == dst.resolve():
        return
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
