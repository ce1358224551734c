"""Is bundle B better than bundle A? Both on the same tweets, with paired-bootstrap intervals.

Each data set is split as ``trainer train`` splits it, and each requested part (dev for the
decision, test for the record) is scored with its product metric: SemEval by AvgRec,
RepLab by accuracy. Predictions come from the FlatBuffers through the node's inference code
(:func:`trainer.evaluate.evaluate_bundle`), so the comparison is of what nodes would serve.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgemodel.bundle import ModelBundle
from edgemodel.data import POLARITY_LABELS, Example
from edgemodel.metrics import (
    IndexMetric,
    index_accuracy,
    index_macro_recall,
    paired_bootstrap_interval,
)
from edgemodel.splits import Split
from trainer.evaluate import evaluate_bundle

# The metric each data set's target is stated in; AvgRec for anything else.
PRODUCT_METRIC: dict[str, tuple[str, IndexMetric]] = {
    "semeval": ("AvgRec", index_macro_recall),
    "replab": ("accuracy", index_accuracy),
}


def predictions(bundle: Path, examples: Sequence[Example]) -> np.ndarray:
    """Class indices (-1: unreadable) of the bundle's serving variant."""
    served = ModelBundle.load(bundle, verify=False)
    report = evaluate_bundle(
        served.model_path,
        texts=[e.text for e in examples],
        labels=[e.label or "" for e in examples],
        entities=[e.entity for e in examples],
        latency_samples=0,
        with_predictions=True,
    )
    return np.asarray(report["predictions"][served.variant])


def compare_bundles(
    a: Path, b: Path, splits: dict[str, Split], parts: Sequence[str] = ("dev", "test")
) -> dict[str, Any]:
    """Per data set and part: metric of A and B, B - A with its 95 % interval, agreement."""
    rows = []
    for source, split in splits.items():
        name, metric = PRODUCT_METRIC.get(source, ("AvgRec", index_macro_recall))
        for part in parts:
            examples = [e for e in getattr(split, part) if e.label is not None]
            if not examples:
                continue
            truth = np.asarray([POLARITY_LABELS.index(e.label) for e in examples])
            pred_a, pred_b = predictions(a, examples), predictions(b, examples)
            score_a, score_b = float(metric(pred_a, truth)), float(metric(pred_b, truth))
            rows.append(
                {
                    "data": source,
                    "part": part,
                    "n": len(examples),
                    "metric": name,
                    "a": score_a,
                    "b": score_b,
                    "b_minus_a": score_b - score_a,
                    "interval_95": paired_bootstrap_interval(pred_b, pred_a, truth, metric),
                    "agreement": float(np.mean(pred_a == pred_b)),
                }
            )
    return {"a": _identity(a), "b": _identity(b), "rows": rows}


def _identity(bundle: Path) -> dict[str, str]:
    return {"path": str(bundle), **ModelBundle.load(bundle, verify=False).identity()}


def render_comparison(result: dict[str, Any]) -> str:
    a, b = result["a"], result["b"]
    lines = [
        f"A: {a['path']} ({a['name']} {a['version']}, {a['variant']})",
        f"B: {b['path']} ({b['name']} {b['version']}, {b['variant']})",
        "",
        "| data | part | n | metric | A | B | B - A [95 % paired bootstrap] | agreement |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        low, high = r["interval_95"]
        lines.append(
            f"| {r['data']} | {r['part']} | {r['n']} | {r['metric']} | {r['a']:.4f} "
            f"| {r['b']:.4f} | {r['b_minus_a']:+.4f} [{low:+.4f}, {high:+.4f}] "
            f"| {r['agreement']:.3f} |"
        )
    return "\n".join(lines) + "\n"
