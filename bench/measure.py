"""One model file, measured in a process of its own: `node bench` starts
``python -m bench.measure SPEC.json RESULT.json`` per variant, so every variant's
RSS starts from the same clean interpreter and no allocator state carries over.

Order inside the process: load, first call, batch-1 latency, saturation throughput at the
latency's thread count (RSS peak read here: one interpreter, the node's batching), then
the other thread counts, then accuracy (which batches wider than a node does).
"""

from __future__ import annotations

import gc
import json
import random
import resource
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from bench.runners import Runner, open_runner, runtime_version
from bench.settings import BenchSettings
from bench.tweets import BenchTweets
from common.stats import percentile
from edgemodel.inference import EmptyTextError, Encoded
from node.batcher import bucket_by_length

Progress = Callable[[str], None]


@dataclass
class MeasureSpec:
    name: str  # how the report calls it: "int8", "onnx-int8", ...
    runtime: str  # bench.runners.LITERT or ONNXRUNTIME
    bundle_root: str
    model_file: str
    tweets_file: str  # BenchTweets as JSON
    latency_threads: int
    threads: list[int] = field(default_factory=lambda: [1])
    eval_threads: int = 1
    latency_samples: int = BenchSettings.latency_samples
    warmup_calls: int = 10
    saturation_tweets: int = BenchSettings.saturation_tweets
    saturation_repeats: int = BenchSettings.repeats
    max_batch: int = BenchSettings.max_batch
    max_batch_tokens: int = BenchSettings.max_batch_tokens
    eval_batch: int = 32  # trainer evaluate's batch: the same logits, the same accuracy
    accuracy_only: bool = False
    seed: int = 0


def rss_bytes() -> int:
    return psutil.Process().memory_info().rss


def peak_rss_bytes() -> int:
    # ru_maxrss: the kernel's high-water mark for this process, in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def encode_all(
    runner: Runner, texts: Sequence[str], entities: Sequence[str | None]
) -> list[Encoded | None]:
    """Encodings, ``None`` where the node would answer with an error record (unreadable)."""
    out: list[Encoded | None] = []
    for text, entity in zip(texts, entities, strict=True):
        try:
            out.append(runner.encode(text, entity))
        except EmptyTextError:
            out.append(None)
    return out


def latency_ms(runner: Runner, inputs: Sequence[Encoded], samples: int, warmup: int) -> list[float]:
    """Batch-1 model-call times on a seeded sample of tweets, after ``warmup`` calls."""
    rng = random.Random(1)
    picked = [inputs[rng.randrange(len(inputs))] for _ in range(samples)]
    for e in picked[:warmup]:
        runner.predict_logits([e])
    took = []
    for e in picked:
        start = time.perf_counter()
        runner.predict_logits([e])
        took.append((time.perf_counter() - start) * 1e3)
    return took


def saturation_throughput(
    runner: Runner,
    inputs: Sequence[Encoded],
    n: int,
    max_batch: int,
    max_tokens: int | None,
    seed: int = 0,
) -> float:
    """Tweets/s of the model call alone on a backlog: ``n`` random pre-tokenized tweets in
    chunks of ``max_batch``, split by length like the node's batcher does
    (``max_tokens=None``: each chunk padded to its longest tweet)."""
    rng = random.Random(seed)
    sample = [inputs[rng.randrange(len(inputs))] for _ in range(n)]
    calls: list[list[Encoded]] = []
    for i in range(0, n, max_batch):
        chunk = sample[i : i + max_batch]
        calls.extend(bucket_by_length(chunk, len, max_tokens) if max_tokens else [chunk])
    for call in calls[:3]:
        runner.predict_logits(call)  # warm-up
    start = time.perf_counter()
    for call in calls:
        runner.predict_logits(call)
    return n / (time.perf_counter() - start)


def percentiles(values: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99 as the node's telemetry computes them (common/stats.py), and the mean."""
    if not values:
        raise ValueError("no latency samples")
    cuts = {f"p{q}_ms": float(percentile(values, q) or 0.0) for q in (50, 95, 99)}
    return cuts | {"mean_ms": float(np.mean(values))}


def accuracy_report(
    runner: Runner, encoded: Sequence[Encoded | None], labels: Sequence[str], batch: int
) -> dict[str, Any]:
    """Accuracy, macro-F1, AvgRec as `trainer evaluate` computes them: the same
    length-sorted batches and the same metric code (both plain numpy, no TensorFlow)."""
    from edgemodel import metrics
    from edgemodel.batching import predict_in_length_order

    readable = [i for i, e in enumerate(encoded) if e is not None]
    inputs = [e for e in encoded if e is not None]
    logits = predict_in_length_order(runner.predict_logits, inputs, batch, len(runner.labels))
    predicted: list[str | None] = [None] * len(encoded)
    for row, i in enumerate(readable):
        predicted[i] = runner.labels[int(logits[row].argmax())]
    report = metrics.classification_report(list(labels), predicted, runner.labels)
    report["unreadable"] = len(encoded) - len(readable)
    report["predictions"] = predicted
    return report


def measure(spec: MeasureSpec, progress: Progress = lambda _: None) -> dict[str, Any]:
    tweets = BenchTweets.from_json(json.loads(Path(spec.tweets_file).read_text("utf-8")))
    model_path = Path(spec.bundle_root) / spec.model_file
    result: dict[str, Any] = {
        "name": spec.name,
        "runtime": spec.runtime,
        "runtime_version": runtime_version(spec.runtime),
        "file": spec.model_file,
        "size_bytes": model_path.stat().st_size,
        "rss_before_load_mib": rss_bytes() / 2**20,
    }

    def reopen(threads: int) -> Runner:
        return open_runner(spec.runtime, Path(spec.bundle_root), spec.model_file, threads)

    start = time.perf_counter()
    runner = reopen(spec.latency_threads)
    result["load_s"] = time.perf_counter() - start
    result["rss_idle_mib"] = rss_bytes() / 2**20
    encoded = encode_all(runner, tweets.texts, tweets.entities)
    inputs = [e for e in encoded if e is not None]
    if not inputs:
        raise ValueError("none of the tweets is readable by this model's tokenizer")

    if not spec.accuracy_only:
        start = time.perf_counter()
        runner.predict_logits([inputs[0]])
        result["first_call_ms"] = (time.perf_counter() - start) * 1e3
        progress(f"{spec.name}: latency, {spec.latency_samples} tweets at batch 1")
        took = latency_ms(runner, inputs, spec.latency_samples, spec.warmup_calls)
        result["latency"] = {
            "threads": spec.latency_threads,
            "samples_ms": took,
            **percentiles(took),
        }
        throughput: dict[str, Any] = {}
        others = [t for t in spec.threads if t != spec.latency_threads]
        for threads in [spec.latency_threads, *others]:
            if threads != spec.latency_threads:
                del runner  # one interpreter at a time
                gc.collect()
                runner = reopen(threads)
            progress(f"{spec.name}: saturation throughput, {threads} thread(s)")
            runs = [
                saturation_throughput(
                    runner, inputs, spec.saturation_tweets, spec.max_batch,
                    spec.max_batch_tokens, seed=spec.seed + r,
                )
                for r in range(spec.saturation_repeats)
            ]  # fmt: skip
            throughput[str(threads)] = {"runs": runs, "median": float(np.median(runs))}
            if threads == spec.latency_threads:
                result["rss_peak_mib"] = peak_rss_bytes() / 2**20
        result["throughput_tweets_per_s"] = {
            k: throughput[k] for k in sorted(throughput, key=int) if int(k) in spec.threads
        }
        result["throughput_settings"] = {
            "tweets": spec.saturation_tweets,
            "repeats": spec.saturation_repeats,
            "max_batch": spec.max_batch,
            "max_batch_tokens": spec.max_batch_tokens,
        }
    if tweets.labels is not None:
        progress(f"{spec.name}: accuracy on {len(tweets)} labelled tweets")
        del runner
        gc.collect()
        runner = reopen(spec.eval_threads)
        result["accuracy"] = accuracy_report(runner, encoded, tweets.labels, spec.eval_batch)
    return result


def main(argv: list[str]) -> int:
    """``python -m bench.measure SPEC.json RESULT.json``; progress on stderr."""
    spec = MeasureSpec(**json.loads(Path(argv[0]).read_text(encoding="utf-8")))

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    result = measure(spec, progress)
    Path(argv[1]).write_text(json.dumps(result), encoding="utf-8")
    return 0


def spec_json(spec: MeasureSpec) -> str:
    return json.dumps(asdict(spec))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
