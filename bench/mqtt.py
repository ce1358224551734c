"""`node bench --broker`: the end-to-end row, a real node behind a real MQTT broker.

Phases alternate within each repeat, so that other load on the device drifting over time
hits the bare and the end-to-end figures alike:

* bare: the model call alone on a backlog with the node's batching
  (:func:`bench.measure.saturation_throughput`, the same code as the variant rows);
* saturation: a backlog of tweets queued in the broker while the node is down, drained by
  a fresh ``node start`` subprocess, timed from its first label to its last (MQTT, JSON,
  record store and acknowledgements included);
* fixed rate: tweets offered at ``rate``/s, publish -> label received, p50/p95/p99;
* the node process's RSS: idle once online, and the peak seen while it works.

``broker="local"`` starts a private Mosquitto (repedge's config, free port); a
``mqtt://host:port`` URL uses that broker, on topics of this run only (bench/<run>/...).
"""

from __future__ import annotations

import json
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psutil
from paho.mqtt.subscribeoptions import SubscribeOptions

from bench.measure import encode_all, saturation_throughput
from bench.settings import BenchSettings
from bench.tweets import BenchTweets
from broker.local import Mosquitto, start_mosquitto
from common import topics as wire
from common.endpoint import BrokerEndpoint
from common.mqttclient import new_client
from common.stats import percentile
from edgemodel.defaults import serving_threads
from edgemodel.inference import Classifier

# The node's targets on a 2-core x86 machine (docs/node.md).
TARGETS = {"saturation_ratio_min": 0.8, "p99_ms_max": 30.0, "rss_mib_max": 100.0}
Progress = Callable[[str], None]


@dataclass
class BrokerBenchConfig:
    model: Path
    variant: str | None = None
    broker: str = "local"  # or mqtt://host:port, mqtts://host:port
    username: str | None = None
    password: str | None = None
    cafile: Path | None = None  # with mqtts://: the CA of the broker's certificate
    threads: int | None = None  # None: the node's default
    max_batch: int = BenchSettings.max_batch
    max_batch_tokens: int = BenchSettings.max_batch_tokens
    tweets: int = BenchSettings.broker_tweets  # per saturation run
    rate: float = BenchSettings.rate
    seconds: float = BenchSettings.seconds
    repeats: int = BenchSettings.broker_repeats


class _Link:
    """Where the broker is and how to log in; makes the benchmark's own MQTT clients."""

    def __init__(self, endpoint: BrokerEndpoint):
        self.endpoint = endpoint
        self.host, self.port = endpoint.address
        self.username, self.password = endpoint.username, endpoint.password

    def client(self) -> mqtt.Client:
        return new_client(self.endpoint)


class _Labels:
    """Subscriber that timestamps every label record on arrival."""

    def __init__(self, link: _Link, topic: str) -> None:
        self.arrivals: dict[str, float] = {}
        self.records: dict[str, dict] = {}
        self._lock = threading.Condition()
        ready = threading.Event()
        self.client = link.client()
        self.client.on_connect = lambda c, *a: c.subscribe(topic, options=SubscribeOptions(qos=1))
        self.client.on_subscribe = lambda *a: ready.set()
        self.client.on_message = self._on_message
        self.client.connect(link.host, link.port)
        self.client.loop_start()
        if not ready.wait(30):
            raise RuntimeError(f"could not subscribe to {topic} on {link.host}:{link.port}")

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


def _publisher(link: _Link) -> mqtt.Client:
    client = link.client()
    client.max_inflight_messages_set(100)
    client.connect(link.host, link.port)
    client.loop_start()
    return client


class _NodeProcess:
    """``node start`` as a subprocess, with its RSS sampled while it runs."""

    def __init__(
        self, cfg: BrokerBenchConfig, link: _Link, node_id: str, topics: str, work: Path
    ) -> None:
        self.node_id = node_id
        self.link = link
        self.cmd = [
            sys.executable, "-m", "node", "start", "--model", str(cfg.model),
            "--broker", link.endpoint.url, "--node-id", node_id,
            "--state-dir", str(work / "node-state"), "--threads", str(cfg.threads),
            "--max-batch", str(cfg.max_batch), "--telemetry-interval", "1",
            "--max-batch-tokens", str(cfg.max_batch_tokens),
            "--tweets-topic", f"{topics}/tweets", "--labels-topic", f"{topics}/labels",
            "--errors-topic", f"{topics}/errors", "--log-level", "warning",
        ]  # fmt: skip
        if cfg.variant:
            self.cmd += ["--variant", cfg.variant]
        if link.username:
            self.cmd += ["--username", link.username]
        for option in ("cafile", "certfile", "keyfile"):
            path = getattr(link.endpoint, option)
            if path is not None:
                self.cmd += [f"--{option}", str(path.absolute())]
        self.env_password = link.password
        self.log_path = work / "node.log"
        self.process: subprocess.Popen | None = None
        self.peak_rss = 0
        self.idle_rss = 0  # online, model loaded, nothing classified yet
        self._sampling = False

    def start(self) -> None:
        import os

        online, subscribed = threading.Event(), threading.Event()
        watch = self.link.client()
        status = wire.node_topic(self.node_id, wire.STATUS)
        watch.on_connect = lambda c, *a: c.subscribe(status, qos=1)
        watch.on_subscribe = lambda *a: subscribed.set()
        watch.on_message = lambda c, u, m: (
            json.loads(m.payload).get("state") == "online" and online.set()
        )
        watch.connect(self.link.host, self.link.port)
        watch.loop_start()
        subscribed.wait(30)
        env = dict(os.environ)
        if self.env_password:
            env["REPEDGE_MQTT_PASSWORD"] = self.env_password
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.cmd, stdout=log, stderr=log, env=env)
        ok = online.wait(120)
        watch.disconnect()
        watch.loop_stop()
        if not ok:
            self.stop()
            raise RuntimeError(f"the node did not come online; see {self.log_path}")
        if not self.idle_rss:
            self.idle_rss = psutil.Process(self.process.pid).memory_info().rss
        self._sampling = True
        threading.Thread(target=self._sample_rss, daemon=True).start()

    def _sample_rss(self) -> None:
        assert self.process is not None
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
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def _payloads(tweets: BenchTweets, prefix: str, n: int, rng: random.Random) -> list[tuple]:
    out = []
    for i in range(n):
        k = rng.randrange(len(tweets))
        body = {"id": f"{prefix}-{i}", "text": tweets.texts[k]}
        if tweets.entities[k]:
            body["entity"] = tweets.entities[k]
        out.append((body["id"], json.dumps(body)))
    return out


def _saturation(
    node: _NodeProcess, link: _Link, topics: str, tweets: BenchTweets, n: int, rng
) -> float:
    """Queue n tweets while the node is down, start it, time the drain."""
    node.stop()
    batch = _payloads(tweets, uuid.uuid4().hex[:8], n, rng)
    pub = _publisher(link)
    for info in [pub.publish(f"{topics}/tweets", p, qos=1) for _, p in batch]:
        info.wait_for_publish(60)
    pub.disconnect()
    pub.loop_stop()
    labels = _Labels(link, f"{topics}/labels")
    try:
        node.start()
        ids = {i for i, _ in batch}
        if not labels.wait_all(ids, timeout=600):
            raise RuntimeError(f"only {len(labels.arrivals)} of {n} labels arrived")
        times = sorted(labels.arrivals[i] for i in ids)
    finally:
        labels.close()
    return (n - 1) / (times[-1] - times[0])


def _pct(values: Sequence[float], q: float) -> float:
    value = percentile(values, q)  # the node's telemetry's percentile (common/stats.py)
    assert value is not None, "no latency samples"
    return value


def _fixed_rate(link: _Link, topics: str, tweets: BenchTweets, rate: float, seconds: float, rng):
    """Offer ``rate`` tweets/s; latency = label arrival - publish call, both here."""
    n = max(2, int(rate * seconds))
    batch = _payloads(tweets, uuid.uuid4().hex[:8], n, rng)
    labels = _Labels(link, f"{topics}/labels")
    pub = _publisher(link)
    sent: dict[str, float] = {}
    start = time.perf_counter()
    for k, (tweet_id, body) in enumerate(batch):
        due = start + k / rate
        while (delay := due - time.perf_counter()) > 0:
            time.sleep(delay)
        sent[tweet_id] = time.perf_counter()
        pub.publish(f"{topics}/tweets", body, qos=1)
    complete = labels.wait_all(set(sent), timeout=120)
    pub.disconnect()
    pub.loop_stop()
    labels.close()
    warm = [tweet_id for tweet_id, _ in batch][int(rate) :] or [batch[-1][0]]  # skip 1 s
    lat = sorted((labels.arrivals[i] - sent[i]) * 1000 for i in warm if i in labels.arrivals)
    internal = sorted(labels.records[i]["latency_ms"] for i in warm if i in labels.records)
    if not lat:
        raise RuntimeError("no label arrived during the fixed-rate run")
    return {
        "complete": complete,
        "p50_ms": _pct(lat, 50),
        "p95_ms": _pct(lat, 95),
        "p99_ms": _pct(lat, 99),
        "max_ms": lat[-1],
        "node_internal_p50_ms": _pct(internal, 50) if internal else None,
        "node_internal_p99_ms": _pct(internal, 99) if internal else None,
    }


def run_broker_bench(
    cfg: BrokerBenchConfig, tweets: BenchTweets, progress: Progress = lambda _: None
) -> dict[str, Any]:
    """The end-to-end row (see the module doc); a JSON-ready dict."""
    cfg.threads = cfg.threads or serving_threads()
    rng = random.Random(0)
    classifier = Classifier.from_path(cfg.model, variant=cfg.variant, num_threads=cfg.threads)
    inputs = [e for e in encode_all(classifier, tweets.texts, tweets.entities) if e is not None]
    work = Path(tempfile.mkdtemp(prefix="repedge-bench-"))
    broker: Mosquitto | None = None
    if cfg.broker == "local":
        broker = start_mosquitto(work / "broker")
        endpoint = BrokerEndpoint(broker.host, broker.port)
    else:  # the node's own parser: mqtt://, mqtts:// (with cafile), credentials
        endpoint = BrokerEndpoint.parse(cfg.broker, cfg.username, cfg.password, cfg.cafile)
    link = _Link(endpoint)
    run_id = uuid.uuid4().hex[:8]
    topics = f"bench/{run_id}"
    node = _NodeProcess(cfg, link, f"bench-{run_id}", topics, work)
    bare, e2e, rates = [], [], []
    try:
        node.start()  # creates the persistent session the backlog is queued in
        for r in range(cfg.repeats):
            progress(f"broker: repeat {r + 1}/{cfg.repeats}: bare, saturation, {cfg.rate:g}/s")
            bare.append(
                saturation_throughput(
                    classifier, inputs, cfg.tweets, cfg.max_batch, cfg.max_batch_tokens, r
                )
            )
            e2e.append(_saturation(node, link, topics, tweets, cfg.tweets, rng))
            rates.append(_fixed_rate(link, topics, tweets, cfg.rate, cfg.seconds, rng))
    finally:
        node.stop()
        if broker is not None:
            broker.stop()

    med = statistics.median
    result = {
        "broker": "private Mosquitto on loopback" if broker is not None else cfg.broker,
        "model": classifier.bundle.identity(),
        "settings": {
            "threads": cfg.threads,
            "max_batch": cfg.max_batch,
            "max_batch_tokens": cfg.max_batch_tokens,
            "tweets_per_saturation_run": cfg.tweets,
            "rate_per_s": cfg.rate,
            "seconds": cfg.seconds,
            "repeats": cfg.repeats,
        },
        "bare_tweets_per_s": {"runs": bare, "median": med(bare)},
        "e2e_saturation_tweets_per_s": {"runs": e2e, "median": med(e2e)},
        "saturation_ratio": med(e2e) / med(bare),
        "fixed_rate": {
            "rate_per_s": cfg.rate,
            "runs": rates,
            "p50_ms": med(r["p50_ms"] for r in rates),
            "p95_ms": med(r["p95_ms"] for r in rates),
            "p99_ms": med(r["p99_ms"] for r in rates),
        },
        "node_idle_rss_mib": node.idle_rss / 2**20,
        "node_peak_rss_mib": node.peak_rss / 2**20,
        "targets": TARGETS,
        "logs": str(work),
    }
    result["meets_targets"] = {
        "saturation_ratio": result["saturation_ratio"] >= TARGETS["saturation_ratio_min"],
        "p99_ms": result["fixed_rate"]["p99_ms"] <= TARGETS["p99_ms_max"],
        "rss_mib": result["node_peak_rss_mib"] <= TARGETS["rss_mib_max"],
    }
    return result
