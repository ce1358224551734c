"""`node bench`: the paper's table for one model on this device, in one command.

For every model file it finds (the bundle's FlatBuffer variants, and any ``*.onnx`` peer
exports beside them) it measures size, load time, RSS, batch-1 latency, saturation
throughput per thread count and, with labelled data, accuracy / macro-F1 / AvgRec;
each file in a subprocess of its own (:mod:`bench.measure`). With ``broker`` it adds
the end-to-end row through a real MQTT broker (:mod:`bench.mqtt`). It writes
report.json, report.md and PNG plots into the output folder. No TensorFlow is imported.
With a ``baseline`` bundle, every file of it and of each ``model`` bundle is measured in
the same alternating rounds and compared side by side (:mod:`bench.sidebyside`).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.device import device_info
from bench.measure import MeasureSpec, measure, spec_json
from bench.runners import LITERT, ONNXRUNTIME
from bench.settings import BenchSettings
from bench.sidebyside import bundle_labels
from bench.tweets import BenchTweets
from edgemodel.bundle import VARIANT_FILES, BundleError, ModelBundle, write_json_atomic

REPORT_FORMAT = "repedge-bench/1"
# Table order: the reference first, then smaller and smaller.
VARIANT_ORDER = ("fp32", "fp16", "int8", "int8-full", "int4")
ONNX_PREFIX = "onnx-"  # onnx-fp32.onnx is the peer of fp32, onnx-int8.onnx of int8
Progress = Callable[[str], None]


class BenchError(RuntimeError):
    """A model file could not be measured (the message says why)."""


@dataclass(frozen=True)
class Target:
    name: str  # unique in the report: "int8"; side by side "3.0.0/int8"
    runtime: str
    file: str
    root: Path  # the bundle folder the file is in
    variant: str = ""  # the name within its bundle ("int8", "onnx-int8")
    bundle: str | None = None  # side by side: the bundle's label (bench/sidebyside.py)


@dataclass
class BenchOptions:
    threads: list[int]
    latency_threads: int
    eval_threads: int
    latency_samples: int = BenchSettings.latency_samples
    saturation_tweets: int = BenchSettings.saturation_tweets
    saturation_repeats: int = BenchSettings.repeats
    rounds: int = BenchSettings.rounds
    max_batch: int = BenchSettings.max_batch
    max_batch_tokens: int = BenchSettings.max_batch_tokens
    accuracy_only: bool = False
    in_process: bool = False
    variants: list[str] | None = None
    settings: dict[str, Any] = field(default_factory=dict)


def discover(model: Path, only: list[str] | None = None) -> tuple[ModelBundle, list[Target]]:
    """The bundle and the model files to measure: a folder gives every variant whose file is
    there plus every ``*.onnx`` file; a file gives that file only."""
    model = Path(model)
    if model.suffix == ".onnx":
        bundle = ModelBundle.load(model.parent, verify=False)
        name = _onnx_name(model)
        targets = [Target(name, ONNXRUNTIME, model.name, bundle.root, name)]
    else:
        bundle = ModelBundle.load(model, verify=False)
        if model.is_file():
            variants = [bundle.variant]
        else:
            present = [
                v for v, i in bundle.manifest.variants.items() if (bundle.root / i.file).is_file()
            ]
            rank = {v: i for i, v in enumerate(VARIANT_ORDER)}
            variants = sorted(present, key=lambda v: rank.get(v, len(rank)))
        targets = [
            Target(v, LITERT, bundle.manifest.variants[v].file, bundle.root, v) for v in variants
        ]
        if model.is_dir():
            targets += [
                Target(_onnx_name(p), ONNXRUNTIME, p.name, bundle.root, _onnx_name(p))
                for p in sorted(model.glob("*.onnx"))
            ]
    if only:
        unknown = sorted(set(only) - {t.name for t in targets})
        if unknown:
            raise BundleError(
                f"no model file for {unknown} in {model}; found {[t.name for t in targets]}"
            )
        targets = [t for t in targets if t.name in only]
    if not targets:
        raise BundleError(f"{model}: no model file to measure")
    return bundle, targets


def _onnx_name(path: Path) -> str:
    stem = path.stem
    return stem if stem.startswith(ONNX_PREFIX) else f"{ONNX_PREFIX}{stem}"


def peer_of(name: str) -> str | None:
    """The LiteRT variant an ONNX file is the peer of (onnx-int8 -> int8)."""
    if not name.startswith(ONNX_PREFIX):
        return None
    base = name[len(ONNX_PREFIX) :]
    return base if base in VARIANT_FILES else None


def _run_worker(spec: MeasureSpec, work: Path, progress: Progress) -> dict[str, Any]:
    """Measure in a fresh interpreter process; its progress lines are passed on."""
    stem = spec.name.replace("/", "__")  # side by side names hold a slash: "2.0.0/int8"
    spec_path, result_path = work / f"{stem}.spec.json", work / f"{stem}.result.json"
    spec_path.write_text(spec_json(spec), encoding="utf-8")
    cmd = [sys.executable, "-m", "bench.measure", str(spec_path), str(result_path)]
    repo = str(Path(__file__).resolve().parents[1])
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")]))
    )
    with subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env) as proc:
        assert proc.stderr is not None
        tail: list[str] = []
        for line in proc.stderr:
            line = line.rstrip()
            tail = [*tail[-20:], line]
            # The runtimes' own chatter ("Created TensorFlow Lite XNNPACK delegate") stays out.
            if line.startswith(f"{spec.name}: "):
                progress(line)
    if proc.returncode != 0:
        # The worker's last line is its exception ("ValueError: none of the tweets ...").
        last = next((line for line in reversed(tail) if line.strip()), "no output")
        raise BenchError(f"measuring {spec.name} failed: {last}")
    return json.loads(result_path.read_text(encoding="utf-8"))


def _merge_rounds(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One row from several rounds: medians of the timings, all latency samples kept."""
    if len(rounds) == 1:
        return rounds[0]
    first = dict(rounds[0])
    med = statistics.median
    for key in ("load_s", "first_call_ms", "rss_idle_mib", "rss_peak_mib"):
        if key in first:
            first[key] = med(r[key] for r in rounds)
    if "latency" in first:
        samples = [s for r in rounds for s in r["latency"]["samples_ms"]]
        from bench.measure import percentiles

        first["latency"] = {**first["latency"], "samples_ms": samples, **percentiles(samples)}
        first["latency"]["rounds_p50_ms"] = [r["latency"]["p50_ms"] for r in rounds]
        first["throughput_tweets_per_s"] = {
            t: {
                "runs": [x for r in rounds for x in r["throughput_tweets_per_s"][t]["runs"]],
                "median": med(r["throughput_tweets_per_s"][t]["median"] for r in rounds),
            }
            for t in first["throughput_tweets_per_s"]
        }
    first["rounds"] = len(rounds)
    return first


def peer_ratios(rows: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """LiteRT vs ONNX Runtime for each pair of the same weights: speed-ups (>1: LiteRT is
    faster) for batch-1 latency and for throughput at each thread count."""
    out = []
    for name, onnx in rows.items():
        base = peer_of(name)
        if base is None or base not in rows or "latency" not in onnx:
            continue
        lite = rows[base]
        pair: dict[str, Any] = {"litert": base, "onnxruntime": name}
        for q in ("p50_ms", "p95_ms", "p99_ms"):
            pair[f"latency_{q[:3]}_speedup"] = onnx["latency"][q] / lite["latency"][q]
        pair["throughput_speedup"] = {
            t: lite["throughput_tweets_per_s"][t]["median"]
            / onnx["throughput_tweets_per_s"][t]["median"]
            for t in lite["throughput_tweets_per_s"]
            if t in onnx["throughput_tweets_per_s"]
        }
        if lite.get("accuracy") and onnx.get("accuracy"):
            a, b = lite["accuracy"]["predictions"], onnx["accuracy"]["predictions"]
            pair["label_agreement"] = sum(x == y for x, y in zip(a, b, strict=True)) / len(a)
        out.append(pair)
    return out


def discover_all(
    paths: Sequence[Path], only: list[str] | None
) -> list[tuple[ModelBundle, list[Target]]]:
    """Each bundle and its targets; with several bundles a --variants name needs to be in one
    of them only (2.0.0 may hold int8 alone, 3.0.0 int4), but every bundle keeps a file."""
    if len(paths) == 1:
        return [discover(paths[0], only)]
    found = [discover(p) for p in paths]
    if not only:
        return found
    unknown = sorted(set(only) - {t.variant for _, ts in found for t in ts})
    if unknown:
        raise BundleError(f"no model file for {unknown} in any of {[str(p) for p in paths]}")
    kept = [(b, [t for t in ts if t.variant in only]) for b, ts in found]
    for path, (_, ts) in zip(paths, kept, strict=True):
        if not ts:
            raise BundleError(f"{path}: none of {only} is there")
    return kept


def _model_info(path: Path, bundle: ModelBundle) -> dict[str, Any]:
    return {
        "path": str(path),
        "name": bundle.manifest.name,
        "version": bundle.manifest.version,
        "base_model": bundle.manifest.base_model,
        "created": bundle.manifest.created,
        "labels": bundle.labels,
    }


def _side_by_side(
    found: list[tuple[ModelBundle, list[Target]]],
    rows: dict[str, list[dict[str, Any]]],
    options: BenchOptions,
    labelled: bool,
) -> dict[str, Any]:
    """Each target of a --model bundle against its match in the baseline (found[0])."""
    from bench.sidebyside import compare_pair, match_in_baseline

    base_bundle, base_targets = found[0]
    by_variant = {t.variant: t for t in base_targets}
    pairs = []
    for _, targets in found[1:]:
        for t in targets:
            match = match_in_baseline(
                t.variant, t.runtime, [(b.variant, b.runtime) for b in base_targets],
                base_bundle.variant,
            )  # fmt: skip
            if match is None:
                continue
            old = by_variant[match].name
            metrics = compare_pair(
                rows[t.name], rows[old], options.threads, not options.accuracy_only, labelled
            )
            pairs.append({"target": t.name, "baseline": old, "metrics": metrics})
    return {"baseline": base_targets[0].bundle, "pairs": pairs}


def _broker_side_by_side(brokers: dict[str, dict[str, Any]], baseline: str) -> list[dict]:
    """The end-to-end row of each --model bundle against the baseline's (one after the other,
    not alternating: ratios of medians)."""
    old = brokers[baseline]
    figures = (
        ("e2e_saturation_tweets_per_s", "end-to-end at saturation (tweets/s)", "higher",
         lambda b: b["e2e_saturation_tweets_per_s"]["median"]),
        ("fixed_rate_p99_ms", "publish-to-label p99 at the fixed rate (ms)", "lower",
         lambda b: b["fixed_rate"]["p99_ms"]),
        ("node_peak_rss_mib", "node RSS peak (MiB)", "lower", lambda b: b["node_peak_rss_mib"]),
    )  # fmt: skip
    out = []
    for label, new in brokers.items():
        if label == baseline:
            continue
        metrics = []
        for key, text, better, figure in figures:
            value, base = figure(new), figure(old)
            ratio = value / base if base else None
            metrics.append({"metric": key, "label": text, "better": better, "value": value,
                            "baseline": base, "ratio": ratio})  # fmt: skip
        out.append({"target": label, "baseline": baseline, "metrics": metrics})
    return out


def run_bench(
    model: Path | Sequence[Path],
    tweets: BenchTweets,
    options: BenchOptions,
    out_dir: Path,
    broker: dict[str, Any] | None = None,
    progress: Progress = lambda _: None,
    baseline: Path | None = None,
) -> dict[str, Any]:
    """Measure, write report.json / report.md / plots into ``out_dir``; the report.

    ``model`` may be several bundles; with ``baseline`` every file of every bundle is
    measured in the same run and each --model file is compared with its match in the
    baseline (bench/sidebyside.py)."""
    from bench.plots import write_plots
    from bench.report import render_markdown

    models = [Path(model)] if isinstance(model, str | Path) else [Path(m) for m in model]
    if len(models) > 1 and baseline is None:
        raise BenchError("several --model bundles need a --baseline to be compared with")
    paths = ([Path(baseline)] if baseline is not None else []) + models
    found = discover_all(paths, options.variants)
    side = baseline is not None
    labels = bundle_labels([b.manifest.version for b, _ in found]) if side else [None]
    if side:
        found = [
            (b, [replace(t, name=f"{label}/{t.variant}", bundle=label) for t in ts])
            for label, (b, ts) in zip(labels, found, strict=True)
        ]
    targets = [t for _, ts in found for t in ts]
    out_dir.mkdir(parents=True, exist_ok=True)
    for b, ts in found:
        progress(
            f"{b.manifest.name} {b.manifest.version}: {', '.join(t.name for t in ts)}"
            f"; {len(tweets)} tweets ({tweets.source})"
        )
    rows: dict[str, list[dict[str, Any]]] = {t.name: [] for t in targets}
    with tempfile.TemporaryDirectory(prefix="repedge-bench-") as tmp:
        work = Path(tmp)
        tweets_file = work / "tweets.json"
        tweets_file.write_text(json.dumps(tweets.to_json()), encoding="utf-8")
        base = MeasureSpec(
            name="", runtime=LITERT, bundle_root="", model_file="",
            tweets_file=str(tweets_file), latency_threads=options.latency_threads,
            threads=options.threads, eval_threads=options.eval_threads,
            latency_samples=options.latency_samples,
            saturation_tweets=options.saturation_tweets,
            saturation_repeats=options.saturation_repeats, max_batch=options.max_batch,
            max_batch_tokens=options.max_batch_tokens, accuracy_only=options.accuracy_only,
        )  # fmt: skip
        for r in range(options.rounds):
            # Rounds alternate over the files, of every bundle, so drifting load on the device
            # hits all alike; every other round runs them in reverse (A B, B A, ...), so that
            # being first or last in a round favours none. Accuracy does not change between
            # rounds: first round only.
            for k, t in enumerate(targets if r % 2 == 0 else targets[::-1], 1):
                progress(f"[{r + 1}/{options.rounds}] {k}/{len(targets)} {t.name} ({t.runtime})")
                spec = replace(
                    base, name=t.name, runtime=t.runtime, bundle_root=str(t.root),
                    model_file=t.file,
                )  # fmt: skip
                if r > 0:
                    tweets_plain = work / "tweets_unlabelled.json"
                    if not tweets_plain.exists():
                        plain = replace(tweets, labels=None)
                        tweets_plain.write_text(json.dumps(plain.to_json()), encoding="utf-8")
                    spec = replace(spec, tweets_file=str(tweets_plain))
                if options.in_process:
                    rows[t.name].append(measure(spec, progress))
                else:
                    rows[t.name].append(_run_worker(spec, work, progress))
    variants = {name: _merge_rounds(r) for name, r in rows.items()}
    for name, r in variants.items():
        if len(rows[name]) > 1 and "accuracy" in rows[name][0]:
            r["accuracy"] = rows[name][0]["accuracy"]
    peers = []
    for _, ts in found:  # LiteRT vs ONNX Runtime within each bundle
        names = {t.variant: t.name for t in ts}
        for p in peer_ratios({t.variant: variants[t.name] for t in ts}):
            peers.append(
                {**p, "litert": names[p["litert"]], "onnxruntime": names[p["onnxruntime"]]}
            )

    first_model = found[1] if side else found[0]
    report: dict[str, Any] = {
        "format": REPORT_FORMAT,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": _model_info(models[0], first_model[0]),
        "device": device_info(),
        "tweets": {
            "source": tweets.source,
            "count": len(tweets),
            "labelled": tweets.labels is not None,
        },
        "settings": {
            "threads": options.threads,
            "latency_threads": options.latency_threads,
            "eval_threads": options.eval_threads,
            "latency_samples": options.latency_samples,
            "saturation_tweets": options.saturation_tweets,
            "saturation_repeats": options.saturation_repeats,
            "rounds": options.rounds,
            "max_batch": options.max_batch,
            "max_batch_tokens": options.max_batch_tokens,
            "accuracy_only": options.accuracy_only,
            "isolated_processes": not options.in_process,
            **options.settings,
        },
        "variants": variants,
        "peers": peers,
        "notes": [],
    }
    if side:
        for t in targets:
            variants[t.name].update(bundle=t.bundle, variant=t.variant)
        report["models"] = [
            {"label": label, "role": "baseline" if i == 0 else "model", **_model_info(p, b)}
            for i, (label, p, (b, _)) in enumerate(zip(labels, paths, found, strict=True))
        ]
        report["comparison"] = _side_by_side(found, rows, options, tweets.labels is not None)
    for row in variants.values():
        # Per-tweet labels served the peer comparison; the report keeps the scores only.
        (row.get("accuracy") or {}).pop("predictions", None)
    if options.in_process:
        report["notes"].append(
            "measured in one process (--in-process): RSS figures include earlier variants"
        )
    if broker is not None:
        from bench.mqtt import BrokerBenchConfig, run_broker_bench

        brokers = {}
        # The --model bundle first, so that a single-bundle report's "broker" stays its own.
        order = [*range(1, len(paths)), 0] if side else [0]
        for i in order:
            path = paths[i] if paths[i].suffix != ".onnx" else found[i][0].root
            cfg = BrokerBenchConfig(model=path, **broker)
            progress(f"broker: {labels[i] or 'end-to-end'} through {cfg.broker}")
            brokers[labels[i]] = run_broker_bench(cfg, tweets, progress)
        report["broker"] = brokers[labels[order[0]]]
        if side:
            report["brokers"] = brokers
            report["broker_comparison"] = _broker_side_by_side(brokers, labels[0])
    plots, note = write_plots(report, out_dir)
    report["plots"] = plots
    if note:
        report["notes"].append(note)
    write_json_atomic(out_dir / "report.json", report)
    (out_dir / "report.md").write_text(render_markdown(report), encoding="utf-8")
    progress(f"wrote {out_dir / 'report.md'}, report.json and {len(plots)} plot(s)")
    return report
