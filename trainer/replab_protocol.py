"""RepLab 2013's own protocol, scored through the node's inference code.

Models learn on each entity's training-period tweets and are scored on the later
(test-period) tweets of the same entities. Four figures, each with a 95 % bootstrap
interval, and per-entity tables:

- polarity accuracy on related tweets of entities that have training tweets ("known");
- related/unrelated accuracy on all tweets of those entities, with RepLab's
  reliability/sensitivity F for filtering (for a binary classification R is the product
  of the two classes' precisions and S the product of their recalls; per entity, then
  averaged over entities, as RepLab averages);
- polarity accuracy on entities with no training tweet at all ("unseen": BMW, Volvo);
- SemEval AvgRec on the trainer's stratified hold-out (the sentiment head), and on its
  temporal hold-out: the latest 10 % of SemEval tweets by time, which no training run sees
  (a stratified hold-out shares its weeks with training and hides what a later period does).

Several bundles (or variants) are scored on the same tweets; the first is the reference,
and every other gets paired-bootstrap intervals of its difference to it.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgemodel.batching import outputs_in_length_order
from edgemodel.bundle import RELATED_LABELS, ModelBundle
from edgemodel.data import POLARITY_LABELS, Example, read_replab, read_semeval
from edgemodel.inference import Classifier, EmptyTextError, Encoded, softmax
from edgemodel.metrics import index_accuracy, index_macro_recall, paired_bootstrap_interval
from edgemodel.splits import SPLIT_SEED, TEMPORAL_SOURCE, period_split, semeval_splits
from trainer.evaluate import machine_info

DRAWS = 1000


@dataclass
class ProtocolData:
    test: list[Example]  # test-period tweets (all have an entity)
    semeval: list[Example]  # the stratified hold-out
    semeval_temporal: list[Example]  # the latest 10 % by time
    known: set[str]  # entities with training-period tweets
    train_majority: dict[str, str]  # entity -> majority polarity of its training tweets


def load_protocol_data(
    replab_train: Path, replab_test: Path, semeval: Path | None, seed: int = SPLIT_SEED
) -> ProtocolData:
    """The test parts of the split ``trainer train --replab-train/--replab-test`` makes."""
    split = period_split(read_replab(replab_train), read_replab(replab_test), seed=seed)
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for e in split.train:
        if e.entity and e.label:
            counts[e.entity][e.label] += 1
    semeval_parts = semeval_splits(read_semeval(semeval), seed=seed) if semeval else {}
    return ProtocolData(
        test=split.test,
        semeval=semeval_parts["semeval"].test if semeval_parts else [],
        semeval_temporal=semeval_parts[TEMPORAL_SOURCE].test if semeval_parts else [],
        known={e.entity for e in split.train if e.entity},
        train_majority={k: c.most_common(1)[0][0] for k, c in counts.items()},
    )


@dataclass
class Answers:
    polarity: np.ndarray  # class index; -1 unreadable
    related: np.ndarray  # 1/0; -1 unreadable or no related head


def answer(clf: Classifier, examples: Sequence[Example], batch_size: int = 32) -> Answers:
    """What a node serving ``clf`` answers for each tweet (entity as given)."""
    encoded: list[Encoded | None] = []
    for e in examples:
        try:
            encoded.append(clf.encode(e.text, e.entity))
        except EmptyTextError:
            encoded.append(None)
    polarity = np.full(len(examples), -1)
    related = np.full(len(examples), -1)
    readable = [i for i, x in enumerate(encoded) if x is not None]
    if not readable:
        return Answers(polarity, related)

    def run(batch: Sequence[Encoded]) -> dict[str, np.ndarray]:
        out = clf.predict_outputs(batch)
        extra = {} if out.related_logits is None else {"related": out.related_logits}
        return {"logits": out.logits, **extra}

    outputs = outputs_in_length_order(run, [encoded[i] for i in readable], batch_size)
    # The bundle's label order, mapped to the protocol's.
    to_protocol = np.array([POLARITY_LABELS.index(label) for label in clf.labels])
    polarity[readable] = to_protocol[outputs["logits"].argmax(axis=1)]
    if "related" in outputs:
        logits = outputs["related"]
        answered = ~np.isnan(logits).any(axis=1)  # NaN rows: tweets without an entity
        is_related = softmax(np.nan_to_num(logits))[:, RELATED_LABELS.index("related")] >= 0.5
        related[readable] = np.where(answered, is_related.astype(int), -1)
    return Answers(polarity, related)


def _interval(pred: np.ndarray, truth: np.ndarray, metric, seed: int = 13) -> list[float]:
    rows = np.random.default_rng(seed).integers(0, len(truth), (DRAWS, len(truth)))
    return [float(x) for x in np.percentile(metric(pred[rows], truth[rows]), [2.5, 97.5])]


def filtering_rs(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Reliability, sensitivity and their F for one entity's related/unrelated answers."""
    precisions, recalls = [], []
    for c in (0, 1):
        predicted, actual = pred == c, truth == c
        hit = float((predicted & actual).sum())
        precisions.append(hit / predicted.sum() if predicted.sum() else 0.0)
        recalls.append(hit / actual.sum() if actual.sum() else 0.0)
    r, s = precisions[0] * precisions[1], recalls[0] * recalls[1]
    return {"reliability": r, "sensitivity": s, "f": 2 * r * s / (r + s) if r + s else 0.0}


@dataclass
class Target:
    """One target figure: which tweets, which truth, which metric."""

    name: str
    rows: np.ndarray
    truth: np.ndarray
    metric: Any
    head: str  # "polarity" | "related"


def targets(data: ProtocolData) -> list[Target]:
    test = data.test
    entity = np.array([e.entity for e in test])
    known = np.isin(entity, sorted(data.known))
    related = np.array([bool(e.related) for e in test])
    polarity = np.array([POLARITY_LABELS.index(e.label) if e.label else -1 for e in test])
    n = len(test)
    out = [
        Target("polarity accuracy, known brands", np.flatnonzero(known & related),
               polarity[known & related], index_accuracy, "polarity"),
        Target("related accuracy, known brands", np.flatnonzero(known),
               related[known].astype(int), index_accuracy, "related"),
        Target("polarity accuracy, unseen brands", np.flatnonzero(~known & related),
               polarity[~known & related], index_accuracy, "polarity"),
        Target("related accuracy, unseen brands", np.flatnonzero(~known),
               related[~known].astype(int), index_accuracy, "related"),
    ]  # fmt: skip
    offset = n
    for name, part in (
        ("SemEval AvgRec", data.semeval),
        ("SemEval AvgRec, temporal", data.semeval_temporal),
    ):
        if part:
            truth = np.array([POLARITY_LABELS.index(e.label) for e in part])
            out.append(
                Target(name, offset + np.arange(len(truth)), truth, index_macro_recall, "polarity")
            )
            offset += len(truth)
    return out


def _parse_model(spec: str) -> tuple[Path, str | None]:
    path, _, variant = spec.partition(":")
    return Path(path), variant or None


def score_models(
    specs: Sequence[str], data: ProtocolData, threads: int | None = None
) -> dict[str, Any]:
    """Every model on the same tweets; the first is the reference for differences."""
    examples = data.test + data.semeval + data.semeval_temporal
    answers: dict[str, Answers] = {}
    identity: dict[str, dict[str, str]] = {}
    for spec in specs:
        path, variant = _parse_model(spec)
        clf = Classifier(ModelBundle.load(path, variant=variant), num_threads=threads)
        name = spec
        answers[name] = answer(clf, examples)
        identity[name] = {
            **clf.bundle.identity(),
            "size_bytes": clf.bundle.model_path.stat().st_size,
            "path": str(path),
        }
        print(f"scored {name}", flush=True)
    ref = specs[0]
    results: dict[str, Any] = {"models": identity, "targets": {}, "per_entity": {}}
    for t in targets(data):
        block = {}
        for name, a in answers.items():
            pred = (a.polarity if t.head == "polarity" else a.related)[t.rows]
            if t.head == "related" and (pred < 0).all():
                continue  # no related head
            entry = {
                "value": float(t.metric(pred, t.truth)),
                "interval": _interval(pred, t.truth, t.metric),
                "n": len(t.rows),
            }
            ref_pred = (answers[ref].polarity if t.head == "polarity" else answers[ref].related)[
                t.rows
            ]
            if name != ref and not (t.head == "related" and (ref_pred < 0).all()):
                entry["delta"] = entry["value"] - float(t.metric(ref_pred, t.truth))
                entry["delta_interval"] = paired_bootstrap_interval(
                    pred, ref_pred, t.truth, t.metric
                )
            block[name] = entry
        if block:  # empty: a related target and no model with a related head
            results["targets"][t.name] = block
    for name, a in answers.items():
        results["per_entity"][name] = per_entity(data, a)
    return results


def per_entity(data: ProtocolData, a: Answers) -> list[dict[str, Any]]:
    rows = []
    by_entity: dict[str, list[int]] = defaultdict(list)
    for i, e in enumerate(data.test):
        by_entity[e.entity or ""].append(i)
    for entity in sorted(by_entity, key=lambda k: (k not in data.known, k)):
        idx = np.asarray(by_entity[entity])
        rel_truth = np.array([int(bool(data.test[i].related)) for i in idx])
        pol_idx = idx[rel_truth == 1]
        pol_truth = np.array([POLARITY_LABELS.index(data.test[i].label) for i in pol_idx])
        row: dict[str, Any] = {
            "entity": entity,
            "known": entity in data.known,
            "tweets": len(idx),
            "related_tweets": len(pol_idx),
            "polarity_accuracy": float((a.polarity[pol_idx] == pol_truth).mean()),
        }
        majority = data.train_majority.get(entity)
        if majority:
            row["train_majority_accuracy"] = float(
                (pol_truth == POLARITY_LABELS.index(majority)).mean()
            )
        if (a.related[idx] >= 0).any():
            row["related_accuracy"] = float((a.related[idx] == rel_truth).mean())
            row["all_related_accuracy"] = float(rel_truth.mean())
            row["filtering_rs"] = filtering_rs(a.related[idx], rel_truth)
        rows.append(row)
    return rows


def render_markdown(results: dict[str, Any], command: str) -> str:
    models = results["models"]
    lines = [
        "# RepLab 2013 protocol: train on the training period, score on the test period",
        "",
        f"- command: `{command}`",
        f"- machine: {json.dumps(machine_info())}",
        "- every answer comes from the FlatBuffer through the node's inference code "
        "(`edgemodel.inference.Classifier`)",
        f"- 95 % intervals: {DRAWS} bootstrap draws over tweets; Δ: paired, against the first row",
        "",
        "## Targets",
        "",
        "| model | size MB | " + " | ".join(results["targets"]) + " |",
        "|---|---|" + "---|" * len(results["targets"]),
    ]
    for name, ident in models.items():
        cells = []
        for block in results["targets"].values():
            e = block.get(name)
            if e is None:
                cells.append("-")
                continue
            cell = f"{e['value']:.4f} [{e['interval'][0]:.3f}, {e['interval'][1]:.3f}]"
            if "delta" in e:
                lo, hi = e["delta_interval"]
                cell += f"<br>Δ {100 * e['delta']:+.1f} pt [{100 * lo:+.1f}, {100 * hi:+.1f}]"
            cells.append(cell)
        label = f"{ident['name']} {ident['version']} {ident['variant']}"
        lines.append(f"| {label} | {ident['size_bytes'] / 1e6:.2f} | " + " | ".join(cells) + " |")
    n_row = [str(next(iter(b.values()))["n"]) for b in results["targets"].values()]
    lines += ["| tweets | | " + " | ".join(n_row) + " |", ""]
    first = next(iter(results["per_entity"]))
    lines += [
        f"## Per entity ({first})",
        "",
        "| entity | training tweets? | tweets | related | polarity acc | training-majority acc "
        "| related acc | all-related acc | filtering R / S / F |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in results["per_entity"][first]:
        rs = row.get("filtering_rs")
        lines.append(
            f"| {row['entity']} | {'yes' if row['known'] else '**no**'} | {row['tweets']} | "
            f"{row['related_tweets']} | {row['polarity_accuracy']:.3f} | "
            f"{row.get('train_majority_accuracy', float('nan')):.3f} | "
            f"{row.get('related_accuracy', float('nan')):.3f} | "
            f"{row.get('all_related_accuracy', float('nan')):.3f} | "
            + (f"{rs['reliability']:.3f} / {rs['sensitivity']:.3f} / {rs['f']:.3f}" if rs else "-")
            + " |"
        )
    known_rows = [r for r in results["per_entity"][first] if r["known"]]
    if known_rows and "related_accuracy" in known_rows[0]:
        mean = {
            k: float(np.mean([r[k] for r in known_rows]))
            for k in ("polarity_accuracy", "related_accuracy")
        }
        mean_f = float(np.mean([r["filtering_rs"]["f"] for r in known_rows]))
        lines += [
            "",
            f"Averaged over the {len(known_rows)} known entities (RepLab's way): polarity "
            f"accuracy {mean['polarity_accuracy']:.4f}, related accuracy "
            f"{mean['related_accuracy']:.4f}, filtering F(R,S) {mean_f:.4f}.",
        ]
    return "\n".join(lines) + "\n"
