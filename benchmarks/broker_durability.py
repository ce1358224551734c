"""What broker durability costs: QoS 1 publish throughput against tweets lost to kill -9.

Mosquitto 2.0 keeps its database in memory and writes all of it to ``mosquitto.db`` either
every ``autosave_interval`` seconds, or (``autosave_on_changes true``) every
``autosave_interval`` changes (a message queued for a client, a retained message, a
subscription). A crash loses every change since the last save; the installed 2.0.11 has no
persistence plugin to do better. For each setting this measures, in one run:

* throughput: a burst of QoS 1 tweets (~200 bytes, 100 in flight) until the last PUBACK, with
  the tweets queued for one offline persistent subscriber (a node that is away or behind),
  once on an empty queue and once on top of a backlog (every save rewrites the whole queue);
* drain: the subscriber comes back and takes that backlog (deliveries are changes too);
* throughput with the subscriber online (connected and acking, as a node that keeps up);
* loss: the same burst, the broker killed with SIGKILL after a random 25-75 % of it was
  acknowledged, restarted on the same data folder; lost = tweets PUBACKed to the publisher that the
  subscriber's session never receives afterwards.

Run:  python benchmarks/broker_durability.py [--burst 5000] [--backlog 20000] [--trials 3]
A table goes to stdout, everything to --out (JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from durability_trial import (  # noqa: E402  (its neighbour in benchmarks/)
    MQTT5,
    SINK_ID,
    Publisher,
    close,
    crash_trial,
    make_sink_session,
    sink,
)

from broker.config import find_program  # noqa: E402
from broker.local import Mosquitto as Broker  # noqa: E402
from harness import free_port  # noqa: E402

# (label, autosave_interval, autosave_on_changes)
SETTINGS = [
    ("60 s (Mosquitto's default)", 60, False),
    ("1 s", 1, False),
    ("every 1000 changes", 1000, True),
    ("every 100 changes", 100, True),
    ("every 10 changes", 10, True),
    ("every change", 1, True),
]
DRAIN_IDLE_S = 3.0  # after the restart, the sink takes what arrives until quiet this long


def durable_broker(data_dir: Path, port: int, interval: int, on_changes: bool) -> Broker:
    """A Mosquitto saving its persistence file every ``interval`` s (or every
    ``interval`` changes), with queues large enough for the backlog runs."""
    config = {
        "autosave_interval": interval,
        "autosave_on_changes": on_changes,
        "max_queued_messages": 1_000_000,
        "max_queued_bytes": 1024**3,
    }
    return Broker("127.0.0.1", port, data_dir, config=config).start()


def throughput(broker: Broker, run: str, count: int) -> float:
    publisher = Publisher(MQTT5, broker.port)
    start = time.perf_counter()
    publisher.send(run, count)
    publisher.wait_acked(count)
    elapsed = time.perf_counter() - start
    publisher.close()
    acked = publisher.acked_count
    assert acked == count, f"only {acked} of {count} PUBACKed"
    return count / elapsed


def throughput_online(broker: Broker, run: str, count: int) -> float:
    """Tweets/s until the last PUBACK while the subscriber is connected and acking."""
    client = sink(MQTT5, broker.port)
    try:
        return throughput(broker, run, count)
    finally:
        close(client)


def drain_rate(broker: Broker, count: int, idle_s: float = 5.0) -> float:
    """The sink reconnects to a queue of ``count`` tweets and takes them all (auto-ack, as
    fast as paho goes): tweets/s from the first to the last, a node draining a backlog."""
    times: list[float] = []

    def on_message(client, userdata, msg):
        times.append(time.perf_counter())

    client = MQTT5.client(SINK_ID, persistent=True)
    client.on_message = on_message
    MQTT5.connect(client, broker.port, persistent=True)
    client.loop_start()
    last = (0, time.monotonic())
    while len(times) < count:
        if len(times) != last[0]:
            last = (len(times), time.monotonic())
        elif time.monotonic() - last[1] > idle_s:
            break
        time.sleep(0.05)
    close(client)
    assert len(times) >= count, f"drained {len(times)} of {count}"
    return (len(times) - 1) / (times[-1] - times[0])


def measure(label: str, interval: int, on_changes: bool, args: argparse.Namespace) -> dict:
    rng = random.Random(f"{label}-{args.seed}")
    root = Path(tempfile.mkdtemp(prefix="durability-"))
    try:
        empty, online, backlog, drain = [], [], [], []
        for r in range(args.trials):
            broker = durable_broker(root / f"tp{r}", free_port(), interval, on_changes)
            make_sink_session(MQTT5, broker.port)
            online.append(throughput_online(broker, f"o{r}", args.burst))
            empty.append(throughput(broker, f"e{r}", args.burst))
            broker.stop()
            # The backlog goes in fast (default saving), then the setting is measured on it.
            filler = durable_broker(root / f"bl{r}", free_port(), 60, False)
            make_sink_session(MQTT5, filler.port)
            throughput(filler, "fill", args.backlog)
            filler.stop()
            broker = durable_broker(filler.data_dir, filler.port, interval, on_changes)
            backlog.append(throughput(broker, f"b{r}", args.burst))
            drain.append(drain_rate(broker, args.backlog + args.burst))
            broker.stop()
        trials = []
        for r in range(args.trials):
            broker = durable_broker(root / f"crash{r}", free_port(), interval, on_changes)
            make_sink_session(MQTT5, broker.port)
            # A random kill point: saves come every N changes, the kill must not align.
            kill_after = rng.randrange(args.burst // 4, args.burst * 3 // 4)
            trials.append(crash_trial(MQTT5, broker, f"c{r}", args.burst, kill_after, DRAIN_IDLE_S))
            broker.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    row = {
        "setting": label,
        "autosave_interval": interval,
        "autosave_on_changes": on_changes,
        "tweets_per_s_subscriber_online": round(statistics.median(online)),
        "tweets_per_s_empty_queue": round(statistics.median(empty)),
        "tweets_per_s_on_backlog": round(statistics.median(backlog)),
        "drain_tweets_per_s": round(statistics.median(drain)),
        "crash_trials": trials,
        "lost_median": statistics.median(t["lost"] for t in trials),
        "lost_max": max(t["lost"] for t in trials),
    }
    acked = statistics.median(t["acked"] for t in trials)
    print(
        f"| {label} | {row['tweets_per_s_subscriber_online']:,} "
        f"| {row['tweets_per_s_empty_queue']:,} | {row['tweets_per_s_on_backlog']:,} "
        f"| {row['drain_tweets_per_s']:,} "
        f"| {row['lost_median']:g} (max {row['lost_max']}) of {acked:,.0f} |",
        flush=True,
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--burst", type=int, default=5000, help="tweets per burst")
    parser.add_argument("--backlog", type=int, default=20000, help="tweets queued first")
    parser.add_argument("--trials", type=int, default=3, help="repeats (medians reported)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "broker_durability.json")
    parser.add_argument("--seed", type=int, default=0, help="for the random kill points")
    parser.add_argument(
        "--only", action="append", help="run the settings whose label contains this (repeatable)"
    )
    args = parser.parse_args()
    print(
        "| autosave | QoS 1 tweets/s, subscriber online | subscriber offline, empty queue "
        f"| offline, on a {args.backlog:,} backlog | draining that backlog "
        "| PUBACKed tweets lost to kill -9 (median) |"
    )
    print("|---|---|---|---|---|---|")
    chosen = [s for s in SETTINGS if not args.only or any(o in s[0] for o in args.only)]
    rows = [measure(label, iv, oc, args) for label, iv, oc in chosen]
    mosquitto = subprocess.run(
        [find_program("mosquitto"), "-h"], capture_output=True, text=True, check=False
    ).stdout.splitlines()[0]
    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        "mosquitto": mosquitto,
        "burst": args.burst,
        "backlog": args.backlog,
        "trials": args.trials,
        "rows": rows,
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
