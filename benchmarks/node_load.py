"""Overload benchmark: offer the node more tweets than it can label, then let it drain.

A real Mosquitto (repedge's config) and a `node start` subprocess. A publisher offers
``--rate`` tweets/s (QoS 1) for ``--seconds``; a subscriber collects the label records.
Every ``--sample`` seconds it records the node's and the broker's RSS, the tweets the
broker has acknowledged to the publisher, the tweets labelled, and the backlog between the
two (held by the broker, or in flight to the node). After the offer it waits until every
acknowledged tweet has a label (``--drain-timeout``), and checks that none is missing.

Run:  python benchmarks/node_load.py [--model models/default] [--rate 1000] [--seconds 60]
          [--mosquitto /path/to/mosquitto] [--out runs/node_load]
Writes OUT/node_load.json (summary and samples), OUT/node_load.csv and OUT/node_load.png
(needs matplotlib: pip install -e '.[bench]').
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as mqtt
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from broker.config import find_program  # noqa: E402
from common.endpoint import BrokerEndpoint  # noqa: E402
from common.mqttclient import new_client  # noqa: E402
from harness import Collector, Mosquitto, start_mosquitto, subscriber  # noqa: E402

TWEETS_TOPIC = "load/tweets"
LABELS_TOPIC = "load/labels"
ERRORS_TOPIC = "load/errors"
NODE_ID = "load"

_BRANDS = ["BMW", "Toyota", "Apple", "Samsung", "Ryanair", "Nestle", "Barclays"]
_WORDS = [
    "love",
    "hate",
    "new",
    "phone",
    "car",
    "flight",
    "delayed",
    "service",
    "great",
    "awful",
    "price",
    "update",
    "app",
    "store",
    "recall",
    "award",
    "plant",
    "jobs",
    "battery",
    "screen",
    "support",
    "quick",
    "slow",
    "again",
    "never",
    "always",
]


def tweet_texts(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """(text, entity): 6 to 30 words, like tweets in length."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        brand = rng.choice(_BRANDS)
        words = [rng.choice(_WORDS) for _ in range(rng.randint(5, 29))]
        words.insert(rng.randint(0, len(words)), brand)
        out.append((" ".join(words), brand))
    return out


def client(port: int) -> mqtt.Client:
    c = new_client(BrokerEndpoint("127.0.0.1", port))
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


class Labels:
    """Label and error records by tweet id; the node's latest telemetry."""

    def __init__(self, port: int) -> None:
        self.ids: set[str] = set()
        self.records = 0
        self.errors = 0
        self.telemetry: dict = {}
        self.lock = threading.Lock()
        topics = [LABELS_TOPIC, ERRORS_TOPIC, f"repedge/nodes/{NODE_ID}/telemetry"]
        self.client = subscriber(BrokerEndpoint("127.0.0.1", port), topics, self._on_message)

    def _on_message(self, c, userdata, msg) -> None:
        record = json.loads(msg.payload)
        with self.lock:
            if msg.topic == LABELS_TOPIC:
                self.records += 1
                self.ids.add(record["id"])
            elif msg.topic == ERRORS_TOPIC:
                self.errors += 1
                self.ids.add(record["id"])
            else:
                self.telemetry = record

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def wait_online(broker: Mosquitto, timeout: float = 120) -> None:
    watch = Collector(broker, [f"repedge/nodes/{NODE_ID}/status"])
    try:
        watch.wait_for(
            lambda msgs: any(not m.retain and m.json().get("state") == "online" for m in msgs),
            timeout,
            "the node to come online",
        )
    finally:
        watch.close()


def rss_mib(proc: psutil.Process) -> float | None:
    try:
        return proc.memory_info().rss / 2**20
    except psutil.Error:
        return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=REPO / "models" / "default")
    parser.add_argument("--rate", type=float, default=1000.0, help="offered tweets/s")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the offer")
    parser.add_argument("--sample", type=float, default=0.5, help="seconds between samples")
    parser.add_argument("--drain-timeout", type=float, default=1800.0)
    parser.add_argument("--threads", type=int, default=None, help="interpreter threads")
    parser.add_argument("--mosquitto", type=Path, default=None, help="broker binary")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "node_load")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="repedge-load-"))
    program = find_program("mosquitto", args.mosquitto)
    version = subprocess.run(
        [program, "-h"], capture_output=True, text=True, check=False
    ).stdout.splitlines()[0]
    broker = start_mosquitto(work / "broker", program=Path(program))
    port = broker.port
    node_cmd = [
        sys.executable, "-m", "node", "start", "--model", str(args.model),
        "--broker", f"mqtt://127.0.0.1:{port}", "--node-id", NODE_ID,
        "--state-dir", str(work / "node-state"), "--telemetry-interval", "1",
        "--tweets-topic", TWEETS_TOPIC, "--labels-topic", LABELS_TOPIC,
        "--errors-topic", ERRORS_TOPIC, "--log-level", "warning",
    ]  # fmt: skip
    if args.threads:
        node_cmd += ["--threads", str(args.threads)]
    node_log = open(work / "node.log", "ab")  # noqa: SIM115
    node = subprocess.Popen(node_cmd, cwd=REPO, stdout=node_log, stderr=node_log)
    labels = publisher = None
    try:
        wait_online(broker)
        labels = Labels(port)
        node_proc, broker_proc = psutil.Process(node.pid), psutil.Process(broker.process.pid)
        idle_rss = rss_mib(node_proc)

        total = int(args.rate * args.seconds)
        texts = tweet_texts(5000)
        run = uuid.uuid4().hex[:6]
        acked = [0]
        acked_lock = threading.Lock()
        publisher = new_client(BrokerEndpoint("127.0.0.1", port))
        publisher.max_inflight_messages_set(1000)

        def on_publish(*_a) -> None:
            with acked_lock:
                acked[0] += 1

        publisher.on_publish = on_publish
        publisher.connect("127.0.0.1", port)
        publisher.loop_start()
        offered = [0]
        offer_done = threading.Event()

        def offer() -> None:
            start = time.perf_counter()
            for i in range(total):
                due = start + i / args.rate
                while (delay := due - time.perf_counter()) > 0:
                    time.sleep(delay)
                text, entity = texts[i % len(texts)]
                body = json.dumps({"id": f"{run}-{i}", "text": f"{text} #{i}", "entity": entity})
                publisher.publish(TWEETS_TOPIC, body, qos=1)
                offered[0] = i + 1
            offer_done.set()

        samples: list[dict] = []
        t0 = time.monotonic()
        offer_thread = threading.Thread(target=offer, name="offer", daemon=True)
        offer_thread.start()
        offer_end = None
        deadline = t0 + args.seconds + args.drain_timeout
        while time.monotonic() < deadline:
            now = time.monotonic() - t0
            with labels.lock:
                done = len(labels.ids)
                telemetry = dict(labels.telemetry)
            with acked_lock:
                broker_has = acked[0]
            samples.append(
                {
                    "t_s": round(now, 2),
                    "offered": offered[0],
                    "acked_by_broker": broker_has,
                    "labelled": done,
                    "backlog": broker_has - done,
                    "node_rss_mib": rss_mib(node_proc),
                    "broker_rss_mib": rss_mib(broker_proc),
                    "node_queue_depth": telemetry.get("queue_depth"),
                    "node_in_flight": telemetry.get("in_flight_records"),
                }
            )
            if offer_done.is_set() and offer_end is None:
                offer_end = now
            if offer_done.is_set() and broker_has >= total and done >= total:
                break
            if node.poll() is not None:
                raise RuntimeError(f"the node exited ({node.returncode}); see {work}/node.log")
            time.sleep(args.sample)
        finished = time.monotonic() - t0
        with labels.lock:
            missing = total - len({i for i in labels.ids if i.startswith(f"{run}-")})
            repeats = labels.records + labels.errors - len(labels.ids)
            errors = labels.errors
        time.sleep(2 * args.sample)  # one more telemetry report
        final_rss = rss_mib(node_proc)
    finally:
        if publisher is not None:
            publisher.disconnect()
            publisher.loop_stop()
        if labels is not None:
            labels.close()
        if node.poll() is None:
            node.send_signal(signal.SIGTERM)
            node.wait(60)
        broker.stop()

    node_rss = [s["node_rss_mib"] for s in samples if s["node_rss_mib"] is not None]
    broker_rss = [s["broker_rss_mib"] for s in samples if s["broker_rss_mib"] is not None]
    peak_backlog = max(s["backlog"] for s in samples)
    during = [s for s in samples if s["t_s"] <= (offer_end or finished)]
    rate_in = during[-1]["labelled"] / during[-1]["t_s"] if during and during[-1]["t_s"] else 0
    summary = {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "cpus": psutil.cpu_count(),
            "load_average_1_5_15_at_end": list(os.getloadavg()),
        },
        "broker": version,
        "model": str(args.model),
        "offered_per_s": args.rate,
        "offer_seconds": args.seconds,
        "offered": total,
        "offer_took_s": offer_end,
        "all_labelled_after_s": finished,
        "drain_s": finished - (offer_end or finished),
        "labelled_per_s_during_offer": rate_in,
        "labelled_per_s_overall": total / finished,
        "missing": missing,
        "repeated_records": repeats,
        "error_records": errors,
        "peak_backlog": peak_backlog,
        "node_rss_mib": {"idle": idle_rss, "peak": max(node_rss), "end": final_rss},
        "broker_rss_mib": {"start": broker_rss[0], "peak": max(broker_rss)},
        "samples": samples,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "node_load.json").write_text(json.dumps(summary, indent=2) + "\n")
    with open(args.out / "node_load.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(samples[0]))
        writer.writeheader()
        writer.writerows(samples)
    plot(samples, offer_end, summary, args.out / "node_load.png")
    print(
        f"broker: {version}\n"
        f"offered {total} at {args.rate:g}/s in {offer_end:.1f} s; all labelled after "
        f"{finished:.1f} s (drain {summary['drain_s']:.1f} s); missing {missing}, "
        f"repeated records {repeats}, errors {errors}\n"
        f"labelled {rate_in:.0f}/s during the offer, {summary['labelled_per_s_overall']:.0f}/s "
        f"overall; peak backlog {peak_backlog}\n"
        f"node RSS idle {idle_rss:.1f} / peak {max(node_rss):.1f} / end {final_rss:.1f} MiB; "
        f"broker RSS peak {max(broker_rss):.1f} MiB\n"
        f"written {args.out}/node_load.{{json,csv,png}}; logs in {work}"
    )
    return 0 if missing == 0 else 1


def plot(samples: list[dict], offer_end: float | None, summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s["t_s"] for s in samples]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 7), sharex=True)
    top.plot(t, [s["node_rss_mib"] for s in samples], label="node RSS")
    top.plot(t, [s["broker_rss_mib"] for s in samples], label="broker RSS")
    top.axhline(100, color="grey", linestyle=":", label="node target (100 MiB)")
    top.set_ylabel("MiB")
    top.legend(loc="upper left")
    top.set_title(
        f"{summary['offered']} tweets offered at {summary['offered_per_s']:g}/s "
        f"({summary['broker']})"
    )
    bottom.plot(t, [s["acked_by_broker"] for s in samples], label="accepted by the broker")
    bottom.plot(t, [s["labelled"] for s in samples], label="labelled")
    bottom.plot(t, [s["backlog"] for s in samples], label="backlog (accepted - labelled)")
    bottom.set_xlabel("seconds")
    bottom.set_ylabel("tweets")
    bottom.legend(loc="upper left")
    for ax in (top, bottom):
        if offer_end is not None:
            ax.axvline(offer_end, color="black", linewidth=0.8, linestyle="--")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
