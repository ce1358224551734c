"""Batch-1 latency of several bundles, interleaved tweet by tweet (one noisy machine, one run).

Each tweet goes through every model in turn, so a burst of background load hits all of
them alike; the figure to read is each model's median as a ratio to the first's.

    python benchmarks/model_latency_ab.py OLD_BUNDLE NEW_BUNDLE [...] \
        --data ../shared/data/replab2013/automotive_en.tsv --tweets 400
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgemodel.data import read_labeled  # noqa: E402
from edgemodel.inference import Classifier  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--tweets", type=int, default=400)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    tweets = read_labeled(args.data)[: args.tweets]
    clfs = {str(m): Classifier.from_path(m, num_threads=args.threads) for m in args.models}
    encoded = {k: [c.encode(t.text, t.entity) for t in tweets] for k, c in clfs.items()}
    for k, c in clfs.items():  # warm-up: the first calls pack the weights
        for e in encoded[k][:40]:
            c.predict([e])
    times: dict[str, list[float]] = {k: [] for k in clfs}
    for i in range(len(tweets)):
        for k, c in clfs.items():
            started = time.perf_counter()
            c.predict([encoded[k][i]])
            times[k].append((time.perf_counter() - started) * 1000)
    first = statistics.median(times[str(args.models[0])])
    print(f"batch 1, {args.threads} thread(s), {len(tweets)} tweets, interleaved")
    for k, values in times.items():
        values.sort()
        p50 = statistics.median(values)
        p95 = values[int(0.95 * (len(values) - 1))]
        print(f"{k}: p50 {p50:.3f} ms, p95 {p95:.3f} ms, p50 ratio to the first {p50 / first:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
