"""How far can RepLab polarity go on brands a model has never seen?

Issue 4 asks for RepLab 2013 accuracy >= 0.75 on held-out entities. This script puts a
model's held-out score next to reference points computed on the same tweets, so that the
gap can be read as a property of the data or of the model:

* cross-brand points use only the training brands' labels, as a shipped model must;
* in-brand points also learn from the held-out brand's *own* labels (5-fold, folds grouped
  by cleaned text so retweets never straddle folds): what a model would reach if each
  brand's labelling convention were known, i.e. an optimistic ceiling for cross-brand work;
* label consistency: how often identical tweets of one brand carry the same label.

The model's logits come from the node's own inference code (``Classifier``); the split is
the pipeline's (``edgemodel.splits.split_like_training``), RELATED tweets only. Needs
scikit-learn (``pip install -e .[analysis]``).

Run:  python benchmarks/replab_ceiling.py --model models/default \\
          --replab ../shared/data/replab2013/automotive_en.tsv
Writes docs/replab_ceiling.json and docs/replab_ceiling.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from scipy.sparse import csr_matrix, hstack
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgemodel.batching import predict_sorted  # noqa: E402
from edgemodel.data import POLARITY_LABELS, Example, read_replab  # noqa: E402
from edgemodel.inference import Classifier  # noqa: E402
from edgemodel.report_notes import write_markdown_keeping_notes  # noqa: E402
from edgemodel.splits import Split, split_like_training  # noqa: E402
from edgemodel.textclean import clean_tweet  # noqa: E402
from trainer.evaluate import machine_info  # noqa: E402

FOLDS = 5
SEED = 13
TARGET = 0.75
# A tweet's predicted class index from its features; fitted on one set, applied to another.
Fit = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def tfidf_features(texts: Sequence[str]) -> csr_matrix:
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    return vectorizer.fit_transform(texts)


def logistic(train_x, train_y: np.ndarray, test_x) -> np.ndarray:
    model = LogisticRegression(C=4.0, max_iter=3000)
    return model.fit(train_x, train_y).predict(test_x)


def fitted_prior_shift(train_logits, train_y: np.ndarray, test_logits) -> np.ndarray:
    """Per-class logit offsets that maximise accuracy on ``train``, applied to ``test``."""
    grid = np.linspace(-4.0, 4.0, 33)
    best, best_acc = np.zeros(3), -1.0
    for neg in grid:
        for pos in grid:
            shift = np.array([neg, 0.0, pos])
            acc = float(np.mean((train_logits + shift).argmax(1) == train_y))
            if acc > best_acc:
                best, best_acc = shift, acc
    return (test_logits + best).argmax(1)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def em_prior_adaptation(
    logits: np.ndarray, train_prior: np.ndarray, steps: int = 100
) -> np.ndarray:
    """Predictions after re-estimating the label prior of unlabelled tweets by EM.

    Saerens, Latinne & Decaestecker (2002): posteriors are re-weighted by new/old prior and
    the new prior is the mean re-weighted posterior, until it settles. Uses no labels, so
    a node could do it on the stream of a brand it has never seen.
    """
    posterior = softmax(logits)
    prior = train_prior.copy()
    for _ in range(steps):
        adjusted = posterior * (prior / train_prior)
        adjusted /= adjusted.sum(axis=1, keepdims=True)
        prior = adjusted.mean(axis=0)
    return adjusted.argmax(1)


def per_brand(brands: np.ndarray, predict: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """``predict(rows)`` run brand by brand, stitched back into one prediction vector."""
    predicted = np.zeros(len(brands), np.int64)
    for brand in set(brands):
        rows = np.flatnonzero(brands == brand)
        predicted[rows] = predict(rows)
    return predicted


def in_brand(features, y: np.ndarray, groups: Sequence[str], fit: Fit) -> np.ndarray:
    """Out-of-fold predictions when training on the brand's own labels."""
    folds = StratifiedGroupKFold(n_splits=FOLDS, shuffle=True, random_state=SEED)
    predicted = np.zeros_like(y)
    for train, test in folds.split(np.zeros(len(y)), y, groups):
        predicted[test] = fit(features[train], y[train], features[test])
    return predicted


def label_consistency(texts: Sequence[str], y: np.ndarray) -> dict[str, Any]:
    """Share of tweets that agree with the majority label of their identical-text group."""
    groups: dict[str, list[int]] = defaultdict(list)
    for text, label in zip(texts, y, strict=True):
        groups[text].append(int(label))
    repeated = [labels for labels in groups.values() if len(labels) > 1]
    tweets = sum(len(labels) for labels in repeated)
    agreeing = sum(Counter(labels).most_common(1)[0][1] for labels in repeated)
    return {
        "groups": len(repeated),
        "tweets": tweets,
        "agreement": agreeing / tweets if tweets else None,
    }


def evaluate(model: Path, replab: Path) -> dict[str, Any]:
    full = split_like_training(read_replab(replab))
    split = Split(*([e for e in part if e.label] for part in (full.train, full.dev, full.test)))
    labels = list(POLARITY_LABELS)

    def targets(examples: Sequence[Example]) -> np.ndarray:
        return np.array([labels.index(e.label) for e in examples])

    train_y, dev_y, test_y = targets(split.train), targets(split.dev), targets(split.test)
    train_text = [clean_tweet(e.text) for e in split.train]
    test_text = [clean_tweet(e.text) for e in split.test]
    brands = np.array([e.entity for e in split.test])
    dev_brands = np.array([e.entity for e in split.dev])

    clf = Classifier.from_path(model)
    if clf.labels != labels:
        raise SystemExit(f"{model}: labels {clf.labels}, expected {labels}")

    def model_logits(examples: Sequence[Example]) -> np.ndarray:
        return predict_sorted(clf, [clf.encode(e.text, e.entity) for e in examples], 64)

    logits, dev_logits = model_logits(split.test), model_logits(split.dev)
    # The prior the model has learnt for RepLab: its mean posterior on the training brands.
    train_prior = softmax(model_logits(split.train)).mean(axis=0)

    tfidf = tfidf_features(train_text + test_text)
    train_tfidf, test_tfidf = tfidf[: len(train_text)], tfidf[len(train_text) :]
    majority = Counter(train_y.tolist()).most_common(1)[0][0]
    name = clf.bundle.manifest.name + " " + clf.bundle.manifest.version

    cross_brand: dict[str, np.ndarray] = {
        f"majority label of the training brands ({labels[majority]})": np.full_like(
            test_y, majority
        ),
        "TF-IDF + logistic regression, training brands": logistic(train_tfidf, train_y, test_tfidf),
        f"{name} ({clf.bundle.variant})": logits.argmax(1),
        f"{name} + label prior estimated per brand by EM (no labels)": per_brand(
            brands, lambda rows: em_prior_adaptation(logits[rows], train_prior)
        ),
    }
    dev_rows = {
        f"{name} ({clf.bundle.variant})": dev_logits.argmax(1),
        f"{name} + label prior estimated per brand by EM (no labels)": per_brand(
            dev_brands, lambda rows: em_prior_adaptation(dev_logits[rows], train_prior)
        ),
    }
    texts = np.array([t.lower() for t in test_text], dtype=object)

    def own_labels(fit: Fit, features) -> np.ndarray:
        """``fit`` trained and scored within each brand, out of fold."""
        return per_brand(
            brands, lambda rows: in_brand(features[rows], test_y[rows], texts[rows], fit)
        )

    stacked = hstack([test_tfidf, csr_matrix(logits / 4.0)]).tocsr()
    in_brand_rows = {
        "each brand's own majority label": per_brand(
            brands,
            lambda rows: np.full(len(rows), Counter(test_y[rows].tolist()).most_common(1)[0][0]),
        ),
        f"{name} + label prior fitted per brand": own_labels(fitted_prior_shift, logits),
        "TF-IDF + logistic regression, per brand": own_labels(logistic, test_tfidf),
        f"{name} logits + TF-IDF, logistic regression per brand": own_labels(logistic, stacked),
    }
    consistency = {
        b: label_consistency(texts[brands == b], test_y[brands == b]) for b in sorted(set(brands))
    }

    def scores(
        predicted: np.ndarray, gold: np.ndarray = test_y, where: np.ndarray = brands
    ) -> dict[str, float]:
        by_brand = {
            b: float(np.mean(predicted[where == b] == gold[where == b])) for b in sorted(set(where))
        }
        return {"all": float(np.mean(predicted == gold)), **by_brand}

    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "model": str(model),
        "test_brands": {b: int(np.sum(brands == b)) for b in sorted(set(brands))},
        "train_tweets": len(split.train),
        "target": TARGET,
        "dev_brands": {k: scores(v, dev_y, dev_brands) for k, v in dev_rows.items()},
        "cross_brand": {k: scores(v) for k, v in cross_brand.items()},
        "in_brand": {k: scores(v) for k, v in in_brand_rows.items()},
        "label_consistency": consistency,
    }


def render(report: dict[str, Any]) -> str:
    brands = list(report["test_brands"])
    header = ["reference point", "all", *brands]
    lines = [
        "# RepLab polarity on unseen brands: where the ceiling is",
        "",
        f"Generated by `benchmarks/replab_ceiling.py` on {report['date'][:10]} "
        f"({report['machine']['processor']}, {report['machine']['cpus_available']} CPUs). "
        "Test brands (RELATED tweets): "
        + ", ".join(f"{b} {n}" for b, n in report["test_brands"].items())
        + f"; {report['train_tweets']} training tweets from the other RepLab brands."
        + f" Target of issue 4: {report['target']}.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for section, title in (("cross_brand", "cross-brand"), ("in_brand", "in-brand (oracle)")):
        lines.append(f"| *{title}* |" + " |" * (len(header) - 1))
        for row, s in report[section].items():
            lines.append(
                f"| {row} | {s['all']:.3f} | " + " | ".join(f"{s[b]:.3f}" for b in brands) + " |"
            )
    dev = report["dev_brands"]
    dev_names = [b for b in next(iter(dev.values())) if b != "all"]
    lines += [
        "",
        "The same model on the dev brands (" + ", ".join(dev_names) + "), where the choices "
        "were made:",
        "",
        "| model | all | " + " | ".join(dev_names) + " |",
        "|" + "---|" * (len(dev_names) + 2),
    ]
    for row, s in dev.items():
        lines.append(
            f"| {row} | {s['all']:.3f} | " + " | ".join(f"{s[b]:.3f}" for b in dev_names) + " |"
        )
    lines += [
        "",
        "Label consistency (identical cleaned text within one brand):",
        "",
    ]
    for brand, c in report["label_consistency"].items():
        agreement = "n/a" if c["agreement"] is None else f"{c['agreement']:.3f}"
        lines.append(
            f"- {brand}: {c['groups']} repeated texts covering {c['tweets']} tweets; "
            f"{agreement} of them carry their group's majority label"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=REPO / "models" / "default")
    parser.add_argument("--replab", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "replab_ceiling")
    args = parser.parse_args()
    report = evaluate(args.model, args.replab)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    write_markdown_keeping_notes(args.out.with_suffix(".md"), render(report))
    print(render(report))


if __name__ == "__main__":
    main()
