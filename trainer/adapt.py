"""Adapt a bundle to one brand from a few hundred of its labelled tweets.

The bundle's FlatBuffer is run through the node's own inference code
(:meth:`edgemodel.inference.Classifier.run`); a linear correction of its polarity (and
related) logits is fitted on the pooled ``embedding`` output, and written into a copy of
the bundle as a per-entity head (:mod:`edgemodel.entity_heads`). The FlatBuffer itself is
not touched, so the new bundle serves every other entity exactly as before, and it signs
and provisions like any bundle. Needs no TensorFlow: a few seconds on 2 cores.

The correction starts at zero (the general model) and is pulled towards it by an L2
penalty whose strength is chosen by cross-validation on the brand's own tweets; with no
strength better than zero correction, the head stays at zero.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edgemodel.bundle import (
    EMBEDDING_OUTPUT,
    OUTPUT_NAME,
    RELATED_OUTPUT,
    ModelBundle,
    write_derived_bundle,
)
from edgemodel.entity_heads import Correction, EntityHead, entity_key, save_entity_heads
from edgemodel.inference import Classifier, EmptyTextError, Encoded
from trainer.data import Example
from trainer.evaluate import outputs_in_length_order

# L2 strengths tried by cross-validation (per example, on the weight only).
DEFAULT_L2_GRID = (1e-3, 1e-2, 1e-1, 1.0)


class AdaptError(ValueError):
    """The data cannot adapt this bundle (no entity, too few tweets, no embedding output)."""


@dataclass
class AdaptConfig:
    l2_grid: tuple[float, ...] = DEFAULT_L2_GRID
    folds: int = 5
    steps: int = 300
    learning_rate: float = 0.05
    seed: int = 13


@dataclass
class FittedHead:
    correction: Correction
    l2: float | None  # None: zero correction won cross-validation
    cv_accuracy: dict[str, float] = field(default_factory=dict)  # "0" = no correction
    n: int = 0


def fit_correction(
    embedding: np.ndarray,
    logits: np.ndarray,
    labels: np.ndarray,
    l2: float,
    config: AdaptConfig,
) -> Correction:
    """Minimise cross-entropy of ``logits + embedding @ W + b`` + l2 * |W|^2 (Adam, full batch)."""
    n, dim = embedding.shape
    classes = logits.shape[1]
    onehot = np.eye(classes, dtype=np.float64)[labels]
    weight = np.zeros((dim, classes))
    bias = np.zeros(classes)
    moments = [np.zeros_like(weight), np.zeros_like(bias)]
    squares = [np.zeros_like(weight), np.zeros_like(bias)]
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    x = embedding.astype(np.float64)
    for step in range(1, config.steps + 1):
        z = logits + x @ weight + bias
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        grad_z = (p - onehot) / n
        grads = [x.T @ grad_z + 2 * l2 * weight, grad_z.sum(axis=0)]
        for i, (param, grad) in enumerate(zip((weight, bias), grads, strict=True)):
            moments[i] = beta1 * moments[i] + (1 - beta1) * grad
            squares[i] = beta2 * squares[i] + (1 - beta2) * grad**2
            m_hat = moments[i] / (1 - beta1**step)
            v_hat = squares[i] / (1 - beta2**step)
            param -= config.learning_rate * m_hat / (np.sqrt(v_hat) + eps)
    return Correction(weight.astype(np.float32), bias.astype(np.float32))


def _folds(n: int, k: int, seed: int) -> list[np.ndarray]:
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return [np.asarray(order[i::k]) for i in range(k)]


def select_and_fit(
    embedding: np.ndarray, logits: np.ndarray, labels: np.ndarray, config: AdaptConfig
) -> FittedHead:
    """Choose the L2 strength (or no correction) by k-fold accuracy, then fit on all."""
    n = len(labels)
    k = min(config.folds, n)
    scores: dict[str, float] = {"0": float((logits.argmax(1) == labels).mean())}
    if k >= 2:
        folds = _folds(n, k, config.seed)
        for l2 in config.l2_grid:
            correct = 0
            for held in folds:
                train = np.setdiff1d(np.arange(n), held)
                c = fit_correction(embedding[train], logits[train], labels[train], l2, config)
                pred = (logits[held] + c(embedding[held])).argmax(1)
                correct += int((pred == labels[held]).sum())
            scores[str(l2)] = correct / n
    best = max(scores, key=lambda key: (scores[key], key != "0"))
    if best == "0":
        dim, classes = embedding.shape[1], logits.shape[1]
        zero = Correction(np.zeros((dim, classes), np.float32), np.zeros(classes, np.float32))
        return FittedHead(zero, None, scores, n)
    l2 = float(best)
    return FittedHead(fit_correction(embedding, logits, labels, l2, config), l2, scores, n)


@dataclass
class BrandData:
    """The general model's raw outputs on a brand's labelled tweets."""

    embedding: np.ndarray
    logits: np.ndarray
    related_logits: np.ndarray | None
    polarity: np.ndarray  # label index, -1 for unrelated tweets
    related: np.ndarray  # 1/0, -1 where the data has no filtering label
    unreadable: int = 0


def brand_outputs(
    classifier: Classifier, examples: Sequence[Example], entity: str, batch_size: int = 32
) -> BrandData:
    """Run ``examples`` (all of one entity) through the FlatBuffer, heads not applied."""
    if not classifier.has_embedding:
        raise AdaptError(
            f"{classifier.bundle.root}: its FlatBuffer has no {EMBEDDING_OUTPUT!r} output "
            "(exported before per-entity heads existed); re-export it with this trainer"
        )
    encoded: list[Encoded] = []
    kept: list[Example] = []
    for e in examples:
        try:
            encoded.append(classifier.encode(e.text, entity))
            kept.append(e)
        except EmptyTextError:
            continue
    if not encoded:
        raise AdaptError("no readable tweet in the data")
    merged = outputs_in_length_order(classifier.run, encoded, batch_size)
    labels = list(classifier.labels)
    return BrandData(
        embedding=merged[EMBEDDING_OUTPUT],
        logits=merged[OUTPUT_NAME],
        related_logits=merged.get(RELATED_OUTPUT),
        polarity=np.asarray([labels.index(e.label) if e.label else -1 for e in kept]),
        related=np.asarray([-1 if e.related is None else int(e.related) for e in kept]),
        unreadable=len(examples) - len(kept),
    )


def fit_entity_head(data: BrandData, entity: str, config: AdaptConfig) -> EntityHead:
    """Fit the polarity correction on related tweets, the related one where labelled."""
    has_polarity = data.polarity >= 0
    if has_polarity.sum() < 2:
        raise AdaptError(f"{entity}: need at least 2 tweets with a polarity label")
    polarity = select_and_fit(
        data.embedding[has_polarity],
        data.logits[has_polarity],
        data.polarity[has_polarity],
        config,
    )
    info = {
        "polarity_tweets": polarity.n,
        "polarity_l2": polarity.l2,
        "polarity_cv_accuracy": polarity.cv_accuracy,
    }
    related = None
    has_related = data.related >= 0
    if data.related_logits is not None and len(set(data.related[has_related].tolist())) == 2:
        fitted = select_and_fit(
            data.embedding[has_related],
            data.related_logits[has_related],
            data.related[has_related],
            config,
        )
        related = fitted.correction
        info |= {
            "related_tweets": fitted.n,
            "related_l2": fitted.l2,
            "related_cv_accuracy": fitted.cv_accuracy,
        }
    return EntityHead(entity=entity, polarity=polarity.correction, related=related, info=info)


def next_version(version: str) -> str:
    """1.2 -> 1.2.1, 1.2.3.4 -> 1.2.3.5: an adapted bundle is newer than its parent."""
    parts = version.split(".")
    if len(parts) < 4:
        return ".".join([*parts, "1"])
    return ".".join([*parts[:-1], str(int(parts[-1]) + 1)])


def adapt_bundle(
    bundle_path: str | os.PathLike[str],
    examples: Sequence[Example],
    out_dir: str | os.PathLike[str],
    entity: str | None = None,
    version: str | None = None,
    config: AdaptConfig | None = None,
    each_entity: bool = False,
) -> tuple[ModelBundle, list[EntityHead]]:
    """A copy of the bundle (all variants) with a head for ``entity`` added or replaced;
    with ``each_entity``, one head per entity the data names (tweets without one unused).

    A head is fitted on the outputs of the bundle's default variant; the other variants
    carry the same head (their embeddings agree to quantization noise).
    """
    config = config or AdaptConfig()
    started = time.monotonic()
    parent = ModelBundle.load(bundle_path)
    if not parent.manifest.entity_input:
        raise AdaptError(f"{parent.root}: this model does not read entities")
    groups = _group_by_entity(examples, entity, each_entity)
    classifier = Classifier(parent)
    heads = dict(classifier.entity_heads)
    fitted: list[EntityHead] = []
    adapted = list(parent.manifest.training.get("adapted", []))
    dim = 0
    for name, mine in groups.items():
        try:
            data = brand_outputs(classifier, mine, name)
            dim = data.embedding.shape[1]
            head = fit_entity_head(data, name, config)
        except AdaptError as exc:
            if not each_entity:
                raise
            print(f"skipped {name}: {exc}", flush=True)
            continue
        heads[entity_key(name)] = head
        fitted.append(head)
        adapted.append(
            {
                "entity": name,
                "tweets": len(mine),
                "unreadable": data.unreadable,
                "parent_version": parent.manifest.version,
                "config": asdict(config),
                **dict(head.info or {}),
            }
        )
    if not fitted:
        raise AdaptError("no entity had enough labelled tweets for a head")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = out_dir.parent / f".{out_dir.name}.heads.json"
    save_entity_heads(staging, heads, embedding_dim=dim)
    adapted[-1]["seconds"] = round(time.monotonic() - started, 1)
    training = {**parent.manifest.training, "adapted": adapted}
    all_variants = {v: parent.root / info.file for v, info in parent.manifest.variants.items()}
    try:
        bundle = write_derived_bundle(
            parent,
            out_dir,
            variant_files=all_variants,
            version=version or next_version(parent.manifest.version),
            default_variant=parent.manifest.default_variant,
            metrics={},  # the parent's figures do not describe the adapted model
            training=training,
            entity_heads_file=staging,
        )
    finally:
        staging.unlink(missing_ok=True)
    return bundle, fitted


def _group_by_entity(
    examples: Sequence[Example], entity: str | None, each_entity: bool
) -> dict[str, list[Example]]:
    if each_entity:
        groups: dict[str, list[Example]] = {}
        for e in examples:
            if e.entity and e.entity.strip():
                groups.setdefault(" ".join(e.entity.split()), []).append(e)
        if not groups:
            raise AdaptError("--each-entity: the data names no entity")
        return groups
    entities = {e.entity for e in examples if e.entity}
    if entity is None:
        if len(entities) != 1:
            raise AdaptError(
                f"the data names {len(entities)} entities ({sorted(entities)[:5]}); "
                "give --entity, or data of one brand, or --each-entity"
            )
        entity = entities.pop()
    entity = " ".join(entity.split())
    if not entity:
        raise AdaptError("the entity name is empty")
    return {entity: list(examples)}


def describe_heads(heads: Sequence[EntityHead]) -> str:
    return json.dumps([{"entity": h.entity, **dict(h.info or {})} for h in heads], indent=2)
