"""What `node start --metrics-port` costs the node: memory, per-batch updates, scrapes.

Measures, with medians over --repeats, in fresh subprocesses where memory is concerned:

* RSS added to a process that has loaded the node (paho, psutil, the interpreter) by
  importing prometheus_client, building the registry and starting the /metrics server
  (the node imports it only when --metrics-port is given);
* ``NodeMetrics.observe_batch`` for a batch of --batch labelled tweets, per tweet, alone
  and with the label parsed back out of each record as the node's on_batch hook does;
* ``NodeMetrics.render()`` (one scrape's work) and the size of the exposition.

Run:  python benchmarks/metrics_overhead.py [--repeats 7] [--out metrics_overhead.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

_RSS_PROBE = """
import psutil, sys
sys.path.insert(0, {repo!r})
import node.service, edgemodel.inference  # what the serving process has loaded anyway
p = psutil.Process()
before = p.memory_info().rss
from node.metrics import NodeMetrics
m = NodeMetrics("probe", queue_depth=lambda: 0, connected=lambda: True)
server = m.serve(0)
m.render()
print(p.memory_info().rss - before)
server.close()
"""


def rss_added(repeats: int) -> float:
    """MiB of RSS the metrics add to a node process; median over fresh processes."""
    deltas = [
        int(
            subprocess.run(
                [sys.executable, "-c", _RSS_PROBE.format(repo=str(REPO))],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        )
        for _ in range(repeats)
    ]
    return statistics.median(deltas) / 2**20


def timed(fn, number: int) -> float:
    start = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - start) / number


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    from node.metrics import NodeMetrics

    metrics = NodeMetrics("bench", queue_depth=lambda: 3, connected=lambda: True)
    metrics.set_model({"name": "m", "version": "1", "variant": "int8", "sha256": "0" * 64})
    labels = ["negative", "neutral", "positive"] * (args.batch // 3 + 1)
    labels = labels[: args.batch]
    latencies = [0.004 + 0.001 * i for i in range(args.batch)]

    def batch() -> None:
        metrics.observe_batch(labels, [], 0, latencies, batch_size=args.batch)

    # What the node's on_batch hook adds: reading each label back out of its record.
    record = {
        "id": "1234567890",
        "label": "positive",
        "scores": {"negative": 0.01, "neutral": 0.04, "positive": 0.95},
        "model": {"name": "repedge-polarity", "version": "1.1.0", "variant": "int8",
                  "sha256": "0" * 64},
        "node_id": "pi-1",
        "latency_ms": 4.2,
        "timestamp": "2026-11-29T06:00:00.000Z",
        "entity": "BMW",
    }  # fmt: skip
    payloads = [json.dumps(record)] * args.batch

    def hook() -> None:
        metrics.observe_batch(
            (json.loads(p)["label"] for p in payloads), [], 0, latencies, batch_size=args.batch
        )

    per_tweet_us = statistics.median(
        timed(batch, 200) / args.batch * 1e6 for _ in range(args.repeats)
    )
    hook_per_tweet_us = statistics.median(
        timed(hook, 200) / args.batch * 1e6 for _ in range(args.repeats)
    )
    render_ms = statistics.median(timed(metrics.render, 50) * 1e3 for _ in range(args.repeats))
    result = {
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
        "python": platform.python_version(),
        "batch": args.batch,
        "rss_added_mib": round(rss_added(args.repeats), 2),
        "observe_per_tweet_us": round(per_tweet_us, 2),
        "hook_per_tweet_us": round(hook_per_tweet_us, 2),
        "render_ms": round(render_ms, 3),
        "exposition_bytes": len(metrics.render()),
    }
    print(
        f"RSS added: {result['rss_added_mib']} MiB | observe_batch: "
        f"{result['observe_per_tweet_us']} us/tweet (batch {args.batch}), with the label read "
        f"from the record {result['hook_per_tweet_us']} us/tweet | "
        f"scrape: {result['render_ms']} ms, {result['exposition_bytes']} bytes"
    )
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
