"""Throughput of 1, 2 and 3 nodes in one share group (node start --share-group), side by side.

For each group size: start the nodes (one interpreter thread each) on a fresh Mosquitto,
wait until all are subscribed, freeze them (SIGSTOP), queue a backlog of tweets (the broker
deals them out in turn), thaw them all at once (SIGCONT) and time from the thaw to the last
label. Sizes run interleaved, --repeats times; medians and ratios to one node are reported.

Also measured once: how many tweets a member killed with kill -9 strands in its session
(Mosquitto keeps dealing it its turn), and that restarting it with the same node id labels
them.

Run:  python benchmarks/share_group.py [--model models/default] [--tweets 4000] [--repeats 3]
A table goes to stdout, everything to --out (JSON) if given. Heavy: run it with
`nice -n 10`, and read the ratios against the load average it prints.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# The suite's helpers: a Mosquitto from repedge's own config, node processes, publishing.
from harness import (  # noqa: E402
    Collector,
    Mosquitto,
    NodeProcess,
    Topics,
    publish,
    start_mosquitto,
)

TEXTS = [
    "just tried the new {i} and it is sooooo good",
    "can't believe they raised prices again, order {i} #fail",
    "honestly the service on flight {i} was delayed for three hours",
    "RT @someone: the plant {i} opened and hired 2,000 people",
    "lost my luggage again, case {i}",
]


class LabelClock:
    """When each label arrives (monotonic seconds) and which member made it."""

    def __init__(self, broker: Mosquitto, topic: str) -> None:
        self.topic = topic
        self.collector = Collector(broker, [topic])

    @property
    def times(self) -> list[float]:
        return [m.at for m in self.collector.on(self.topic)]

    @property
    def nodes(self) -> dict[str, int]:
        return dict(Counter(m.json().get("node_id", "?") for m in self.collector.on(self.topic)))

    def wait(self, count: int, timeout: float) -> None:
        try:
            self.collector.wait_count(self.topic, count, timeout)
        except AssertionError:
            raise TimeoutError(f"{len(self.times)} of {count} labels after {timeout} s") from None

    def close(self) -> None:
        self.collector.close()


def tweets(run: str, n: int) -> list[str]:
    return [
        json.dumps({"id": f"{run}-{i}", "text": TEXTS[i % len(TEXTS)].format(i=i)})
        for i in range(n)
    ]


def start_group(
    broker: Mosquitto,
    model: Path,
    work: Path,
    size: int,
    topics: Topics,
    session_expiry: int | None = None,
) -> list:
    nodes = []
    for _ in range(size):
        node_id = f"b{uuid.uuid4().hex[:8]}"
        node = NodeProcess(model, broker, node_id, topics, work / node_id / "state")
        node.extra = ["--share-group", "bench", "--log-level", "warning"]
        if session_expiry is not None:  # the last --session-expiry given wins
            node.extra += ["--session-expiry", str(session_expiry)]
        nodes.append(node)
    watcher = Collector(broker, ["repedge/nodes/+/status"])
    for node in nodes:
        node.start_and_wait_online(watcher)
    watcher.close()
    return nodes


def saturation(broker: Mosquitto, model: Path, work: Path, size: int, count: int) -> dict:
    topics = Topics(f"bench/{uuid.uuid4().hex[:6]}")
    nodes = start_group(broker, model, work, size, topics)
    clock = LabelClock(broker, topics.labels)
    try:
        for node in nodes:
            node.signal(signal.SIGSTOP)
        publish(broker, topics.tweets, tweets(topics.prefix, count))
        start = time.monotonic()
        for node in nodes:
            node.signal(signal.SIGCONT)
        clock.wait(count, timeout=600)
        elapsed = clock.times[count - 1] - start
        return {
            "nodes": size,
            "tweets": count,
            "seconds": round(elapsed, 3),
            "tweets_per_s": round(count / elapsed, 1),
            "per_node": sorted(clock.nodes.values()),
        }
    finally:
        clock.close()
        for node in nodes:
            node.signal(signal.SIGCONT)
            node.signal(signal.SIGTERM)
        for node in nodes:
            node.wait()


def stranded_by_kill(
    broker: Mosquitto, model: Path, work: Path, count: int, session_expiry: int | None = None
) -> dict:
    """kill -9 one of three members, send ``count`` tweets, count what the others label,
    then restart the member with the same id (after its session expired, if it was short)."""
    topics = Topics(f"kill/{uuid.uuid4().hex[:6]}")
    nodes = start_group(broker, model, work, 3, topics, session_expiry)
    clock = LabelClock(broker, topics.labels)
    try:
        nodes[1].kill()
        publish(broker, topics.tweets, tweets(topics.prefix, count))
        with contextlib.suppress(TimeoutError):  # it only succeeds if nothing is stranded
            clock.wait(count, timeout=15)  # also longer than the short expiry tried
        labelled_without = len(clock.times)
        nodes[1].start()
        with contextlib.suppress(TimeoutError):
            clock.wait(count, timeout=120 if session_expiry is None else 30)
        return {
            "members": 3,
            "session_expiry_s": session_expiry or "default (7 days)",
            "tweets": count,
            "labelled_while_one_member_dead": labelled_without,
            "stranded_in_dead_member_session": count - labelled_without,
            "labelled_after_restart_same_id": len(clock.times),
        }
    finally:
        clock.close()
        for node in nodes:
            if node.alive():
                node.signal(signal.SIGTERM)
                node.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=REPO / "models" / "default")
    parser.add_argument("--tweets", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--out", type=Path, help="Also write the results here, as JSON.")
    parser.add_argument(
        "--kill-only", action="store_true", help="Only the kill -9 trials, no throughput runs."
    )
    args = parser.parse_args()

    load_before = os.getloadavg()
    runs: dict[int, list[dict]] = {size: [] for size in args.sizes}
    with tempfile.TemporaryDirectory(prefix="repedge-share-") as tmp:
        work = Path(tmp)
        broker = start_mosquitto(work / "broker")
        try:
            for repeat in range(0 if args.kill_only else args.repeats):
                for size in args.sizes:  # interleaved: machine noise hits every size alike
                    result = saturation(broker, args.model, work, size, args.tweets)
                    runs[size].append(result)
                    print(f"repeat {repeat + 1}: {size} node(s) {result['tweets_per_s']} tweets/s",
                          file=sys.stderr)  # fmt: skip
            kill = stranded_by_kill(broker, args.model, work, 900)
            short = stranded_by_kill(broker, args.model, work, 900, session_expiry=3)
        finally:
            broker.stop()

    medians = {
        size: statistics.median(r["tweets_per_s"] for r in rs) for size, rs in runs.items() if rs
    }
    base = medians.get(args.sizes[0], 1.0)
    report = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        # A busy machine (a training job, say) caps every size alike; say how busy it was.
        "load_average_1m_before_after": [round(load_before[0], 1), round(os.getloadavg()[0], 1)],
        "model": str(args.model),
        "tweets_per_run": args.tweets,
        "repeats": args.repeats,
        "median_tweets_per_s": medians,
        "ratio_to_first": {size: round(m / base, 2) for size, m in medians.items()},
        "runs": runs,
        "kill_9": kill,
        "kill_9_short_session": short,
    }
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"\n{'nodes':>5} {'tweets/s (median)':>18} {'ratio':>6}")
    for size in medians:
        print(f"{size:>5} {medians[size]:>18.0f} {report['ratio_to_first'][size]:>6.2f}")
    print(f"\nkill -9 of 1 of 3 members, {kill['tweets']} tweets sent after: "
          f"{kill['stranded_in_dead_member_session']} stranded in its session, "
          f"{kill['labelled_after_restart_same_id']} labelled after restarting it")  # fmt: skip
    ever = short["labelled_after_restart_same_id"]
    print(f"same with --session-expiry 3 (restart after it expired): "
          f"{short['stranded_in_dead_member_session']} stranded, "
          f"{ever} of {short['tweets']} ever labelled")  # fmt: skip
    print(f"load average (1 min) before/after: {report['load_average_1m_before_after']}")


if __name__ == "__main__":
    main()
