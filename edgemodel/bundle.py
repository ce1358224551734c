"""The model bundle: the one contract between trainer, provisioning and node.

A bundle is a folder::

    manifest.json      identity, preprocessing, variants with their sha256, metrics
    labels.json        class names, in the order of the model's logits
    tokenizer.json     Hugging Face `tokenizers` file (WordPiece for the BERT family)
    <variant>.tflite   one or more FlatBuffer variants: fp32, fp16, int8, int8-full, int4

The trainer writes bundles with :func:`write_bundle`; the node and provisioning read them
with :meth:`ModelBundle.load`. Nothing else in the code base knows these file names.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edgemodel.entity_heads import ENTITY_HEADS_FILE
from edgemodel.textclean import CleaningConfig

BUNDLE_FORMAT = "repedge-bundle/1"
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

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Manifest:
        if data.get("format") != BUNDLE_FORMAT:
            raise BundleError(
                f"unknown bundle format {data.get('format')!r} (this node reads {BUNDLE_FORMAT})"
            )
        try:
            fields = dict(data)
            fields["variants"] = {k: VariantInfo(**v) for k, v in data["variants"].items()}
            fields["cleaning"] = CleaningConfig(**data.get("cleaning", {}))
            return cls(**fields)
        except (KeyError, TypeError) as exc:
            raise BundleError(f"malformed manifest: {exc}") from exc


@dataclass
class ModelBundle:
    """A bundle on disk with one variant selected for serving."""

    root: Path
    manifest: Manifest
    labels: list[str]
    variant: str

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

    def identity(self) -> dict[str, str]:
        """What records and telemetry say about the model that produced them."""
        return {
            "name": self.manifest.name,
            "version": self.manifest.version,
            "variant": self.variant,
            "sha256": self.model_sha256,
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
        manifest = Manifest.from_json(_read_json(manifest_path))
        labels = _read_json(root / LABELS_FILE)
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
        bundle = cls(root=root, manifest=manifest, labels=labels, variant=chosen)
        if verify:
            bundle.verify()
        return bundle

    def verify(self) -> None:
        """Check the selected FlatBuffer and the tokenizer against the manifest."""
        info = self.manifest.variants[self.variant]
        checked = [
            (self.model_path, info.sha256),
            (self.tokenizer_path, self.manifest.tokenizer_sha256),
        ]
        heads = self.manifest.entity_heads
        if heads:
            if not isinstance(heads.get("file"), str) or "/" in heads["file"]:
                raise BundleError("manifest entity_heads needs a plain 'file' name")
            checked.append((self.root / heads["file"], heads.get("sha256")))
        for file, expected in checked:
            if not file.is_file():
                raise BundleError(f"bundle file missing: {file}")
            actual = sha256_file(file)
            if actual != expected:
                raise BundleError(
                    f"{file} does not match its manifest (sha256 {actual[:12]}..., "
                    f"expected {expected[:12]}...)"
                )


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise BundleError(f"bundle file missing: {path}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path} is not valid JSON: {exc}") from exc


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
        _copy_into(Path(entity_heads_file), root / ENTITY_HEADS_FILE)
        heads = {
            "file": ENTITY_HEADS_FILE,
            "sha256": sha256_file(root / ENTITY_HEADS_FILE),
            "entities": sorted(
                h["entity"] for h in _read_json(root / ENTITY_HEADS_FILE).get("heads", {}).values()
            ),
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
