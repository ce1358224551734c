"""edgemodel.adaptation and edgemodel.selection: head fitting and active learning on
arrays (what a node calls on-device), importable without TensorFlow."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from edgemodel.adaptation import (
    AdaptationError,
    adapted_version,
    fit_entity_head,
    fit_head,
    wilson_interval,
)
from edgemodel.selection import PoolOutputs, SelectionError, select, uncertainty


def test_importable_without_tensorflow() -> None:
    code = (
        "import sys, edgemodel.adaptation, edgemodel.selection; "
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def brand(n: int, seed: int = 0, dim: int = 16) -> tuple[np.ndarray, ...]:
    """Embeddings whose first coordinate decides the label; a general model that
    ignores it (constant logits favouring class 1)."""
    rng = np.random.default_rng(seed)
    embedding = rng.normal(size=(n, dim)).astype(np.float32)
    polarity = np.digitize(embedding[:, 0], [-0.5, 0.5])  # 0, 1, 2
    logits = np.tile(np.float32([0.0, 0.5, 0.0]), (n, 1))
    related = (embedding[:, 1] > -1.0).astype(int)
    related_logits = np.tile(np.float32([1.0, 0.0]), (n, 1))
    return embedding, logits, related_logits, np.where(related == 1, polarity, -1), related


def test_head_learns_what_the_general_model_misses_and_says_so() -> None:
    embedding, logits, related_logits, polarity, related = brand(300)
    fitted = fit_entity_head("Acme", embedding, logits, related_logits, polarity, related)
    assert fitted.polarity.l2 is not None
    assert fitted.polarity.after.value > fitted.polarity.before.value + 0.2
    assert fitted.related is not None and fitted.improved()
    # The head applied to fresh tweets of the brand beats the general model there too.
    e2, l2, _, p2, _ = brand(300, seed=1)
    rows = p2 >= 0
    adapted = (l2[rows] + fitted.head.polarity(e2[rows])).argmax(1)
    assert (adapted == p2[rows]).mean() > (l2[rows].argmax(1) == p2[rows]).mean() + 0.2
    text = fitted.summary()
    assert "current model on the labels: " in text and "95 % interval" in text


def test_no_head_beats_a_general_model_that_is_already_right() -> None:
    embedding, _, _, polarity, _ = brand(60)
    rows = polarity >= 0
    perfect = np.eye(3, dtype=np.float32)[polarity[rows]] * 5
    fit = fit_head(embedding[rows], perfect, polarity[rows])
    assert fit.l2 is None and fit.after == fit.before
    assert not np.any(fit.correction.weight)


def test_too_few_or_mismatched_labels_are_clear_errors() -> None:
    embedding, logits, related_logits, _, related = brand(10)
    with pytest.raises(AdaptationError, match="at least 2 tweets with a polarity"):
        fit_entity_head("A", embedding, logits, related_logits, np.full(10, -1), related)
    with pytest.raises(AdaptationError, match="labels but"):
        fit_head(embedding[:5], logits, np.zeros(10, int))


def test_wilson_interval_and_versions() -> None:
    low, high = wilson_interval(75, 100)
    assert 0.65 < low < 0.75 < high < 0.84
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    assert adapted_version("2.0.0", "Toyota") == "2.0.0+toyota"
    assert adapted_version("2.0.0+toyota", "Alfa Romeo") == "2.0.0+toyota.alfa-romeo"
    assert adapted_version("2.0.0+toyota", "TOYOTA") == "2.0.0+toyota"


def test_active_selection_prefers_uncertain_and_diverse_tweets() -> None:
    rng = np.random.default_rng(0)
    m, dim = 200, 8
    centres = rng.normal(size=(4, dim)) * 5
    cluster = rng.integers(0, 4, m)
    embedding = centres[cluster] + rng.normal(size=(m, dim)) * 0.1
    logits = np.tile([5.0, 0.0, 0.0], (m, 1))  # confident ...
    doubtful = np.flatnonzero(np.isin(cluster, [1, 2]))
    logits[doubtful] = [0.1, 0.0, 0.05]  # ... except clusters 1 and 2
    pool = PoolOutputs(logits, embedding, np.tile([0.0, 3.0], (m, 1)))  # surely related
    picked = select(pool, 2, "active")
    # Both picks are doubtful, and from different clusters, not two near-duplicates.
    assert set(cluster[picked]) == {1, 2}
    # Already labelled cluster-1 tweets push the first pick to cluster 2.
    labelled = embedding[cluster == 1][:3]
    assert cluster[select(pool, 1, "active", labelled_embedding=labelled)[0]] == 2
    assert uncertainty(pool)[doubtful].min() > uncertainty(pool).max() / 2


def test_random_is_seeded_and_sizes_are_bounded() -> None:
    pool = PoolOutputs(np.zeros((30, 3)), np.ones((30, 4)), None)
    assert select(pool, 5, "random", seed=1) == select(pool, 5, "random", seed=1)
    assert len(set(select(pool, 50, "active"))) == 30
    assert select(pool, 0) == []
    with pytest.raises(SelectionError, match="unknown strategy"):
        select(pool, 3, "clever")


def test_unlabelled_tweets_centre_the_head_and_self_train_it() -> None:
    embedding, logits, related_logits, polarity, related = brand(400, seed=2)
    embedding += 3.0  # the brand's tweets sit far from the origin: centring matters
    labelled, rest = slice(0, 60), slice(60, None)
    pool = PoolOutputs(logits[rest], embedding[rest], related_logits[rest])
    fitted = fit_entity_head(
        "Acme",
        embedding[labelled],
        logits[labelled],
        related_logits[labelled],
        polarity[labelled],
        related[labelled],
        unlabelled=pool,
    )
    assert fitted.head.info["unlabelled_tweets"] == 340
    # Cross-validation kept the better of the plain and the self-trained head.
    assert fitted.polarity.after.correct >= max(
        v.correct for k, v in fitted.polarity.cv.items() if "self" not in k
    )
    e2, l2, _, p2, _ = brand(300, seed=3)
    e2 += 3.0
    rows = p2 >= 0
    adapted = (l2[rows] + fitted.head.polarity(e2[rows])).argmax(1)
    assert (adapted == p2[rows]).mean() > (l2[rows].argmax(1) == p2[rows]).mean() + 0.2
