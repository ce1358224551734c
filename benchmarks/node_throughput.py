"""The node's end-to-end row alone: a thin wrapper over `node bench --broker local`'s code
(bench/mqtt.py), kept for its JSON and its table of targets.

Measures, with medians over --repeats: the model call alone on backlogs with the node's
batching; the node draining a backlog queued for it in a private Mosquitto, first label to
last; publish-to-label latency at a fixed rate (50/s), p50/p99; the node's RSS.

Run:  python benchmarks/node_throughput.py --model models/BUNDLE [--data tweets.txt]
Targets (2-core x86): end-to-end >= 0.8x bare at saturation, p99 <= 30 ms at 50 tweets/s,
RSS <= 100 MiB. `node bench --broker local` gives the same row inside the full report.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.device import device_info  # noqa: E402
from bench.mqtt import BrokerBenchConfig, run_broker_bench  # noqa: E402
from bench.tweets import plain_tweets, synthetic_tweets  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="bundle folder or .tflite")
    parser.add_argument("--variant", default=None)
    parser.add_argument("--data", type=Path, help="tweets: text lines or JSON lines")
    parser.add_argument("--threads", type=int, default=None, help="default: the node's")
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--max-batch-tokens", type=int, default=256)
    parser.add_argument("--tweets", type=int, default=2000, help="tweets per saturation run")
    parser.add_argument("--rate", type=float, default=50.0, help="offered tweets/s")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of a rate run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "node_throughput.json")
    args = parser.parse_args()
    tweets = plain_tweets(args.data) if args.data else synthetic_tweets(1000)
    cfg = BrokerBenchConfig(
        model=args.model, variant=args.variant, broker="local", threads=args.threads,
        max_batch=args.max_batch, max_batch_tokens=args.max_batch_tokens, tweets=args.tweets,
        rate=args.rate, seconds=args.seconds, repeats=args.repeats,
    )  # fmt: skip
    result = run_broker_bench(cfg, tweets, progress=lambda line: print(line, flush=True))
    result = {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": device_info(),
        "input": tweets.source,
        **result,
    }
    ok, rate = result["meets_targets"], result["fixed_rate"]
    bare = result["bare_tweets_per_s"]["median"]
    e2e = result["e2e_saturation_tweets_per_s"]["median"]
    rows = [
        ("bare predict, node batching (tweets/s)", bare, ""),
        ("end-to-end at saturation (tweets/s)", e2e, ""),
        ("ratio end-to-end / bare", result["saturation_ratio"],
         _mark(ok["saturation_ratio"], ">= 0.8")),
        (f"p50 latency at {args.rate:g}/s (ms)", rate["p50_ms"], ""),
        (f"p99 latency at {args.rate:g}/s (ms)", rate["p99_ms"], _mark(ok["p99_ms"], "<= 30")),
        ("node RSS at start, idle (MiB)", result["node_idle_rss_mib"], ""),
        ("node peak RSS (MiB)", result["node_peak_rss_mib"], _mark(ok["rss_mib"], "<= 100")),
    ]  # fmt: skip
    print(f"\n{'metric (median of ' + str(args.repeats) + ')':40s} {'value':>10s}  target")
    for name, value, mark in rows:
        print(f"{name:40s} {value:>10.2f}  {mark}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"\nwritten {args.out}; logs in {result['logs']}")
    return 0


def _mark(ok: bool, target: str) -> str:
    return f"{'ok' if ok else 'MISSED'} ({target})"


if __name__ == "__main__":
    sys.exit(main())
