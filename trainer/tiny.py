"""A tiny randomly initialised bundle, built by the real export path, for tests and demos
of the plumbing (its labels are meaningless)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import keras
from tokenizers import Tokenizer

from edgemodel.bundle import RELATED_LABELS, ModelBundle, write_bundle
from edgemodel.inference import Encoded
from trainer.encoders import minilm_folder
from trainer.encoders.bert import tiny_bert
from trainer.export import export_variants
from trainer.model import build_classifier

LABELS = ["negative", "neutral", "positive"]
_CALIBRATION_TEXT = (
    "the new model drives really well but the dealer service was slow and expensive today"
)


def tiny_classifier(
    seed: int = 0, task_heads: bool = False, related_head: bool = False
) -> keras.Model:
    """The random two-layer classifier over the MiniLM vocabulary."""
    vocab_size = Tokenizer.from_file(str(minilm_folder() / "tokenizer.json")).get_vocab_size()
    return build_classifier(
        tiny_bert(vocab_size, seed=seed),
        num_labels=len(LABELS),
        task_heads=task_heads,
        num_filter_labels=len(RELATED_LABELS) if related_head else 0,
    )


def build_tiny_bundle(
    out_dir: Path,
    variants: Sequence[str] = ("int8",),
    version: str = "0.0.1",
    seed: int = 0,
    max_length: int = 64,
    model: keras.Model | None = None,
) -> ModelBundle:
    """Export ``model`` (default: :func:`tiny_classifier`) as a bundle in ``out_dir``."""
    tokenizer_file = minilm_folder() / "tokenizer.json"
    model = tiny_classifier(seed) if model is None else model
    ids = Tokenizer.from_file(str(tokenizer_file)).encode(_CALIBRATION_TEXT).ids
    calibration = [Encoded(ids, [0] * len(ids))] * 8
    staging = out_dir.parent / f".{out_dir.name}.flatbuffers"
    paths = export_variants(model, staging, variants, calibration=calibration)
    bundle = write_bundle(
        out_dir,
        variant_files=paths,
        tokenizer_file=tokenizer_file,
        labels=LABELS,
        name="tiny-random",
        version=version,
        base_model="random (2 layers, hidden 32)",
        architecture="bert",
        max_length=max_length,
        entity_input=True,
        training={"note": "random weights, for tests only"},
    )
    for p in paths.values():
        p.unlink()
    staging.rmdir()
    return bundle
