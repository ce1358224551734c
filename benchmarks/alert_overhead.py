"""What spike alerts cost a dashboard: CPU per label record, in-process, no broker.

`dashboard serve` and `collect` hand each label record to AlertMonitor.add (on paho's
thread) and run AlertMonitor.tick every 5 s (its own thread). This times both on synthetic
records shaped like a node's (6 entities, scores, related, created_at, timestamp), at
--rate records per simulated second, and gives the share of one core they take at that
rate. Repeated --repeats times; medians.

Run:  python benchmarks/alert_overhead.py [--rate 1000 --seconds 120 --repeats 5]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dashboard.alert_monitor import AlertMonitor  # noqa: E402

ENTITIES = ("BMW", "Audi", "Volvo", "Honda", "Fiat", "Ford")
T0 = 1_764_000_000.0


def records(rate: float, seconds: float, seed: int = 7) -> list[tuple[str, dict]]:
    rng = random.Random(seed)
    out = []
    for i in range(int(rate * seconds)):
        at = T0 + i / rate
        negative = rng.random() < 0.12
        stamp = datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds")
        out.append(
            (
                ENTITIES[i % len(ENTITIES)],
                {
                    "id": str(i),
                    "label": "negative" if negative else "positive",
                    "scores": {"negative": 0.8 if negative else 0.05, "positive": 0.15},
                    "related": rng.random() < 0.85,
                    "created_at": stamp.replace("+00:00", "Z"),
                    "timestamp": stamp.replace("+00:00", "Z"),
                },
            )
        )
    return out


def one_run(batch: list[tuple[str, dict]], rate: float, tick_every_s: float) -> dict:
    clock = [T0]
    sent = []
    monitor = AlertMonitor(publish=lambda t, p, r: sent.append(t), clock=lambda: clock[0])
    per_tick = int(rate * tick_every_s)
    add_s = tick_s = 0.0
    for start in range(0, len(batch), per_tick):
        chunk = batch[start : start + per_tick]
        began = time.perf_counter()
        for entity, record in chunk:
            monitor.add(entity, record)
        add_s += time.perf_counter() - began
        clock[0] = T0 + (start + len(chunk)) / rate
        began = time.perf_counter()
        monitor.tick()
        tick_s += time.perf_counter() - began
    n = len(batch)
    return {
        "add_us_per_record": add_s / n * 1e6,
        "tick_us_per_record": tick_s / n * 1e6,
        "core_percent_at_rate": 100 * (add_s + tick_s) / (n / rate),
        "published": len(sent),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=1000.0, help="records per simulated second")
    ap.add_argument("--seconds", type=float, default=120.0, help="simulated seconds per run")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    batch = records(args.rate, args.seconds)
    runs = [one_run(batch, args.rate, 5.0) for _ in range(args.repeats)]
    result = {
        key: round(statistics.median(r[key] for r in runs), 4)
        for key in ("add_us_per_record", "tick_us_per_record", "core_percent_at_rate")
    }
    result.update(
        rate=args.rate,
        records=len(batch),
        repeats=args.repeats,
        machine=f"{platform.machine()}, {platform.python_version()}",
        date=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
