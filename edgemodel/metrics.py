"""Classification metrics in plain numpy, with the label set always given explicitly.

Conventions (the same as scikit-learn's with ``zero_division=0``, so numbers compare):

* the confusion matrix has one row per true class and one column per predicted class, in
  the order of ``labels``;
* a prediction of ``None`` means "no prediction" (an unreadable tweet): it is wrong for its
  true class (lowers that class's recall and overall accuracy) but is nobody's false
  positive. Such cases are kept in a separate per-class ``unpredicted`` count, so
  ``support = row sum + unpredicted``;
* a ratio with a zero denominator (precision of a class never predicted, recall of a class
  absent from the data) is 0.0, and F1 is 0.0 when precision + recall is 0;
* macro averages are unweighted means over all ``labels``, present in the data or not.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Counts:
    """Everything the metrics are computed from."""

    labels: list[str]
    matrix: np.ndarray  # [K, K] int64: true class x predicted class
    unpredicted: np.ndarray  # [K] int64: true class, no prediction

    @property
    def support(self) -> np.ndarray:
        return self.matrix.sum(axis=1) + self.unpredicted

    @property
    def total(self) -> int:
        return int(self.support.sum())


def _index(values: Sequence[str | None], labels: Sequence[str], allow_none: bool) -> np.ndarray:
    position = {label: i for i, label in enumerate(labels)}
    unknown = {v for v in values if v not in position and not (allow_none and v is None)}
    if unknown:
        raise ValueError(f"values {sorted(map(str, unknown))} are not in labels {list(labels)}")
    return np.asarray([-1 if v is None else position[v] for v in values], np.int64)


def count(y_true: Sequence[str], y_pred: Sequence[str | None], labels: Sequence[str]) -> Counts:
    """Tally true/predicted pairs; ``None`` in ``y_pred`` is an unpredicted example."""
    if len(y_true) != len(y_pred):
        raise ValueError(f"{len(y_true)} true labels but {len(y_pred)} predictions")
    if len(set(labels)) != len(labels) or not labels:
        raise ValueError(f"labels must be non-empty and distinct, got {list(labels)}")
    k = len(labels)
    t = _index(y_true, labels, allow_none=False)
    p = _index(y_pred, labels, allow_none=True)
    predicted = p >= 0
    matrix = np.zeros((k, k), np.int64)
    np.add.at(matrix, (t[predicted], p[predicted]), 1)
    unpredicted = np.bincount(t[~predicted], minlength=k).astype(np.int64)
    return Counts(labels=list(labels), matrix=matrix, unpredicted=unpredicted)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num = np.asarray(num, np.float64)
    den = np.asarray(den, np.float64)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def precision(c: Counts) -> np.ndarray:
    return _ratio(np.diag(c.matrix), c.matrix.sum(axis=0))


def recall(c: Counts) -> np.ndarray:
    return _ratio(np.diag(c.matrix), c.support)


def f1(c: Counts) -> np.ndarray:
    p, r = precision(c), recall(c)
    return _ratio(2 * p * r, p + r)


def accuracy(c: Counts) -> float:
    return float(_ratio(np.trace(c.matrix), c.total))


def macro_f1(c: Counts, subset: Sequence[str] | None = None) -> float:
    """Mean F1 over all labels, or over ``subset`` (SemEval's F1-PN: positive, negative)."""
    return _mean_over(f1(c), c.labels, subset)


def macro_recall(c: Counts) -> float:
    """Mean per-class recall: SemEval-2017 Task 4A's official AvgRec."""
    return _mean_over(recall(c), c.labels, None)


def _mean_over(values: np.ndarray, labels: list[str], subset: Sequence[str] | None) -> float:
    if subset is None:
        return float(values.mean())
    missing = set(subset) - set(labels)
    if missing:
        raise ValueError(f"{sorted(missing)} are not in labels {labels}")
    return float(np.mean([values[labels.index(s)] for s in subset]))


def classification_report(
    y_true: Sequence[str], y_pred: Sequence[str | None], labels: Sequence[str]
) -> dict:
    """All metrics as a JSON-ready dict (plain floats and ints)."""
    c = count(y_true, y_pred, labels)
    p, r, f = precision(c), recall(c), f1(c)
    per_class = {
        label: {
            "precision": float(p[i]),
            "recall": float(r[i]),
            "f1": float(f[i]),
            "support": int(c.support[i]),
        }
        for i, label in enumerate(c.labels)
    }
    report: dict = {
        "n": c.total,
        "accuracy": accuracy(c),
        "macro_f1": macro_f1(c),
        "macro_recall": macro_recall(c),
    }
    if {"positive", "negative"} <= set(c.labels):
        report["f1_pn"] = macro_f1(c, ["positive", "negative"])
    report["per_class"] = per_class
    report["confusion_matrix"] = {
        "labels": c.labels,
        "matrix": c.matrix.tolist(),
        "unpredicted": c.unpredicted.tolist(),
    }
    return report


# Metrics on class-index arrays, vectorised over leading axes (bootstrap draws): a
# prediction of -1 (unreadable) is wrong for every class.
IndexMetric = Callable[[np.ndarray, np.ndarray], np.ndarray]


def index_accuracy(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    return (pred == truth).mean(axis=-1)


def index_macro_recall(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """SemEval's AvgRec: recall averaged over the classes present (along the last axis)."""
    recalls = [
        ((pred == c) & (truth == c)).sum(axis=-1) / np.maximum((truth == c).sum(axis=-1), 1)
        for c in np.unique(truth)
    ]
    return np.mean(recalls, axis=0)


def paired_bootstrap_interval(
    pred: np.ndarray,
    ref: np.ndarray,
    truth: np.ndarray,
    metric: IndexMetric,
    draws: int = 1000,
    seed: int = 13,
) -> list[float]:
    """95 % paired-bootstrap interval of metric(pred) - metric(ref). The same tweets are
    resampled for both models, so only their disagreements spread the interval."""
    rows = np.random.default_rng(seed).integers(0, len(truth), (draws, len(truth)))
    diff = metric(pred[rows], truth[rows]) - metric(ref[rows], truth[rows])
    return [float(x) for x in np.percentile(diff, [2.5, 97.5])]
