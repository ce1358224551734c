"""Smaller bundles from a finished run, without retraining.

Three levers, each optional:

- vocabulary pruning: keep the tokens a tweet corpus uses (plus every single character
  and its ``##`` form, so any word still tokenizes, only into more pieces) and drop the
  other rows of the token-embedding table, which is half of the int8 MiniLM;
- position pruning: keep the first ``max_length`` position embeddings, all a node uses;
- layer dropping: keep the first N transformer layers (costly in accuracy untrained).

The pruned Keras classifier goes through the normal export path, so every variant,
including "int4" (:mod:`trainer.int4`), is available.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from edgemodel.bundle import ModelBundle, write_derived_bundle
from edgemodel.data import FILTER_LABELS, Example
from edgemodel.inference import EmptyTextError, Encoded, TweetEncoder
from trainer.export import calibration_samples, export_variants
from trainer.int4 import Int4Recipe
from trainer.model import build_classifier, has_related_head, has_task_heads

CONTINUATION = "##"


@dataclass(frozen=True)
class PrunedVocab:
    """The kept tokens in their original order: new id ``i`` was ``old_ids[i]``."""

    tokens: list[str]
    old_ids: np.ndarray

    def __len__(self) -> int:
        return len(self.tokens)


def count_token_ids(encoder: TweetEncoder, examples: Iterable[Example]) -> Counter[int]:
    """How often each token id occurs in the encoded corpus (tweet and entity)."""
    counts: Counter[int] = Counter()
    for e in examples:
        try:
            counts.update(encoder.encode(e.text, e.entity).input_ids)
        except EmptyTextError:
            continue
    return counts


def is_single_character(token: str) -> bool:
    piece = token.removeprefix(CONTINUATION)
    return len(piece) == 1


def keep_token_ids(encoder: TweetEncoder, texts: Iterable[str]) -> set[int]:
    """Token ids of texts that must survive pruning whole (e.g. monitored entity names)."""
    ids: set[int] = set()
    for text in texts:
        try:
            ids.update(encoder.encode(text).input_ids)
        except EmptyTextError:
            continue
    return ids


def select_vocab(
    vocab: dict[str, int],
    counts: Counter[int],
    min_count: int,
    special: Iterable[str],
    keep_ids: Collection[int] = (),
) -> PrunedVocab:
    """Special tokens, single characters (and ``##`` forms), ``keep_ids``, and tokens used
    ``min_count`` times. ``min_count`` 0 keeps the whole vocabulary.
    """
    keep_always = set(special)
    kept = sorted(
        old_id
        for token, old_id in vocab.items()
        if min_count <= 0
        or token in keep_always
        or old_id in keep_ids
        or is_single_character(token)
        or counts[old_id] >= min_count
    )
    by_id = {i: t for t, i in vocab.items()}
    return PrunedVocab([by_id[i] for i in kept], np.asarray(kept, np.int64))


def special_tokens(tokenizer_json: dict[str, Any]) -> list[str]:
    return [t["content"] for t in tokenizer_json.get("added_tokens", []) if t.get("special")]


def pruned_tokenizer_json(original: dict[str, Any], pruned: PrunedVocab) -> dict[str, Any]:
    """The same tokenizer (normalizer, pre-tokenizer, post-processor) over the new ids."""
    if original["model"]["type"] != "WordPiece":
        raise ValueError(f"vocabulary pruning needs a WordPiece tokenizer, not {original['model']}")
    new_id = {t: i for i, t in enumerate(pruned.tokens)}
    data = json.loads(json.dumps(original))  # deep copy
    data["model"]["vocab"] = new_id
    for token in data.get("added_tokens", []):
        token["id"] = new_id[token["content"]]
    if data.get("padding"):
        data["padding"]["pad_id"] = new_id[data["padding"]["pad_token"]]
    _renumber_post_processor(data.get("post_processor"), new_id)
    return data


def _renumber_post_processor(processor: dict[str, Any] | None, new_id: dict[str, int]) -> None:
    """Special-token ids live in the post-processor too (TemplateProcessing, BertProcessing)."""
    if processor is None:
        return
    kind = processor["type"]
    if kind == "TemplateProcessing":
        for spec in processor["special_tokens"].values():
            spec["ids"] = [new_id[t] for t in spec["tokens"]]
    elif kind in ("BertProcessing", "RobertaProcessing"):
        for key in ("sep", "cls"):
            processor[key][1] = new_id[processor[key][0]]
    elif kind == "Sequence":
        for inner in processor["processors"]:
            _renumber_post_processor(inner, new_id)
    elif kind != "ByteLevel":
        raise ValueError(f"cannot renumber post-processor {kind!r}")


def write_pruned_tokenizer(src: Path, pruned: PrunedVocab, dst: Path) -> Path:
    original = json.loads(src.read_text(encoding="utf-8"))
    dst.write_text(json.dumps(pruned_tokenizer_json(original, pruned)), encoding="utf-8")
    return dst


def bert_backbone(model: keras.Model) -> keras.Model:
    """The classifier's encoder (its layer name gets a suffix when several exist)."""
    import keras_hub

    return next(x for x in model.layers if isinstance(x, keras_hub.models.BertBackbone))


def shrink_classifier(
    model: keras.Model,
    num_labels: int,
    token_ids: np.ndarray | None = None,
    max_positions: int | None = None,
    num_layers: int | None = None,
    num_filter_labels: int = 0,
) -> keras.Model:
    """A copy of ``model`` (build_classifier over a BertBackbone) with fewer rows/layers.

    ``token_ids``: embedding rows to keep, in new-id order; ``max_positions``: position
    embeddings to keep; ``num_layers``: transformer layers to keep (the first N).
    """
    import keras_hub

    backbone = bert_backbone(model)
    changes: dict[str, int] = {}
    if token_ids is not None:
        changes["vocabulary_size"] = len(token_ids)
    if max_positions is not None:
        changes["max_sequence_length"] = min(max_positions, backbone.max_sequence_length)
    if num_layers is not None:
        changes["num_layers"] = min(num_layers, backbone.num_layers)
    small_backbone = keras_hub.models.BertBackbone.from_config(backbone.get_config() | changes)
    small = build_classifier(
        small_backbone,
        num_labels=num_labels,
        num_filter_labels=num_filter_labels,
        task_heads=has_task_heads(model),
    )
    rows = {backbone.token_embedding.embeddings.path: token_ids}
    old = {w.path: w for w in model.weights}
    for w in small.weights:
        value = keras.ops.convert_to_numpy(old[w.path])
        if rows.get(w.path) is not None:
            value = value[rows[w.path]]
        # Position (and any other) tables that shrank keep their first rows.
        w.assign(value[tuple(slice(0, n) for n in w.shape)])
    return small


def load_run_model(run_dir: Path) -> tuple[keras.Model, ModelBundle]:
    """The run's best checkpoint as a Keras classifier, and the run's bundle."""
    from trainer.encoders import load_encoder

    bundle = ModelBundle.load(run_dir / "bundle", verify=False)
    config = bundle.manifest.training["config"]
    encoder = load_encoder(config["base"], num_layers=config.get("num_layers"))
    model = build_classifier(
        encoder.backbone,
        num_labels=len(bundle.labels),
        num_filter_labels=len(FILTER_LABELS) if config.get("filter_head") else 0,
        task_heads=config.get("task_heads", False),
    )
    model.load_weights(run_dir / "checkpoints" / "best.weights.h5")
    return model, bundle


@dataclass
class CompressOptions:
    # Tokens used fewer times than this in the corpus are dropped; 0 keeps every token.
    min_count: int = 1
    # Transformer layers to keep (None: all).
    num_layers: int | None = None
    variants: Sequence[str] = ("int8", "int4")
    version_suffix: str = "compressed"
    # How the int4 variant rounds its dense weights and which stay int8 (trainer.int4).
    int4: Int4Recipe = field(default_factory=Int4Recipe)
    # Corpus tweets GPTQ measures each dense layer's inputs on.
    gptq_tweets: int = 512
    # Texts whose tokens are always kept: the entities nodes will be asked about (the
    # entity is a model input), which a training corpus split by entity may never name.
    keep_texts: Sequence[str] = ()


def compress_bundle(
    model: keras.Model,
    parent: ModelBundle,
    corpus: Sequence[Example],
    out_dir: Path,
    options: CompressOptions,
) -> ModelBundle:
    """Prune ``model`` (the parent bundle's Keras classifier) and write a new bundle."""
    m = parent.manifest
    staging = out_dir.parent / f".{out_dir.name}.staging"
    staging.mkdir(parents=True, exist_ok=True)
    try:
        parent_encoder = TweetEncoder.from_bundle(parent)
        original = json.loads(parent.tokenizer_path.read_text(encoding="utf-8"))
        vocab = original["model"]["vocab"]
        counts = count_token_ids(parent_encoder, corpus)
        keep = keep_token_ids(parent_encoder, options.keep_texts)
        pruned = select_vocab(vocab, counts, options.min_count, special_tokens(original), keep)
        tokenizer = write_pruned_tokenizer(parent.tokenizer_path, pruned, staging / "tok.json")
        small = shrink_classifier(
            model,
            num_labels=len(parent.labels),
            token_ids=pruned.old_ids,
            max_positions=m.max_length,
            num_layers=options.num_layers,
            num_filter_labels=len(FILTER_LABELS) if has_related_head(model) else 0,
        )
        encoder = TweetEncoder(tokenizer, m.max_length, m.cleaning, m.entity_input)
        paths = export_variants(
            small,
            staging,
            options.variants,
            calibration=_calibration(encoder, corpus),
            int4=options.int4,
            int4_calibration=gptq_calibration(encoder, corpus, options.gptq_tweets)
            if options.int4.algorithm == "gptq"
            else (),
        )
        layers = bert_backbone(small).num_layers
        compression = {
            "parent": {"name": m.name, "version": m.version, "path": str(parent.root)},
            "vocabulary": {"kept": len(pruned), "original": len(vocab)},
            "min_count": options.min_count,
            "keep_texts": list(options.keep_texts),
            "corpus_tweets": len(corpus),
            "num_layers": layers,
            "max_positions": m.max_length,
            "int4": options.int4.describe(),
        }
        return write_derived_bundle(
            parent,
            out_dir,
            variant_files=paths,
            tokenizer_file=tokenizer,
            version=f"{m.version}+{options.version_suffix}",
            training={**m.training, "compression": compression},
        )
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _calibration(encoder: TweetEncoder, corpus: Sequence[Example]) -> list[Encoded]:
    """Calibration tweets for int8-full; empty when the corpus has none long enough."""
    encoded = []
    for e in corpus[:5000]:
        try:
            encoded.append(encoder.encode(e.text, e.entity))
        except EmptyTextError:
            continue
    try:
        return calibration_samples(encoded)
    except ValueError:
        return []


def gptq_calibration(
    encoder: TweetEncoder, corpus: Sequence[Example], limit: int, seed: int = 13
) -> list[Encoded]:
    """A seeded sample of corpus tweets, unpadded and of their own lengths, with their
    entities: the inputs a node feeds, so GPTQ weighs each weight by how it is used."""
    order = np.random.default_rng(seed).permutation(len(corpus))
    picked: list[Encoded] = []
    for i in order:
        if len(picked) >= limit:
            break
        try:
            picked.append(encoder.encode(corpus[i].text, corpus[i].entity))
        except EmptyTextError:
            continue
    return picked


def requantize_bundle(
    base: ModelBundle,
    corpus: Sequence[Example],
    out_dir: Path,
    recipe: Int4Recipe,
    version_suffix: str,
    gptq_tweets: int = 512,
) -> ModelBundle:
    """An int4 bundle from ``base``'s fp32 FlatBuffer, without TensorFlow: the way to try
    several int4 recipes (algorithm, granularity, int8 layers) on one pruned model."""
    from trainer.int4 import quantize_int4

    fp32 = base.root / base.manifest.variants["fp32"].file
    encoder = TweetEncoder.from_bundle(base)
    calibration = (
        gptq_calibration(encoder, corpus, gptq_tweets) if recipe.algorithm == "gptq" else []
    )
    staging = out_dir.parent / f".{out_dir.name}.staging"
    staging.mkdir(parents=True, exist_ok=True)
    try:
        int4 = staging / "int4.tflite"
        int4.write_bytes(quantize_int4(fp32.read_bytes(), recipe, calibration))
        m = base.manifest
        compression = {**m.training.get("compression", {}), "int4": recipe.describe()}
        return write_derived_bundle(
            base,
            out_dir,
            variant_files={"int4": int4},
            version=f"{m.version.split('+')[0]}+{version_suffix}",
            training={**m.training, "compression": compression},
        )
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def compress_run(
    run_dir: Path, corpus: Sequence[Example], out_dir: Path, options: CompressOptions
) -> ModelBundle:
    """A finished run folder (checkpoints/best.weights.h5 + bundle/) -> a smaller bundle."""
    model, parent = load_run_model(run_dir)
    return compress_bundle(model, parent, corpus, out_dir, options)
