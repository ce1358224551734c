"""Fit a brand's own head from a few labelled tweets: numpy only, no TensorFlow.

This is what ``trainer adapt`` and a node adapting on-device (``node adapt``) both call.
The inputs are the bundle's raw FlatBuffer outputs for the labelled tweets (what
:meth:`edgemodel.inference.Classifier.run` returns, per-entity heads NOT applied):

- ``embedding`` [n, dim]: the pooled ``embedding`` output,
- ``logits`` [n, classes]: the general polarity logits,
- ``related_logits`` [n, 2]: the general related/unrelated logits (or None),

plus the user's answers: ``polarity`` (class index, -1 where the tweet is not about the
brand or was not given one) and ``related`` (1 / 0, -1 where not answered).

A head is a linear correction added to the general logits (:mod:`edgemodel.entity_heads`)::

    logits = general_logits + embedding @ weight + bias

It is fitted by penalised cross-entropy; the zero correction is the general model itself,
so the L2 penalty shrinks the head towards the shipped model, and its strength is chosen
by k-fold cross-validation on the same labels (the general model, "no correction", is one
of the candidates, and wins ties: a head must beat it in cross-validation to be used).

Typical use::

    fitted = fit_entity_head("Toyota", embedding, logits, related_logits, polarity, related)
    print(fitted.summary())              # before / after accuracies in words, with intervals
    write_adapted_bundle(parent, [fitted.head], "runs/toyota")

Cross-validated accuracy of the chosen strength is slightly optimistic (it is the best of
a few candidates on the same folds); the interval is a Wilson 95 % interval on the number
of tweets, not on the choice.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgemodel.bundle import ModelBundle, write_derived_bundle
from edgemodel.entity_heads import (
    Correction,
    EntityHead,
    entity_key,
    load_entity_heads,
    save_entity_heads,
)

# L2 strengths tried by cross-validation (per example, on the weight only).
DEFAULT_L2_GRID = (1e-3, 1e-2, 1e-1, 1.0)


class AdaptationError(ValueError):
    """The labels cannot fit a head (too few, one class only, shapes that disagree)."""


@dataclass
class AdaptConfig:
    l2_grid: tuple[float, ...] = DEFAULT_L2_GRID
    folds: int = 5
    steps: int = 300
    learning_rate: float = 0.05
    seed: int = 13


@dataclass(frozen=True)
class Accuracy:
    """``correct`` of ``total`` with a Wilson 95 % interval."""

    correct: int
    total: int

    @property
    def value(self) -> float:
        return self.correct / self.total if self.total else float("nan")

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.correct, self.total)

    def words(self) -> str:
        low, high = self.interval
        return f"{self.value:.3f} (95 % interval {low:.3f}-{high:.3f}, {self.total} tweets)"

    def to_json(self) -> dict[str, Any]:
        low, high = self.interval
        return {
            "accuracy": round(self.value, 4),
            "low": round(low, 4),
            "high": round(high, 4),
            "correct": self.correct,
            "total": self.total,
        }


def wilson_interval(correct: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (good at small n and near 0/1)."""
    if total <= 0:
        return (float("nan"), float("nan"))
    p = correct / total
    denom = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denom
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass
class HeadFit:
    """One head (polarity or related) fitted with its cross-validation record."""

    correction: Correction
    l2: float | None  # None: the zero correction (the general model) won
    before: Accuracy  # the general model on these labels
    after: Accuracy  # the chosen head by cross-validation (== before if l2 is None)
    cv: dict[str, Accuracy] = field(default_factory=dict)  # "0" = no correction

    def to_json(self) -> dict[str, Any]:
        return {
            "l2": self.l2,
            "before": self.before.to_json(),
            "after_cv": self.after.to_json(),
            "cv_accuracy": {k: round(v.value, 4) for k, v in self.cv.items()},
        }


@dataclass
class FittedEntityHead:
    """An entity's head and what was measured while fitting it."""

    head: EntityHead
    polarity: HeadFit
    related: HeadFit | None

    def summary(self) -> str:
        """Before / after in words, with intervals: what `trainer adapt` and a node print."""
        lines = [f"{self.head.entity}:"]
        for name, fit in (("polarity", self.polarity), ("related", self.related)):
            if fit is None:
                lines.append(f"  {name}: not adapted (the labels hold only one class)")
                continue
            lines.append(f"  {name} accuracy, current model on the labels: {fit.before.words()}")
            if fit.l2 is None:
                lines.append(
                    f"  {name} accuracy, adapted head: no head beat the current model "
                    "in cross-validation; kept the current model"
                )
            else:
                lines.append(
                    f"  {name} accuracy, adapted head (cross-validated, L2 {fit.l2:g}): "
                    f"{fit.after.words()}"
                )
        return "\n".join(lines)

    def improved(self) -> bool:
        """Cross-validation says the head beats the current model on at least one task
        and loses on none."""
        fits = [f for f in (self.polarity, self.related) if f is not None]
        gains = [f.after.correct - f.before.correct for f in fits]
        return any(g > 0 for g in gains) and all(g >= 0 for g in gains)


def fit_correction(
    embedding: np.ndarray,
    logits: np.ndarray,
    labels: np.ndarray,
    l2: float,
    config: AdaptConfig | None = None,
) -> Correction:
    """Minimise cross-entropy of ``logits + embedding @ W + b`` + l2 * |W|^2 (Adam, full batch)."""
    config = config or AdaptConfig()
    n, dim = embedding.shape
    classes = logits.shape[1]
    onehot = np.eye(classes, dtype=np.float64)[labels]
    weight = np.zeros((dim, classes))
    bias = np.zeros(classes)
    moments = [np.zeros_like(weight), np.zeros_like(bias)]
    squares = [np.zeros_like(weight), np.zeros_like(bias)]
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    x = embedding.astype(np.float64)
    base = logits.astype(np.float64)
    for step in range(1, config.steps + 1):
        z = base + x @ weight + bias
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


def fit_head(
    embedding: np.ndarray,
    logits: np.ndarray,
    labels: np.ndarray,
    config: AdaptConfig | None = None,
) -> HeadFit:
    """Choose the L2 strength (or no correction) by k-fold accuracy, then fit on all."""
    config = config or AdaptConfig()
    n = len(labels)
    if n < 2:
        raise AdaptationError(f"need at least 2 labelled tweets, got {n}")
    if embedding.shape[0] != n or logits.shape[0] != n:
        raise AdaptationError(
            f"{n} labels but {embedding.shape[0]} embeddings and {logits.shape[0]} logits"
        )
    labels = np.asarray(labels, dtype=np.int64)
    before = Accuracy(int((logits.argmax(1) == labels).sum()), n)
    scores: dict[str, Accuracy] = {"0": before}
    k = min(config.folds, n)
    folds = _folds(n, k, config.seed)
    for l2 in config.l2_grid:
        correct = 0
        for held in folds:
            train = np.setdiff1d(np.arange(n), held)
            c = fit_correction(embedding[train], logits[train], labels[train], l2, config)
            pred = (logits[held] + c(embedding[held])).argmax(1)
            correct += int((pred == labels[held]).sum())
        scores[str(l2)] = Accuracy(correct, n)
    # On a tie the general model wins (no evidence for a head), then the strongest pull.
    best = max(scores, key=lambda key: (scores[key].correct, key == "0", float(key)))
    if best == "0":
        dim, classes = embedding.shape[1], logits.shape[1]
        zero = Correction(np.zeros((dim, classes), np.float32), np.zeros(classes, np.float32))
        return HeadFit(zero, None, before, before, scores)
    l2 = float(best)
    correction = fit_correction(embedding, logits, labels, l2, config)
    return HeadFit(correction, l2, before, scores[best], scores)


def fit_entity_head(
    entity: str,
    embedding: np.ndarray,
    logits: np.ndarray,
    related_logits: np.ndarray | None,
    polarity: np.ndarray,
    related: np.ndarray,
    config: AdaptConfig | None = None,
) -> FittedEntityHead:
    """Fit ``entity``'s polarity head on tweets with a polarity answer, and its related
    head where the answers hold both related and unrelated tweets.

    ``polarity``: class index per tweet, -1 for none; ``related``: 1 / 0, -1 for none.
    """
    config = config or AdaptConfig()
    polarity = np.asarray(polarity)
    related = np.asarray(related)
    has_polarity = polarity >= 0
    if has_polarity.sum() < 2:
        raise AdaptationError(f"{entity}: need at least 2 tweets with a polarity label")
    pol = fit_head(embedding[has_polarity], logits[has_polarity], polarity[has_polarity], config)
    info: dict[str, Any] = {"polarity_tweets": pol.before.total, "polarity": pol.to_json()}
    rel = None
    has_related = related >= 0
    if related_logits is not None and len(set(related[has_related].tolist())) == 2:
        rel = fit_head(
            embedding[has_related], related_logits[has_related], related[has_related], config
        )
        info |= {"related_tweets": rel.before.total, "related": rel.to_json()}
    head = EntityHead(
        entity=" ".join(entity.split()),
        polarity=pol.correction,
        related=rel.correction if rel is not None else None,
        info=info,
    )
    return FittedEntityHead(head, pol, rel)


def adapted_version(parent_version: str, entity: str) -> str:
    """The parent's version plus the entity as semver build metadata:
    ``2.0.0`` + Toyota -> ``2.0.0+toyota``; ``2.0.0+kia`` + Toyota -> ``2.0.0+kia.toyota``."""
    tag = "".join(ch if ch.isalnum() else "-" for ch in entity_key(entity)).strip("-") or "entity"
    base, _, build = parent_version.partition("+")
    parts = [p for p in build.split(".") if p] if build else []
    if tag not in parts:
        parts.append(tag)
    return f"{base}+{'.'.join(parts)}"


def write_adapted_bundle(
    parent: ModelBundle,
    heads: Iterable[EntityHead],
    out_dir: str | os.PathLike[str],
    *,
    version: str | None = None,
    name: str | None = None,
    adapted: Iterable[Mapping[str, Any]] = (),
) -> ModelBundle:
    """A copy of ``parent`` (all variants, same FlatBuffers) with ``heads`` added to or
    replacing its per-entity heads. Default version: :func:`adapted_version` per entity.

    ``adapted``: records of what each head was fitted on, appended to the manifest's
    ``training.adapted`` list.
    """
    heads = list(heads)
    if not heads:
        raise AdaptationError("no head to write")
    merged: dict[str, EntityHead] = {}
    if parent.entity_heads_path is not None:
        merged.update(load_entity_heads(parent.entity_heads_path, len(parent.labels)))
    for head in heads:
        merged[entity_key(head.entity)] = head
    dim = heads[0].polarity.weight.shape[0]
    if version is None:
        version = parent.manifest.version
        for head in heads:
            version = adapted_version(version, head.entity)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = out_dir.parent / f".{out_dir.name}.heads.json"
    save_entity_heads(staging, merged, embedding_dim=dim)
    training = {
        **parent.manifest.training,
        "adapted": [*parent.manifest.training.get("adapted", []), *map(dict, adapted)],
    }
    changes: dict[str, Any] = {"version": version}
    if name:
        changes["name"] = name
    all_variants = {v: parent.root / info.file for v, info in parent.manifest.variants.items()}
    try:
        return write_derived_bundle(
            parent,
            out_dir,
            variant_files=all_variants,
            default_variant=parent.manifest.default_variant,
            metrics={},  # the parent's figures do not describe the adapted model
            training=training,
            entity_heads_file=staging,
            **changes,
        )
    finally:
        staging.unlink(missing_ok=True)


def config_record(config: AdaptConfig) -> dict[str, Any]:
    return asdict(config)
