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

from edgemodel.bundle import RELATED_LABELS, ModelBundle, write_derived_bundle
from edgemodel.entity_heads import (
    Correction,
    EntityHead,
    entity_key,
    load_entity_heads,
    save_entity_heads,
)
from edgemodel.selection import PoolOutputs

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
    # Self-training on unlabelled tweets (when given): the confidence a pseudo-label
    # needs (0 disables) and its weight against a real label.
    self_training: float = 0.9
    pseudo_weight: float = 1.0


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


def _fit_many(
    x: np.ndarray,
    base: np.ndarray,
    labels: np.ndarray,
    weights: np.ndarray,
    l2: np.ndarray,
    config: AdaptConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """Fit M corrections at once (Adam, full batch): model m minimises the
    ``weights[m]``-weighted cross-entropy of ``base + x @ W_m + b_m`` + l2[m] * |W_m|^2.

    One matrix product serves all M models (cross-validation folds x L2 strengths), which
    is what makes a cross-validated head take well under a second on a small CPU.
    Returns W [M, dim, classes] and b [M, classes].
    """
    m_count, n = weights.shape
    dim, classes = x.shape[1], base.shape[1]
    onehot = np.eye(classes, dtype=np.float32)[labels]
    share = (weights / np.maximum(weights.sum(axis=1, keepdims=True), 1e-12)).T[:, :, None]
    x = x.astype(np.float32)
    base = base.astype(np.float32)[:, None, :]
    penalty = 2 * np.repeat(np.asarray(l2, np.float32), classes)[None, :]
    weight = np.zeros((dim, m_count * classes), np.float32)
    bias = np.zeros((m_count, classes), np.float32)
    state = [np.zeros_like(weight), np.zeros_like(weight), np.zeros_like(bias), np.zeros_like(bias)]
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    for step in range(1, config.steps + 1):
        z = base + (x @ weight).reshape(n, m_count, classes) + bias[None]
        z -= z.max(axis=2, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=2, keepdims=True)
        grad_z = (p - onehot[:, None, :]) * share
        grads = (x.T @ grad_z.reshape(n, m_count * classes) + penalty * weight, grad_z.sum(0))
        for i, (param, grad) in enumerate(zip((weight, bias), grads, strict=True)):
            first, second = state[2 * i], state[2 * i + 1]
            first *= beta1
            first += (1 - beta1) * grad
            second *= beta2
            second += (1 - beta2) * grad * grad
            m_hat = first / (1 - beta1**step)
            v_hat = second / (1 - beta2**step)
            param -= config.learning_rate * m_hat / (np.sqrt(v_hat) + eps)
    return weight.reshape(dim, m_count, classes).transpose(1, 0, 2), bias


def fit_correction(
    embedding: np.ndarray,
    logits: np.ndarray,
    labels: np.ndarray,
    l2: float,
    config: AdaptConfig | None = None,
) -> Correction:
    """Minimise cross-entropy of ``logits + embedding @ W + b`` + l2 * |W|^2 (Adam, full batch)."""
    config = config or AdaptConfig()
    weights = np.ones((1, len(labels)), np.float32)
    w, b = _fit_many(embedding, logits, np.asarray(labels), weights, np.asarray([l2]), config)
    return Correction(w[0], b[0])


def _fold_ids(n: int, k: int, seed: int) -> np.ndarray:
    order = list(range(n))
    random.Random(seed).shuffle(order)
    fold = np.empty(n, np.int64)
    for i in range(k):
        fold[order[i::k]] = i
    return fold


def _correction(w: np.ndarray, b: np.ndarray, centre: np.ndarray) -> Correction:
    # Fitted on centred embeddings; (e - c) @ W + b == e @ W + (b - c @ W).
    return Correction(w.astype(np.float32), (b - centre @ w).astype(np.float32))


def fit_head(
    embedding: np.ndarray,
    logits: np.ndarray,
    labels: np.ndarray,
    config: AdaptConfig | None = None,
    *,
    centre: np.ndarray | None = None,
    unlabelled: tuple[np.ndarray, np.ndarray] | None = None,
) -> HeadFit:
    """Choose the L2 strength (or no correction) by k-fold accuracy, then fit on all.

    ``centre``: the brand's mean embedding (labelled and unlabelled tweets); the head is
    fitted on embeddings minus it, so its bias carries the brand's overall shift and the
    L2 pull only the within-brand part (the stored head is the same linear map).
    ``unlabelled``: (embedding, logits) of the brand's unlabelled tweets for one round of
    self-training (``config.self_training``): tweets the fitted head labels with at least
    that confidence join the training data; in cross-validation each fold's pseudo-labels
    come from that fold's own head, so the held-out labels never leak into them, and the
    self-trained head is kept only if it scores at least as well.
    """
    config = config or AdaptConfig()
    n = len(labels)
    if n < 2:
        raise AdaptationError(f"need at least 2 labelled tweets, got {n}")
    if embedding.shape[0] != n or logits.shape[0] != n:
        raise AdaptationError(
            f"{n} labels but {embedding.shape[0]} embeddings and {logits.shape[0]} logits"
        )
    labels = np.asarray(labels, dtype=np.int64)
    dim, classes = embedding.shape[1], logits.shape[1]
    centre = np.zeros(dim, np.float32) if centre is None else np.asarray(centre, np.float32)
    x = embedding - centre
    before = Accuracy(int((logits.argmax(1) == labels).sum()), n)
    scores: dict[str, Accuracy] = {"0": before}
    k = min(config.folds, n)
    fold = _fold_ids(n, k, config.seed)
    grid = list(config.l2_grid)
    # Rows 0..k-1 of each strength: the k fold models; row k: the model on all labels.
    weights = np.ones((len(grid) * (k + 1), n), np.float32)
    for g in range(len(grid)):
        for f in range(k):
            weights[g * (k + 1) + f, fold == f] = 0.0
    l2 = np.repeat(np.asarray(grid, np.float32), k + 1)
    w_all, b_all = _fit_many(x, logits, labels, weights, l2, config)
    z = logits[None] + np.einsum("nd,mdc->mnc", x, w_all) + b_all[:, None, :]
    right = (z.argmax(2) == labels[None]) & (weights == 0)
    for g, strength in enumerate(grid):
        scores[str(strength)] = Accuracy(int(right[g * (k + 1) : g * (k + 1) + k].sum()), n)
    # On a tie the general model wins (no evidence for a head), then the strongest pull.
    best = max(scores, key=lambda key: (scores[key].correct, key == "0", float(key)))
    if best == "0":
        zero = Correction(np.zeros((dim, classes), np.float32), np.zeros(classes, np.float32))
        return HeadFit(zero, None, before, before, scores)
    g = grid.index(float(best))
    rows = slice(g * (k + 1), (g + 1) * (k + 1))
    w_best, b_best = w_all[rows], b_all[rows]
    fit = HeadFit(
        _correction(w_best[k], b_best[k], centre), float(best), before, scores[best], scores
    )
    if unlabelled is None or config.self_training <= 0 or len(unlabelled[0]) == 0:
        return fit
    return _self_trained(
        fit, x, logits, labels, fold, k, w_best, b_best, unlabelled, centre, config
    )


def _self_trained(
    fit: HeadFit,
    x: np.ndarray,
    logits: np.ndarray,
    labels: np.ndarray,
    fold: np.ndarray,
    k: int,
    w_best: np.ndarray,
    b_best: np.ndarray,
    unlabelled: tuple[np.ndarray, np.ndarray],
    centre: np.ndarray,
    config: AdaptConfig,
) -> HeadFit:
    """One round of self-training on the unlabelled tweets (see :func:`fit_head`)."""
    n = len(labels)
    u_x = unlabelled[0] - centre
    u_logits = np.asarray(unlabelled[1], np.float32)
    # Pseudo-labels of model f (f < k: fold models, k: the model on all labels).
    z = u_logits[None] + np.einsum("nd,mdc->mnc", u_x, w_best) + b_best[:, None, :]
    p = np.exp(z - z.max(axis=2, keepdims=True))
    p /= p.sum(axis=2, keepdims=True)
    sure = p.max(axis=2) >= config.self_training  # [k + 1, u]
    if not sure.any():
        return fit
    all_x = np.concatenate([x, u_x])
    all_logits = np.concatenate([logits, u_logits])
    # Each model sees its own pseudo-labels; one label vector, so fit one block per model.
    weights = np.zeros((k + 1, n + len(u_x)), np.float32)
    pseudo = p.argmax(axis=2)
    for f in range(k + 1):
        weights[f, :n] = (fold != f) if f < k else 1.0
        weights[f, n:] = sure[f] * config.pseudo_weight
    heads = []
    for f in range(k + 1):
        y = np.concatenate([labels, pseudo[f]])
        w, b = _fit_many(all_x, all_logits, y, weights[f : f + 1], np.asarray([fit.l2]), config)
        heads.append((w[0], b[0]))
    correct = 0
    for f in range(k):
        held = fold == f
        z_held = logits[held] + x[held] @ heads[f][0] + heads[f][1]
        correct += int((z_held.argmax(1) == labels[held]).sum())
    if correct < fit.after.correct:
        return fit
    after = Accuracy(correct, n)
    cv = {**fit.cv, f"{fit.l2:g}+self-training": after}
    return HeadFit(_correction(*heads[k], centre), fit.l2, fit.before, after, cv)


def fit_entity_head(
    entity: str,
    embedding: np.ndarray,
    logits: np.ndarray,
    related_logits: np.ndarray | None,
    polarity: np.ndarray,
    related: np.ndarray,
    config: AdaptConfig | None = None,
    *,
    unlabelled: PoolOutputs | None = None,
) -> FittedEntityHead:
    """Fit ``entity``'s polarity head on tweets with a polarity answer, and its related
    head where the answers hold both related and unrelated tweets.

    ``polarity``: class index per tweet, -1 for none; ``related``: 1 / 0, -1 for none.
    ``unlabelled``: the raw outputs of the brand's tweets nobody labelled (e.g. the
    node's stored texts): used to centre the embeddings and for self-training; the head
    is fitted without them when absent.
    """
    config = config or AdaptConfig()
    polarity = np.asarray(polarity)
    related = np.asarray(related)
    has_polarity = polarity >= 0
    if has_polarity.sum() < 2:
        raise AdaptationError(f"{entity}: need at least 2 tweets with a polarity label")
    centre = None
    if unlabelled is not None and len(unlabelled):
        centre = np.concatenate([embedding, unlabelled.embedding]).mean(axis=0)
    rel = None
    has_related = related >= 0
    u_related = None
    if related_logits is not None and len(set(related[has_related].tolist())) == 2:
        if unlabelled is not None and unlabelled.related_logits is not None:
            u_related = (unlabelled.embedding, unlabelled.related_logits)
        rel = fit_head(
            embedding[has_related],
            related_logits[has_related],
            related[has_related],
            config,
            centre=centre,
            unlabelled=u_related,
        )
    u_polarity = None
    if unlabelled is not None and len(unlabelled):
        about = np.ones(len(unlabelled), bool)
        if unlabelled.related_logits is not None:
            served = unlabelled.related_logits + (
                rel.correction(unlabelled.embedding) if rel is not None else 0.0
            )
            about = served.argmax(1) == RELATED_LABELS.index("related")
        u_polarity = (unlabelled.embedding[about], unlabelled.logits[about])
    pol = fit_head(
        embedding[has_polarity],
        logits[has_polarity],
        polarity[has_polarity],
        config,
        centre=centre,
        unlabelled=u_polarity,
    )
    info: dict[str, Any] = {"polarity_tweets": pol.before.total, "polarity": pol.to_json()}
    if rel is not None:
        info |= {"related_tweets": rel.before.total, "related": rel.to_json()}
    if unlabelled is not None:
        info["unlabelled_tweets"] = len(unlabelled)
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
