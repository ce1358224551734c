"""Does `dashboard serve` keep up with 1,000 labels/s, with a browser watching?

One run, through a real Mosquitto: label records (6 entities, some with `related`, 1 %
errors, telemetry from 4 nodes every 5 s) published at --rate for --seconds into
`dashboard serve`, with headless Chromium showing the page. Sampled every second:

* CPU share (% of one core) of the dashboard process, Mosquitto and the browser
  (all its processes); an idle phase before the load gives each one's baseline;
* the browser's update rate (redraws/s, from the page's own counter) and the label count
  the page shows against the count acknowledged by the broker;
* ingest lag: messages published but not yet counted by the dashboard (backlog), and the
  age of the newest record when the dashboard counted it (records carry their publish time).

Falling behind shows as a backlog that grows over the run, and as drain time after the
publisher stops. With history (issue 17) the dashboard also writes every label into its
database; ``--history off,sqlite,postgresql`` runs the same load once per setting, one
after the other in one invocation, so the figures sit side by side (PostgreSQL: a local
server from Debian's package, started by harness/postgres.py). After each run the history's
total is checked against the labels counted.

Run:  python benchmarks/dashboard_load.py [--rate 1000 --seconds 60 --history off,sqlite]
A table goes to stdout, everything to --out (JSON).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from common.endpoint import BrokerEndpoint  # noqa: E402
from common.mqttclient import new_client  # noqa: E402
from common.timestamps import utc_now  # noqa: E402
from dashboard.headless import missing_reason, open_browser  # noqa: E402
from harness import WAIT_S, free_port, start_mosquitto, wait_listening  # noqa: E402
from harness.postgres import PostgresServer  # noqa: E402

ENTITIES = ["Volvo", "BMW", "Toyota", "Ryanair", "Santander", None]  # None: "sentiment"
LABELS = ["negative", "neutral", "positive"]
NODES = ["edge-1", "edge-2", "edge-3", "edge-4"]


def label_record(i: int, rng: random.Random) -> bytes:
    entity = rng.choice(ENTITIES)
    scores = [rng.random() for _ in LABELS]
    total = sum(scores)
    record = {
        "id": f"bench-{i}",
        "label": LABELS[max(range(3), key=scores.__getitem__)],
        "scores": {k: round(v / total, 6) for k, v in zip(LABELS, scores, strict=True)},
        "model": {"name": "repedge-polarity", "version": "1.1.0", "variant": "int8"},
        "node_id": NODES[i % len(NODES)],
        "latency_ms": round(rng.uniform(3, 40), 3),
        "timestamp": utc_now(),
    }
    if entity:
        record["entity"] = entity
        if i % 2:
            record["related"] = rng.random() < 0.8
            record["related_score"] = round(rng.random(), 4)
    return json.dumps(record, separators=(",", ":")).encode()


class Publisher(threading.Thread):
    """Offers `rate` messages/s at QoS 1, paced every 10 ms, and counts broker acks."""

    def __init__(self, port: int, rate: float, seconds: float) -> None:
        super().__init__(daemon=True)
        self.rate, self.seconds = rate, seconds
        self.acked = 0
        self.sent_labels = 0
        self.sent_errors = 0
        self._lock = threading.Lock()
        self.client = new_client(BrokerEndpoint("127.0.0.1", port))
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.client.on_publish = self._on_publish
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.label_acks = 0
        self._label_mids: set[int] = set()

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._lock:
            self.acked += 1
            if mid in self._label_mids:
                self._label_mids.discard(mid)
                self.label_acks += 1

    def run(self) -> None:
        rng = random.Random(0)
        start = time.perf_counter()
        next_telemetry = start
        i = 0
        while (elapsed := time.perf_counter() - start) < self.seconds:
            due = int(elapsed * self.rate)
            while i < due:
                if i % 100 == 99:
                    error = {"id": f"bench-{i}", "reason": rng.choice(["too_large", "bad_field"])}
                    self.client.publish("repedge/errors", json.dumps(error), qos=1)
                    self.sent_errors += 1
                else:
                    info = self.client.publish("repedge/labels", label_record(i, rng), qos=1)
                    with self._lock:
                        self._label_mids.add(info.mid)
                    self.sent_labels += 1
                i += 1
            if time.perf_counter() >= next_telemetry:
                next_telemetry += 5
                for node in NODES:
                    telemetry = {
                        "node_id": node,
                        "throughput_per_s": self.rate / len(NODES),
                        "latency_ms": {"p50": 8.0, "p99": 30.0},
                        "queue_depth": rng.randint(0, 20),
                        "cpu_percent": 80.0,
                        "rss_bytes": 90_000_000,
                    }
                    self.client.publish(f"repedge/nodes/{node}/telemetry", json.dumps(telemetry))
            time.sleep(0.01)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class CpuMeter:
    """CPU seconds of a set of processes (and their children) between two reads."""

    def __init__(self, roots: list[int]) -> None:
        self.roots = roots
        self.last = self._total()
        self.last_t = time.perf_counter()

    def _total(self) -> float:
        total = 0.0
        for pid in self.roots:
            try:
                root = psutil.Process(pid)
                for proc in [root, *root.children(recursive=True)]:
                    t = proc.cpu_times()
                    total += t.user + t.system
            except psutil.Error:
                continue
        return total

    def share(self) -> float:
        """% of one core since the previous call."""
        now_total, now_t = self._total(), time.perf_counter()
        share = 100 * (now_total - self.last) / max(1e-9, now_t - self.last_t)
        self.last, self.last_t = now_total, now_t
        return share


def api_state(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/state", timeout=10) as r:
        return json.load(r)


PAGE = """return {renders: window.repedgeStats.renders, errors: window.repedgeStats.errors,
  labels: Number(document.getElementById('labels-total').textContent)}"""


def sample_phase(seconds, meters, driver, port, publisher=None) -> list[dict]:
    samples = []
    page_before = driver.execute_script(PAGE)
    for meter in meters.values():
        meter.share()
    t0 = time.perf_counter()
    for second in range(int(seconds)):
        time.sleep(max(0.0, t0 + second + 1 - time.perf_counter()))
        page = driver.execute_script(PAGE)
        state = api_state(port)
        sample = {name: round(meter.share(), 1) for name, meter in meters.items()}
        sample["renders_per_s"] = page["renders"] - page_before["renders"]
        sample["page_labels"] = page["labels"]
        sample["dashboard_labels"] = state["labels_total"]
        sample["lag_ms"] = state["lag_ms"]
        if publisher is not None:
            sample["acked_labels"] = publisher.label_acks
            sample["backlog"] = publisher.label_acks - state["labels_total"]
            sample["page_behind"] = publisher.label_acks - page["labels"]
        samples.append(sample)
        page_before = page
    return samples


def median(samples: list[dict], key: str) -> float:
    values = [s[key] for s in samples if s.get(key) is not None]
    return round(statistics.median(values), 1) if values else float("nan")


def history_total(db: str) -> int:
    from dashboard.history import HistoryStore

    store = HistoryStore(db)
    try:
        return sum(store.entities().values())
    finally:
        store.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="messages/s offered")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the load phase")
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of idle baseline")
    parser.add_argument("--push-interval", type=float, default=0.5)
    parser.add_argument(
        "--history",
        default="sqlite",
        help="comma-separated: off, sqlite, postgresql (one run each, side by side)",
    )
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "dashboard_load.json")
    args = parser.parse_args()
    if reason := missing_reason():
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    kinds = [k.strip() for k in args.history.split(",") if k.strip()]
    if not kinds or set(kinds) - {"off", "sqlite", "postgresql"}:
        print("--history: off, sqlite and/or postgresql", file=sys.stderr)
        return 2
    results = {kind: run(args, kind) for kind in kinds}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results if len(results) > 1 else results[kinds[0]], indent=1))
    if len(results) > 1:
        print("\nside by side (medians per second under load):")
        print(f"{'':<34}" + "".join(f"{k:>12}" for k in results))
        for key in ("dashboard_cpu", "mosquitto_cpu", "browser_cpu", "renders_per_s"):
            print(
                f"{key:<34}" + "".join(f"{r['median'][key]['load']:>12}" for r in results.values())
            )
        for key in (
            "counted_labels_per_s",
            "dashboard_cpu_per_1000_labels_s",
            "backlog_median",
            "lag_ms_median",
            "drain_s",
            "labels_counted",
            "history_total",
        ):
            print(f"{key:<34}" + "".join(f"{r.get(key)!s:>12}" for r in results.values()))
    print(f"JSON: {args.out}")
    return 0


def run(args: argparse.Namespace, history: str) -> dict:
    """One load run with the dashboard's history off, on SQLite, or on PostgreSQL."""
    print(f"\n== history: {history} ==", flush=True)
    work = Path(tempfile.mkdtemp(prefix="repedge-dashboard-bench-"))
    postgres = None
    if history == "postgresql":
        postgres = PostgresServer().start()
        db_args = ["--db", postgres.url]
    elif history == "sqlite":
        db_args = ["--db", str(work / "history.sqlite3")]
    else:
        db_args = ["--no-history"]
    broker = start_mosquitto(work / "broker")
    mqtt_port, http_port = broker.port, free_port()
    log = open(work / "processes.log", "ab")  # noqa: SIM115
    dashboard = None
    driver = None
    publisher = None
    try:
        dashboard = subprocess.Popen(
            [sys.executable, "-m", "dashboard", "serve", "--broker", f"mqtt://127.0.0.1:{mqtt_port}",
             "--port", str(http_port), "--push-interval", str(args.push_interval), *db_args],
            cwd=REPO, stdout=log, stderr=log,
        )  # fmt: skip
        wait_listening("127.0.0.1", http_port, WAIT_S, dashboard)
        driver = open_browser(work / "chromium-profile")
        driver.get(f"http://127.0.0.1:{http_port}/")
        time.sleep(2)
        meters = {
            "dashboard_cpu": CpuMeter([dashboard.pid]),
            "mosquitto_cpu": CpuMeter([broker.process.pid]),
            "browser_cpu": CpuMeter([driver.service.process.pid]),
        }
        print(f"idle baseline, {args.idle:.0f} s ...", flush=True)
        idle = sample_phase(args.idle, meters, driver, http_port)
        publisher = Publisher(mqtt_port, args.rate, args.seconds)
        print(f"load: {args.rate:.0f} messages/s for {args.seconds:.0f} s ...", flush=True)
        publisher.start()
        load = sample_phase(args.seconds, meters, driver, http_port, publisher)
        publisher.join()
        stop = time.perf_counter()
        drain_s = None
        while time.perf_counter() - stop < 60:
            if api_state(http_port)["labels_total"] >= publisher.sent_labels:
                drain_s = round(time.perf_counter() - stop, 2)
                break
            time.sleep(0.05)
        final = api_state(http_port)
        page = driver.execute_script(PAGE)
        shot = work / "dashboard_load.png"
        driver.save_screenshot(str(shot))
    finally:
        if publisher is not None:
            publisher.close()
        if driver is not None:
            driver.quit()
        if dashboard is not None and dashboard.poll() is None:
            dashboard.terminate()
            dashboard.wait(30)
        broker.stop()
        log.close()
    # The dashboard flushed on SIGTERM: its database must hold every label it counted.
    total = None if history == "off" else history_total(db_args[1])
    if postgres is not None:
        postgres.stop()

    steady = load[len(load) // 6 :]  # skip the first seconds (connection, first bursts)
    half = len(steady) // 2
    result = {
        "machine": f"{platform.machine()}, {psutil.cpu_count()} CPUs, {platform.node()}",
        "when": utc_now(),
        "rate": args.rate,
        "seconds": args.seconds,
        "history": history,
        "history_total": total,
        "history_status_at_end": final.get("history"),
        "push_interval_s": args.push_interval,
        "labels_sent": publisher.sent_labels,
        "errors_sent": publisher.sent_errors,
        "labels_counted": final["labels_total"],
        "errors_counted": final["errors_total"],
        "drain_s": drain_s,
        "page_labels_at_end": page["labels"],
        "page_script_errors": page["errors"],
        "median": {
            key: {"idle": median(idle, key), "load": median(steady, key)}
            for key in ("dashboard_cpu", "mosquitto_cpu", "browser_cpu", "renders_per_s")
        },
        "lag_ms_median": median(steady, "lag_ms"),
        "lag_ms_max": max((s["lag_ms"] or 0) for s in steady),
        "backlog_median": median(steady, "backlog"),
        "backlog_max": max(s["backlog"] for s in steady),
        "backlog_first_half_median": median(steady[:half], "backlog"),
        "backlog_second_half_median": median(steady[half:], "backlog"),
        "page_behind_median": median(steady, "page_behind"),
        "acked_labels_per_s": round(
            (steady[-1]["acked_labels"] - steady[0]["acked_labels"]) / max(1, len(steady) - 1), 1
        ),
        "counted_labels_per_s": round(
            (steady[-1]["dashboard_labels"] - steady[0]["dashboard_labels"])
            / max(1, len(steady) - 1),
            1,
        ),
        "screenshot": str(shot),
        "idle": idle,
        "load": load,
    }
    m = result["median"]
    # A busy machine may not let the publisher reach the rate: CPU per 1,000 labels/s
    # actually counted compares runs that got different rates.
    result["dashboard_cpu_per_1000_labels_s"] = round(
        1000 * m["dashboard_cpu"]["load"] / max(1.0, result["counted_labels_per_s"]), 1
    )
    print(f"\n{result['machine']}; {args.rate:.0f} msg/s offered for {args.seconds:.0f} s")
    print(f"{'median per second':<34}{'idle':>10}{'load':>10}")
    for key, title in [
        ("dashboard_cpu", "dashboard CPU (% of a core)"),
        ("mosquitto_cpu", "Mosquitto CPU (% of a core)"),
        ("browser_cpu", "Chromium CPU (% of a core)"),
        ("renders_per_s", "page redraws per second"),
    ]:
        print(f"{title:<34}{m[key]['idle']:>10}{m[key]['load']:>10}")
    print(f"labels acked by the broker per s   {result['acked_labels_per_s']}")
    print(
        f"labels counted per s               {result['counted_labels_per_s']}"
        f" (dashboard CPU per 1,000/s: {result['dashboard_cpu_per_1000_labels_s']} %)"
    )
    print(
        f"backlog (acked - counted), median  {result['backlog_median']}"
        f" (1st half {result['backlog_first_half_median']},"
        f" 2nd half {result['backlog_second_half_median']}, max {result['backlog_max']})"
    )
    print(f"newest record's age when counted   median {result['lag_ms_median']} ms,"
          f" max {result['lag_ms_max']} ms")  # fmt: skip
    print(f"page behind the broker, median     {result['page_behind_median']} labels")
    print(
        f"counted {result['labels_counted']}/{result['labels_sent']} labels,"
        f" {result['errors_counted']}/{result['errors_sent']} errors; drained {drain_s} s"
        f" after the publisher stopped; page script errors {page['errors']}"
    )
    if result["acked_labels_per_s"] < 0.9 * args.rate * 0.99:  # 1 % of messages are errors
        print(
            "WARNING: the publisher did not reach the offered rate (machine too busy?): this "
            "run measures the publisher, not the dashboard"
        )
    if total is not None:
        print(f"history total {total} (labels counted {result['labels_counted']})")
    return result


if __name__ == "__main__":
    raise SystemExit(main())
