"""Benchmark the edge node against the bare interpreter, on one model, in one run.

Measures, with medians over --repeats:

* bare: ``Classifier.predict`` on pre-tokenized batches (the ceiling for the node);
* saturation: the node draining a backlog of tweets queued for it in a real Mosquitto,
  timed from its first label to its last (MQTT, JSON, record store, acks included);
* latency: tweets offered at a fixed rate (50/s), publish -> label received, p50/p99;
* RSS of the node process (peak seen while it works).

Run:  python benchmarks/node_throughput.py --model models/BUNDLE [--data tweets.txt]
A table goes to stdout, everything to --out (JSON). Targets (2-core x86): end-to-end
>= 0.8x bare at saturation, p99 <= 30 ms at 50 tweets/s, RSS <= 100 MiB.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import statistics
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
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.subscribeoptions import SubscribeOptions

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from broker.config import BrokerConfig, find_program, write_config  # noqa: E402
from edgemodel.inference import Classifier  # noqa: E402
from node.batcher import bucket_by_length  # noqa: E402
from node.serve import default_interpreter_threads  # noqa: E402

TARGETS = {"saturation_ratio_min": 0.8, "p99_ms_max": 30.0, "rss_mib_max": 100.0}

# -- input tweets ---------------------------------------------------------------------

_ENTITIES = ["BMW", "Toyota", "Apple", "Samsung", "Ryanair", "Nestle", "Barclays", "Shakira"]
_OPENERS = [
    "just tried the new {e} {p} and",
    "can't believe {e} would",
    "@{u} did you see that {e}",
    "Breaking: {e} announces that its {p}",
    "so {e} customer service",
    "honestly the {e} {p}",
    "RT @{u}: {e} says the {p}",
]
_MIDDLES = [
    "it is sooooo good",
    "totally failed again",
    "was delayed for three hours",
    "is the best thing that happened this year",
    "made me wait on hold forever",
    "drives really well but the dealer was slow",
    "raised prices again",
    "won an award",
    "recalls 100k units after a fault",
    "opened a new plant and hired 2,000 people",
    "just works, no complaints",
    "lost my luggage",
    "is trending for all the wrong reasons",
]
_TAILS = [
    "",
    "",
    "#fail",
    "#love",
    "http://t.co/xYz12",
    "😍😍",
    "😡",
    "!!!",
    "lol",
    "and I will never buy from them again, never ever, tell your friends",
    "thanks @support for the quick reply, really appreciated it after such a long day",
]
_PRODUCTS = ["phone", "car", "app", "flight", "coffee", "account", "update", "album"]


def synthetic_tweets(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """(text, entity) pairs: tweet-like, varied in length (about 8 to 60 tokens)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        entity = rng.choice(_ENTITIES)
        parts = [rng.choice(_OPENERS), rng.choice(_MIDDLES)]
        for _ in range(rng.choice([0, 0, 1, 2])):
            parts.append(rng.choice(_MIDDLES))
        parts.append(rng.choice(_TAILS))
        text = " ".join(p for p in parts if p).format(
            e=entity, p=rng.choice(_PRODUCTS), u=f"user{rng.randint(1, 999)}"
        )
        out.append((text, entity))
    return out


def load_tweets(path: Path) -> list[tuple[str, str | None]]:
    """One tweet per line, or JSON lines with "text" (and optional "entity")."""
    out: list[tuple[str, str | None]] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        if line.lstrip().startswith("{"):
            data = json.loads(line)
            out.append((data["text"], data.get("entity")))
        else:
            out.append((line, None))
    return out


# -- bare interpreter -----------------------------------------------------------------


def bare_throughput(
    classifier: Classifier, tweets, batch: int, max_tokens: int | None, n: int, rng
) -> float:
    """Tweets/s of predict() alone on pre-tokenized batches of ``batch`` random tweets,
    split by length like the node does (max_tokens=None: padded to the longest)."""
    encoded = []
    for text, entity in tweets:
        try:
            encoded.append(classifier.encode(text, entity))
        except ValueError:
            continue
    sample = [rng.choice(encoded) for _ in range(n)]
    calls = []
    for i in range(0, n, batch):
        chunk = sample[i : i + batch]
        calls.extend(bucket_by_length(chunk, len, max_tokens) if max_tokens else [chunk])
    for call in calls[:3]:
        classifier.predict(call)  # warm-up
    start = time.perf_counter()
    for call in calls:
        classifier.predict(call)
    return n / (time.perf_counter() - start)


# -- broker, node, clients ----------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Labels:
    """Subscriber that timestamps every label record on arrival."""

    def __init__(self, port: int, topic: str) -> None:
        self.arrivals: dict[str, float] = {}
        self.records: dict[str, dict] = {}
        self._lock = threading.Condition()
        ready = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_connect = lambda c, *a: c.subscribe(topic, options=SubscribeOptions(qos=1))
        self.client.on_subscribe = lambda *a: ready.set()
        self.client.on_message = self._on_message
        self.client.on_socket_open = _nodelay
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        ready.wait(30)

    def _on_message(self, client, userdata, msg) -> None:
        now = time.perf_counter()
        record = json.loads(msg.payload)
        with self._lock:
            self.arrivals.setdefault(record["id"], now)
            self.records.setdefault(record["id"], record)
            self._lock.notify_all()

    def wait_all(self, ids: set[str], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._lock:
            while not ids <= self.arrivals.keys():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(min(left, 0.5))
        return True

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _nodelay(client, userdata, sock) -> None:
    import socket

    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def publisher(port: int) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(100)
    client.on_socket_open = _nodelay
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


class Node:
    def __init__(self, args, port: int, work: Path) -> None:
        self.cmd = [
            sys.executable, "-m", "node", "start", "--model", str(args.model),
            "--broker", f"mqtt://127.0.0.1:{port}", "--node-id", "bench",
            "--state-dir", str(work / "node-state"), "--threads", str(args.threads),
            "--max-batch", str(args.max_batch), "--telemetry-interval", "1",
            "--max-batch-tokens", str(args.max_batch_tokens),
            "--tweets-topic", "bench/tweets", "--labels-topic", "bench/labels",
            "--log-level", "warning",
        ]  # fmt: skip
        if args.variant:
            self.cmd += ["--variant", args.variant]
        self.log = open(work / "node.log", "ab")  # noqa: SIM115
        self.process: subprocess.Popen | None = None
        self.peak_rss = 0
        self.idle_rss = 0  # online, model loaded, nothing classified yet
        self._sampling = False

    def start(self, port: int) -> None:
        online = threading.Event()
        watch = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        watch.on_connect = lambda c, *a: c.subscribe("repedge/nodes/bench/status", qos=1)
        watch.on_subscribe = lambda *a: launch.set()
        watch.on_message = lambda c, u, m: (
            json.loads(m.payload)["state"] == "online" and (online.set())
        )
        launch = threading.Event()
        watch.connect("127.0.0.1", port)
        watch.loop_start()
        launch.wait(30)
        self.process = subprocess.Popen(self.cmd, cwd=REPO, stdout=self.log, stderr=self.log)
        ok = online.wait(120)
        watch.disconnect()
        watch.loop_stop()
        if not ok:
            raise RuntimeError("node did not come online; see node.log")
        if not self.idle_rss:
            self.idle_rss = psutil.Process(self.process.pid).memory_info().rss
        self._sampling = True
        threading.Thread(target=self._sample_rss, daemon=True).start()

    def _sample_rss(self) -> None:
        proc = psutil.Process(self.process.pid)
        while self._sampling and self.process.poll() is None:
            try:
                self.peak_rss = max(self.peak_rss, proc.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(0.05)

    def stop(self) -> None:
        self._sampling = False
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(60)


def payloads(tweets, prefix: str, n: int, rng) -> list[tuple[str, str]]:
    out = []
    for i in range(n):
        text, entity = rng.choice(tweets)
        body = {"id": f"{prefix}-{i}", "text": text}
        if entity:
            body["entity"] = entity
        out.append((body["id"], json.dumps(body)))
    return out


def saturation(node: Node, port: int, tweets, n: int, rng) -> float:
    """Queue n tweets while the node is stopped, start it, time the drain."""
    node.stop()
    batch = payloads(tweets, uuid.uuid4().hex[:8], n, rng)
    pub = publisher(port)
    for info in [pub.publish("bench/tweets", p, qos=1) for _, p in batch]:
        info.wait_for_publish(60)
    pub.disconnect()
    pub.loop_stop()
    labels = Labels(port, "bench/labels")
    node.start(port)
    ids = {i for i, _ in batch}
    if not labels.wait_all(ids, timeout=600):
        raise RuntimeError(f"only {len(labels.arrivals)} of {n} labels arrived")
    times = sorted(labels.arrivals[i] for i in ids)
    labels.close()
    return (n - 1) / (times[-1] - times[0])


def fixed_rate(port: int, tweets, rate: float, seconds: float, rng) -> dict:
    """Offer `rate` tweets/s; latency = label arrival - publish call, both here."""
    n = int(rate * seconds)
    batch = payloads(tweets, uuid.uuid4().hex[:8], n, rng)
    labels = Labels(port, "bench/labels")
    pub = publisher(port)
    sent: dict[str, float] = {}
    start = time.perf_counter()
    for k, (tweet_id, body) in enumerate(batch):
        due = start + k / rate
        while (delay := due - time.perf_counter()) > 0:
            time.sleep(delay)
        sent[tweet_id] = time.perf_counter()
        pub.publish("bench/tweets", body, qos=1)
    ok = labels.wait_all(set(sent), timeout=120)
    pub.disconnect()
    pub.loop_stop()
    labels.close()
    warm = [tweet_id for tweet_id, _ in batch][int(rate) :]  # drop the first second
    lat = sorted((labels.arrivals[i] - sent[i]) * 1000 for i in warm if i in labels.arrivals)
    internal = sorted(labels.records[i]["latency_ms"] for i in warm if i in labels.records)

    def pct(values: list[float], q: float) -> float:
        return values[min(len(values) - 1, int(q / 100 * len(values)))]

    return {
        "complete": ok,
        "p50_ms": pct(lat, 50),
        "p95_ms": pct(lat, 95),
        "p99_ms": pct(lat, 99),
        "max_ms": lat[-1],
        "node_internal_p50_ms": pct(internal, 50),
        "node_internal_p99_ms": pct(internal, 99),
    }


# -- main -------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="bundle folder or .tflite")
    parser.add_argument("--variant", default=None)
    parser.add_argument("--data", type=Path, help="tweets: text lines or JSON lines")
    parser.add_argument(
        "--threads", type=int, default=None, help="interpreter threads (default: the node's)"
    )
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--max-batch-tokens", type=int, default=256)
    parser.add_argument("--tweets", type=int, default=2000, help="tweets per saturation run")
    parser.add_argument("--rate", type=float, default=50.0, help="offered tweets/s")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of a rate run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "node_throughput.json")
    args = parser.parse_args()
    rng = random.Random(0)
    tweets = load_tweets(args.data) if args.data else synthetic_tweets(1000)

    args.threads = args.threads or default_interpreter_threads()
    classifier = Classifier.from_path(args.model, variant=args.variant, num_threads=args.threads)
    identity = classifier.bundle.identity()
    size = classifier.bundle.model_path.stat().st_size
    name = f"{identity['name']} {identity['version']} {identity['variant']}"
    print(f"model {name} ({size / 2**20:.1f} MiB), {len(tweets)} tweets, {args.repeats} repeats")

    work = Path(tempfile.mkdtemp(prefix="repedge-bench-"))
    port = free_port()
    conf = write_config(BrokerConfig(data_dir=work / "broker", port=port))
    broker_log = open(work / "broker.log", "ab")  # noqa: SIM115
    broker = subprocess.Popen(
        [find_program("mosquitto"), "-c", str(conf)], stdout=broker_log, stderr=broker_log
    )
    node = Node(args, port, work)
    try:
        time.sleep(0.3)
        node.start(port)  # creates the persistent session the backlog is queued in
        # Phases alternate within each repeat, so that other load on the machine drifting
        # over time hits bare and end-to-end figures alike.
        bare, padded, e2e, rates = [], [], [], []
        for r in range(args.repeats):
            print(f"repeat {r + 1}/{args.repeats}", flush=True)
            bare.append(
                bare_throughput(
                    classifier, tweets, args.max_batch, args.max_batch_tokens, args.tweets, rng
                )
            )
            padded.append(
                bare_throughput(classifier, tweets, args.max_batch, None, args.tweets, rng)
            )
            e2e.append(saturation(node, port, tweets, args.tweets, rng))
            rates.append(fixed_rate(port, tweets, args.rate, args.seconds, rng))
        peak_rss = node.peak_rss
    finally:
        node.stop()
        broker.terminate()
        broker.wait(30)

    med = statistics.median
    result = {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "cpus": psutil.cpu_count(),
            "python": platform.python_version(),
            # Other work on the machine shows up in the latency tail: keep it on record.
            "load_average_1_5_15": list(os.getloadavg()),
        },
        "model": {**identity, "size_bytes": size},
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "input": str(args.data) if args.data else "built-in synthetic tweets",
        # The reference: predict() with the node's batching (length buckets, token budget).
        "bare_tweets_per_s": {"runs": bare, "median": med(bare)},
        "bare_padded_to_longest_tweets_per_s": {"runs": padded, "median": med(padded)},
        "e2e_saturation_tweets_per_s": {"runs": e2e, "median": med(e2e)},
        "saturation_ratio": med(e2e) / med(bare),
        "fixed_rate": {
            "rate_per_s": args.rate,
            "runs": rates,
            "p50_ms": med(r["p50_ms"] for r in rates),
            "p99_ms": med(r["p99_ms"] for r in rates),
        },
        "node_peak_rss_mib": peak_rss / 2**20,
        "node_idle_rss_mib": node.idle_rss / 2**20,
        "targets": TARGETS,
    }
    checks = {
        "saturation_ratio": result["saturation_ratio"] >= TARGETS["saturation_ratio_min"],
        "p99_ms": result["fixed_rate"]["p99_ms"] <= TARGETS["p99_ms_max"],
        "rss_mib": result["node_peak_rss_mib"] <= TARGETS["rss_mib_max"],
    }
    result["meets_targets"] = checks

    rows = [
        ("bare predict, node batching (tweets/s)", f"{med(bare):.1f}", ""),
        ("bare predict, padded batches (tweets/s)", f"{med(padded):.1f}", ""),
        ("end-to-end at saturation (tweets/s)", f"{med(e2e):.1f}", ""),
        ("ratio end-to-end / bare", f"{result['saturation_ratio']:.2f}",
         _mark(checks["saturation_ratio"], ">= 0.8")),
        (f"p50 latency at {args.rate:g}/s (ms)", f"{result['fixed_rate']['p50_ms']:.1f}", ""),
        (f"p99 latency at {args.rate:g}/s (ms)", f"{result['fixed_rate']['p99_ms']:.1f}",
         _mark(checks["p99_ms"], "<= 30")),
        ("node RSS at start, idle (MiB)", f"{node.idle_rss / 2**20:.1f}", ""),
        ("node peak RSS (MiB)", f"{peak_rss / 2**20:.1f}", _mark(checks["rss_mib"], "<= 100")),
    ]  # fmt: skip
    print(f"\n{'metric (median of ' + str(args.repeats) + ')':40s} {'value':>10s}  target")
    for name, value, mark in rows:
        print(f"{name:40s} {value:>10s}  {mark}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"\nwritten {args.out}; logs in {work}")
    return 0


def _mark(ok: bool, target: str) -> str:
    return f"{'ok' if ok else 'MISSED'} ({target})"


if __name__ == "__main__":
    sys.exit(main())
