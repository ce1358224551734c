"""Which tweets to label next: active learning on a bundle's outputs (numpy only).

Used by ``trainer select`` and by the node's Teach view. The inputs are the raw FlatBuffer
outputs of the unlabelled pool (what :meth:`edgemodel.inference.Classifier.run` returns,
or what the node stored when it labelled the tweets):

- ``logits`` [m, classes] polarity logits, ``related_logits`` [m, 2] or None,
- ``embedding`` [m, dim] the pooled ``embedding`` output,

and, optionally, the embeddings of tweets already labelled (so they are not asked again
in other words).

``active`` scores each pool tweet by how unsure the model is about it, on both questions a
user answers: is it about the brand (entropy of the related head) and, if so, which
polarity (entropy of the polarity head, weighted by the probability that it is related).
It then picks greedily: the next tweet maximises uncertainty x distance (cosine) to the
nearest tweet already picked or labelled, so a batch covers different kinds of tweets
instead of twenty retweets of the same doubtful one. With nothing labelled yet the
distances start equal, so the first pick is the most uncertain tweet.

``random`` is the baseline: a seeded uniform sample.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edgemodel.bundle import RELATED_LABELS

STRATEGIES = ("active", "random")


class SelectionError(ValueError):
    """Bad selector input: unknown strategy, shapes that disagree."""


@dataclass(frozen=True)
class PoolOutputs:
    """The bundle's raw outputs for the unlabelled pool (rows = pool tweets)."""

    logits: np.ndarray
    embedding: np.ndarray
    related_logits: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.logits.shape[0])

    def take(self, rows: Sequence[int] | np.ndarray) -> PoolOutputs:
        rows = np.asarray(rows, dtype=np.int64)
        related = None if self.related_logits is None else self.related_logits[rows]
        return PoolOutputs(self.logits[rows], self.embedding[rows], related)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _entropy(p: np.ndarray) -> np.ndarray:
    """Normalised entropy in [0, 1] per row."""
    h = -(p * np.log(np.clip(p, 1e-12, 1.0))).sum(axis=1)
    return h / np.log(p.shape[1])


def uncertainty(pool: PoolOutputs) -> np.ndarray:
    """Per tweet, in [0, 1]: related entropy plus P(related) x polarity entropy, halved
    (the polarity question only matters for tweets about the brand)."""
    polarity_h = _entropy(_softmax(pool.logits))
    if pool.related_logits is None:
        return polarity_h
    related_p = _softmax(pool.related_logits)
    p_related = related_p[:, RELATED_LABELS.index("related")]
    return 0.5 * (_entropy(related_p) + p_related * polarity_h)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def select(
    pool: PoolOutputs,
    n: int,
    strategy: str = "active",
    labelled_embedding: np.ndarray | None = None,
    seed: int = 13,
) -> list[int]:
    """Indices of the ``n`` pool rows to label next, in the order to ask them."""
    if strategy not in STRATEGIES:
        raise SelectionError(f"unknown strategy {strategy!r} (expected one of {STRATEGIES})")
    m = len(pool)
    if pool.embedding.shape[0] != m or (
        pool.related_logits is not None and pool.related_logits.shape[0] != m
    ):
        raise SelectionError("pool outputs disagree on the number of tweets")
    n = max(0, min(n, m))
    if n == 0:
        return []
    if strategy == "random":
        return [int(i) for i in np.random.default_rng(seed).permutation(m)[:n]]
    score = uncertainty(pool)
    emb = _unit(pool.embedding)
    # Cosine distance to the nearest tweet already picked or labelled (1 when none).
    nearest = np.ones(m, np.float32)
    if labelled_embedding is not None and len(labelled_embedding):
        known = _unit(labelled_embedding)
        for start in range(0, len(known), 512):
            sims = emb @ known[start : start + 512].T
            nearest = np.minimum(nearest, 1.0 - sims.max(axis=1))
    nearest = np.clip(nearest, 0.0, None)
    picked: list[int] = []
    available = np.ones(m, bool)
    for _ in range(n):
        value = np.where(available, score * nearest, -np.inf)
        i = int(np.argmax(value))
        picked.append(i)
        available[i] = False
        nearest = np.minimum(nearest, np.clip(1.0 - emb @ emb[i], 0.0, None))
    return picked
