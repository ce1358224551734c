"""`node bench --model NEW --baseline OLD`: several bundles in one run, side by side.

Every model file of every bundle is a target of the same run (bench/suite.py alternates the
rounds over all of them); here each target gets a name unique in the report
(``VERSION/FILE``, e.g. ``3.0.0/int4``), a matching file in the baseline bundle, and per
metric its value, the baseline's and the ratio new / old.

Ratios of timed metrics are the median over rounds of each round's own ratio: a round
measures every file minutes apart, so load that drifts over the run cancels out of each
round's ratio. Values are medians over rounds of the round's figure.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

LOWER, HIGHER = "lower", "higher"  # which direction of new / old is the better one
ACCURACY_KEYS = ("accuracy", "macro_f1", "macro_recall")


def bundle_labels(versions: Sequence[str]) -> list[str]:
    """Each bundle's label: its version, or ``VERSION#N`` (N: its place on the command line,
    baseline first) where two bundles share a version (e.g. a bundle against itself)."""
    seen = Counter(versions)
    return [v if seen[v] == 1 else f"{v}#{i}" for i, v in enumerate(versions, 1)]


def match_in_baseline(
    variant: str, runtime: str, baseline: Sequence[tuple[str, str]], served: str
) -> str | None:
    """The baseline's file a target is compared with, given the baseline's (variant, runtime)
    pairs: the same variant (int8 with int8); else the file `node start` serves from the
    baseline (``served``); else its first file of the same runtime. ONNX files are compared
    with ONNX files only; ``None`` when the baseline has none."""
    same_runtime = [v for v, r in baseline if r == runtime]
    if variant in same_runtime:
        return variant
    if served in same_runtime:
        return served
    return same_runtime[0] if same_runtime else None


def _metrics(threads: Sequence[int], timed: bool, labelled: bool) -> list[tuple]:
    """(key, label, better, figure of one round's result or None, per round?)"""
    out: list[tuple[str, str, str, Callable[[dict], float | None], bool]] = [
        ("size_mb", "size (MB)", LOWER, lambda r: r["size_bytes"] / 1e6, False),
    ]
    if timed:
        out += [
            ("latency_p50_ms", "batch-1 latency p50 (ms)", LOWER,
             lambda r: r["latency"]["p50_ms"], True),
            ("latency_p95_ms", "batch-1 latency p95 (ms)", LOWER,
             lambda r: r["latency"]["p95_ms"], True),
        ]  # fmt: skip
        for t in threads:
            out.append(
                (f"throughput_{t}", f"throughput, {t} thread(s) (tweets/s)", HIGHER,
                 lambda r, t=str(t): r["throughput_tweets_per_s"][t]["median"], True)
            )  # fmt: skip
        out += [
            ("rss_peak_mib", "peak RSS (MiB)", LOWER, lambda r: r.get("rss_peak_mib"), True),
            ("rss_idle_mib", "idle RSS (MiB)", LOWER, lambda r: r.get("rss_idle_mib"), True),
            ("load_s", "load time (s)", LOWER, lambda r: r.get("load_s"), True),
        ]
    if labelled:  # accuracy is measured in the first round only
        for key, label in (("accuracy", "accuracy"), ("macro_f1", "macro-F1"),
                           ("macro_recall", "AvgRec")):  # fmt: skip
            out.append(
                (key, label, HIGHER, lambda r, k=key: (r.get("accuracy") or {}).get(k), False)
            )
    return out


def _ratio(new: float | None, old: float | None) -> float | None:
    return None if new is None or not old else new / old


def compare_pair(
    new_rounds: Sequence[dict[str, Any]],
    old_rounds: Sequence[dict[str, Any]],
    threads: Sequence[int],
    timed: bool,
    labelled: bool,
) -> list[dict[str, Any]]:
    """One row per metric: value (new), baseline (old), ratio new / old and which way is
    better; rounds pair up by their index (round k of both files ran in the same pass)."""
    med = statistics.median
    rows = []
    for key, label, better, figure, per_round in _metrics(threads, timed, labelled):
        if per_round:
            pairs = [(figure(a), figure(b)) for a, b in zip(new_rounds, old_rounds, strict=True)]
            pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
            if not pairs:
                continue
            value, base = med(a for a, _ in pairs), med(b for _, b in pairs)
            ratios = [x for x in (_ratio(a, b) for a, b in pairs) if x is not None]
            ratio = med(ratios) if ratios else None
        else:
            value, base = figure(new_rounds[0]), figure(old_rounds[0])
            if value is None or base is None:
                continue
            ratio = _ratio(value, base)
        row = {"metric": key, "label": label, "better": better, "value": value,
               "baseline": base, "ratio": ratio}  # fmt: skip
        if key in ACCURACY_KEYS:  # targets are written in points (issue 18: "within 1 pt")
            row["difference_points"] = (value - base) * 100
        rows.append(row)
    return rows
