"""Evaluate every FlatBuffer variant of a bundle through the node's own inference code.

Tweets are cleaned, tokenized and padded by :class:`edgemodel.inference.Classifier`, exactly as
on a node, so a score here is the score the node gets. For each variant the report holds
size, accuracy, macro-F1, AvgRec, per-class metrics, the confusion matrix, agreement with
fp32, batch-1 latency and batched throughput. See docs/evaluation.md.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from edgemodel import metrics
from edgemodel.batching import predict_sorted
from edgemodel.bundle import BundleError, ModelBundle, write_json_atomic
from edgemodel.defaults import evaluation_threads
from edgemodel.inference import Classifier, EmptyTextError, Encoded

REPORT_FORMAT = "repedge-eval/1"
# Table order: the reference first, then smaller and smaller.
_VARIANT_ORDER = ("fp32", "fp16", "int8", "int8-full", "int4")
_WARMUP_CALLS = 5
_SAMPLE_SEED = 0


def evaluate_bundle(
    bundle_path: Path,
    texts: list[str],
    labels: list[str],
    entities: list[str | None] | None = None,
    variants: list[str] | None = None,
    batch_size: int = 32,
    threads: int | None = None,
    latency_samples: int = 100,
    dataset: str = "unnamed",
    with_predictions: bool = False,
) -> dict[str, Any]:
    """Score each variant (default: all in the bundle) on labeled tweets; a JSON-ready dict.

    ``labels`` must use the bundle's class names. Texts the node cannot read
    (:class:`EmptyTextError`) count as wrong predictions and are reported as ``unreadable``.
    ``with_predictions`` adds each variant's class index per text (-1: unreadable) under
    ``"predictions"``, to compare models across bundles.
    """
    if len(texts) != len(labels) or (entities is not None and len(entities) != len(texts)):
        raise ValueError("texts, labels and entities must have the same length")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    bundle = ModelBundle.load(bundle_path, verify=False)
    # A .tflite path means that one variant; a folder means all of them.
    default = [bundle.variant] if Path(bundle_path).is_file() else list(bundle.manifest.variants)
    chosen = _order_variants(variants or default)
    _check_inputs(bundle, chosen, labels)
    threads = threads or evaluation_threads()
    entities = entities if entities is not None else [None] * len(texts)

    results: dict[str, dict[str, Any]] = {}
    predictions: dict[str, np.ndarray] = {}
    encoded: list[Encoded | None] | None = None
    encode_ms: list[float] = []
    runtime = ""
    for variant in chosen:
        clf = Classifier.from_path(bundle.root, variant=variant, num_threads=threads)
        if encoded is None:
            # Cleaning and tokenizer belong to the bundle, not the variant: encode once.
            encoded, encode_ms = _encode_all(clf, texts, entities)
            runtime = clf.runtime
        results[variant], predictions[variant] = _evaluate_variant(
            clf, encoded, labels, batch_size, latency_samples
        )
    _add_agreement(results, predictions)

    report = {
        "format": REPORT_FORMAT,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": {
            "name": bundle.manifest.name,
            "version": bundle.manifest.version,
            "base_model": bundle.manifest.base_model,
            "path": str(bundle_path),
            "labels": bundle.labels,
        },
        "dataset": _dataset_info(dataset, labels, encoded or []),
        "machine": machine_info(),
        "runtime": _runtime_info(runtime, threads),
        "settings": {
            "batch_size": batch_size,
            "latency_samples": latency_samples,
            "warmup_calls": _WARMUP_CALLS,
        },
        "encode_ms": _latency_summary(encode_ms),
        "variants": results,
    }
    if with_predictions:
        report["predictions"] = {v: p.tolist() for v, p in predictions.items()}
    return report


def _check_inputs(bundle: ModelBundle, variants: Sequence[str], labels: Sequence[str]) -> None:
    # Fail before minutes of inference, not after the first variant.
    missing = [v for v in variants if v not in bundle.manifest.variants]
    if missing:
        raise BundleError(
            f"bundle has no variant {missing}; it has {sorted(bundle.manifest.variants)}"
        )
    unknown = sorted(set(labels) - set(bundle.labels))
    if unknown:
        raise ValueError(f"labels {unknown} are not classes of the model {bundle.labels}")


def _order_variants(variants: Sequence[str]) -> list[str]:
    if not variants:
        raise ValueError("no variant to evaluate")
    rank = {v: i for i, v in enumerate(_VARIANT_ORDER)}
    return sorted(dict.fromkeys(variants), key=lambda v: rank.get(v, len(rank)))


def _encode_all(
    clf: Classifier, texts: Sequence[str], entities: Sequence[str | None]
) -> tuple[list[Encoded | None], list[float]]:
    """Encodings (``None`` where unreadable) and the time each took, in ms."""
    encoded: list[Encoded | None] = []
    took: list[float] = []
    for text, entity in zip(texts, entities, strict=True):
        start = time.perf_counter()
        try:
            encoded.append(clf.encode(text, entity))
        except EmptyTextError:
            encoded.append(None)
        took.append((time.perf_counter() - start) * 1e3)
    return encoded, took


def _evaluate_variant(
    clf: Classifier,
    encoded: list[Encoded | None],
    y_true: list[str],
    batch_size: int,
    latency_samples: int,
) -> tuple[dict[str, Any], np.ndarray]:
    """One variant's report entry, and its argmax per text (-1 where unreadable)."""
    readable = [i for i, e in enumerate(encoded) if e is not None]
    inputs = [encoded[i] for i in readable]
    latency = _measure_latency(clf, inputs, latency_samples)  # warms up the interpreter too
    start = time.perf_counter()
    logits = predict_sorted(clf, inputs, batch_size)
    seconds = time.perf_counter() - start

    argmax = np.full(len(encoded), -1, np.int64)
    argmax[readable] = logits.argmax(axis=1)
    y_pred = [clf.labels[k] if k >= 0 else None for k in argmax]
    info = clf.bundle.manifest.variants[clf.bundle.variant]
    size = clf.bundle.model_path.stat().st_size
    entry = {
        "file": info.file,
        "quantization": info.quantization,
        "sha256": info.sha256,
        "size_bytes": size,
        "size_mb": size / 1e6,
        "unreadable": len(encoded) - len(readable),
        **metrics.classification_report(y_true, y_pred, clf.labels),
        "agreement_vs_fp32": None,
        "latency": latency,
        "throughput": {
            "batch_size": batch_size,
            "tweets": len(inputs),
            "seconds": seconds,
            "tweets_per_s": len(inputs) / seconds if inputs and seconds > 0 else None,
        },
    }
    return entry, argmax


def _measure_latency(clf: Classifier, inputs: Sequence[Encoded], samples: int) -> dict[str, Any]:
    """Batch-1 model latency on a fixed, seeded sample of the readable tweets."""
    picked = _fixed_sample(len(inputs), samples)
    if not picked:
        return _latency_summary([])
    for i in picked[:_WARMUP_CALLS]:
        clf.predict_logits([inputs[i]])
    took = []
    for i in picked:
        start = time.perf_counter()
        clf.predict_logits([inputs[i]])
        took.append((time.perf_counter() - start) * 1e3)
    return _latency_summary(took)


def _fixed_sample(n: int, k: int) -> list[int]:
    # Seeded, so every variant (and every run on the same data) times the same tweets.
    if k <= 0 or n == 0:
        return []
    rng = np.random.default_rng(_SAMPLE_SEED)
    return sorted(rng.choice(n, size=min(k, n), replace=False).tolist())


def _latency_summary(ms: Sequence[float]) -> dict[str, Any]:
    if not ms:
        return {"samples": 0, "p50_ms": None, "p95_ms": None, "mean_ms": None}
    values = np.asarray(ms, np.float64)
    return {
        "samples": len(values),
        "p50_ms": float(np.percentile(values, 50)),
        "p95_ms": float(np.percentile(values, 95)),
        "mean_ms": float(values.mean()),
    }


def _add_agreement(results: dict[str, dict[str, Any]], predictions: dict[str, np.ndarray]) -> None:
    """Fraction of readable tweets where a variant's argmax equals fp32's."""
    reference = predictions.get("fp32")
    if reference is None:
        return
    readable = reference >= 0
    for variant, argmax in predictions.items():
        same = argmax[readable] == reference[readable]
        results[variant]["agreement_vs_fp32"] = float(same.mean()) if same.size else None


def _dataset_info(name: str, labels: Sequence[str], encoded: Sequence[Encoded | None]) -> dict:
    values, counts = np.unique(np.asarray(labels, dtype=object), return_counts=True)
    lengths = [len(e) for e in encoded if e is not None]
    return {
        "name": name,
        "size": len(labels),
        "label_counts": {str(v): int(c) for v, c in zip(values, counts, strict=True)},
        "unreadable": sum(e is None for e in encoded),
        "mean_tokens": float(np.mean(lengths)) if lengths else None,
    }


def _cpu_model() -> str | None:
    # platform.processor() is often empty or just "x86_64" on Linux; cpuinfo names the chip.
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def machine_info() -> dict[str, Any]:
    uname = platform.uname()
    return {
        "processor": _cpu_model() or platform.processor() or uname.machine,
        "machine": uname.machine,
        "system": f"{uname.system} {uname.release}",
        "node": uname.node,
        "cpu_count": os.cpu_count(),
        # What this process may use (containers and taskset can allow fewer).
        "cpus_available": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else None,
        "python": platform.python_version(),
    }


def _runtime_info(name: str, threads: int) -> dict[str, Any]:
    try:
        version = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        version = None
    return {"name": name, "version": version, "threads": threads}


def manifest_metrics(report: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers per variant, small enough for ``update_manifest(metrics=...)``."""
    keys = ("accuracy", "macro_f1", "macro_recall", "f1_pn", "agreement_vs_fp32")
    return {
        "dataset": report["dataset"]["name"],
        "n": report["dataset"]["size"],
        "date": report["date"],
        "variants": {v: {k: r[k] for k in keys if k in r} for v, r in report["variants"].items()},
    }


# ---- rendering ------------------------------------------------------------------------


def _num(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _summary_rows(report: dict[str, Any]) -> list[list[str]]:
    rows = []
    for variant, r in report["variants"].items():
        tput = r["throughput"]["tweets_per_s"]
        rows.append(
            [
                variant,
                _num(r["size_mb"], 2),
                _num(r["accuracy"]),
                _num(r["macro_f1"]),
                _num(r["macro_recall"]),
                _num(r["agreement_vs_fp32"]),
                _num(r["latency"]["p50_ms"], 2),
                _num(r["latency"]["p95_ms"], 2),
                _num(tput, 1),
            ]
        )
    return rows


def _per_class_lines(r: dict[str, Any]) -> list[str]:
    rows = [
        [label, _num(m["precision"]), _num(m["recall"]), _num(m["f1"]), str(m["support"])]
        for label, m in r["per_class"].items()
    ]
    return _table(["class", "precision", "recall", "F1", "support"], rows)


def _confusion_lines(r: dict[str, Any]) -> list[str]:
    cm = r["confusion_matrix"]
    # The unreadable column appears only when there is something to put in it.
    extra = any(cm["unpredicted"])
    header = ["true \\ predicted", *cm["labels"], *(["unreadable"] if extra else [])]
    rows = []
    for label, row, missed in zip(cm["labels"], cm["matrix"], cm["unpredicted"], strict=True):
        rows.append([label, *map(str, row), *([str(missed)] if extra else [])])
    return _table(header, rows)


def render_markdown(report: dict[str, Any]) -> str:
    """One summary table over the variants, then per-class metrics and confusion matrices."""
    model, data, machine, runtime = (
        report["model"],
        report["dataset"],
        report["machine"],
        report["runtime"],
    )
    settings = report["settings"]
    lines = [
        f"# Evaluation: {model['name']} {model['version']} on {data['name']}",
        "",
        f"- date: {report['date']}",
        f"- dataset: {data['name']}, {data['size']} tweets "
        f"({', '.join(f'{k} {v}' for k, v in data['label_counts'].items())}); "
        f"unreadable: {data['unreadable']}",
        f"- machine: {machine['processor']}, {machine['cpu_count']} CPUs, {machine['system']}",
        f"- runtime: {runtime['name']} {runtime['version']}, "
        f"{runtime['threads']} thread{'s' if runtime['threads'] != 1 else ''}",
        f"- latency: batch 1, model call only, {settings['latency_samples']} fixed tweets "
        f"after {settings['warmup_calls']} warm-up calls; tokenization adds "
        f"{_num(report['encode_ms']['p50_ms'], 3)} ms (median)",
        f"- throughput: length-sorted batches of {settings['batch_size']}",
        "",
    ]
    header = [
        "variant",
        "size MB",
        "accuracy",
        "macro-F1",
        "AvgRec",
        "agreement vs fp32",
        "p50 ms",
        "p95 ms",
        "tweets/s",
    ]
    lines += _table(header, _summary_rows(report))
    for variant, r in report["variants"].items():
        lines += ["", f"## {variant}", "", f"{r['quantization']}; {r['size_bytes']} bytes", ""]
        lines += _per_class_lines(r)
        lines += ["", *_confusion_lines(r)]
    return "\n".join(lines) + "\n"


def write_report(report: dict[str, Any], out_dir: Path, stem: str) -> tuple[Path, Path]:
    """Write ``<stem>.json`` and ``<stem>.md`` into ``out_dir``; return both paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    write_json_atomic(json_path, report)
    md_path.write_text(render_markdown(report), encoding="utf-8")
    return json_path, md_path
