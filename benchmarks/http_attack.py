"""Idle and slow HTTP clients against the node's /metrics and `dashboard serve` while
tweets flow: labels on time, /healthz, RSS, threads and open files of both servers.

The scenario is harness/http_attack.py (the same one tests/test_http_attack.py asserts on):
a fresh Mosquitto, a real node with --metrics-port and a real dashboard, each under a
1,024 open-file limit; per server and wave, --idle sockets that never send and --slow
readers that request /metrics or /events and never read; --rate tweets/s for --seconds.
Each repeat runs it twice, interleaved: without the attack (baseline) and with it.

Run:  python benchmarks/http_attack.py [--model models/default] [--repeats 3]
      [--out docs/http_attack.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from harness import http_attack, start_mosquitto  # noqa: E402


def _median(runs: list[dict[str, Any]], *path: str) -> float | None:
    values = []
    for run in runs:
        value: Any = run
        for key in path:
            value = value[key]
        if value is not None:
            values.append(value)
    return round(statistics.median(values), 3) if values else None


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "labels_received_of_sent": [f"{r['labels_received']}/{r['tweets_sent']}" for r in runs],
        "label_latency_s_p50": _median(runs, "label_latency_s", "p50"),
        "label_latency_s_p99": _median(runs, "label_latency_s", "p99"),
        "label_latency_s_max": _median(runs, "label_latency_s", "max"),
    }
    for server in ("node", "dashboard"):
        out[server] = {
            key: _median(runs, "processes", server, key) for key in runs[0]["processes"][server]
        }
        out[server]["healthz_answered"] = [
            f"{r['healthz'][server]['answered']}/{r['healthz'][server]['probes']}" for r in runs
        ]
        out[server]["healthz_max_s"] = _median(runs, "healthz", server, "max_s")
    return out


def main() -> None:
    # SIGTERM (kill, a timeout) unwinds like Ctrl-C, so the scenario's cleanup stops the
    # node, the dashboard and Mosquitto instead of leaving them running.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="bundle (default: shipped)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--idle", type=int, default=2000)
    parser.add_argument("--slow", type=int, default=600)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    runs: dict[str, list[dict[str, Any]]] = {"baseline": [], "attack": []}
    with tempfile.TemporaryDirectory() as tmp:
        broker = start_mosquitto(Path(tmp) / "broker")
        try:
            for repeat in range(args.repeats):
                for name, (idle, slow) in (
                    ("baseline", (0, 0)),
                    ("attack", (args.idle, args.slow)),
                ):
                    work = Path(tmp) / f"{name}{repeat}"
                    figures = http_attack.run(
                        broker, args.model, work, rate=args.rate, seconds=args.seconds,
                        idle=idle, slow=slow,
                    )  # fmt: skip
                    runs[name].append(figures)
                    print(f"{name} {repeat}: {json.dumps(summary([figures]))}", flush=True)
        finally:
            broker.stop()

    report = {
        "benchmark": "http_attack",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "settings": vars(args) | {"model": str(args.model or "shipped default"), "out": None},
        "medians": {name: summary(r) for name, r in runs.items()},
        "runs": runs,
    }
    print(json.dumps(report["medians"], indent=1))
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
