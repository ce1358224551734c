"""Teaching on the node, measured: RSS with the text store full, and Adapt -> serving the new
head under a 50 tweets/s stream, with nothing lost or labelled twice.

A real Mosquitto (repedge's config) and `node start` subprocesses serving ``--model``
(default: the shipped models/default), fed RepLab 2013's automotive test tweets
(../shared/data/replab2013/automotive_en.tsv):

1. **RSS.** Two nodes, one after the other, get the same stream: ``--texts-per-entity 0``
   (nothing kept) and ``--texts-per-entity N`` (default 2000). The stream is
   ``--entities`` brands x N tweets (the brand's tweets, repeated with a counter once they
   run out), so the second node's store ends full. RSS (VmRSS) is sampled every 0.5 s
   while labelling and for 5 s after; the report gives the median and peak of each.
2. **Adapt.** On the second node: ``--labels`` gold labels of one brand are imported
   through the teach protocol, a 50 tweets/s stream of that brand starts, and an ``adapt``
   request is sent. Measured per repeat: request -> response (fit and swap), and request
   -> the first label record carrying the adapted model. After each repeat the node rolls
   back (so the next adapt starts from the same model). Every tweet of the stream must
   get exactly one label record. RSS (and its anonymous part, from smaps_rollup) is read
   when the stream is drained and again 5 s later, idle.

Run:  python benchmarks/teach_node.py [--model models/default] [--texts-per-entity 2000]
          [--entities 3] [--labels 200] [--repeats 3] [--out docs]
Writes OUT/teach_node.json and OUT/teach_node.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from broker.config import BrokerConfig, find_program, write_config  # noqa: E402
from common.endpoint import BrokerEndpoint  # noqa: E402
from common.mqttclient import new_client  # noqa: E402
from harness import free_port, subscriber  # noqa: E402
from node.teach_client import TeachClient  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "replab2013" / "automotive_en.tsv"
TWEETS, LABELS, ERRORS = "bench/tweets", "bench/labels", "bench/errors"
RATE = 50.0


def _proc_mib(pid: int, file: str, field: str) -> float | None:
    """``field`` (a kB line) of /proc/PID/``file`` in MiB; None once the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/{file}").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def rss_mib(pid: int) -> float | None:
    return _proc_mib(pid, "status", "VmRSS:")


def anon_mib(pid: int) -> float | None:
    """The anonymous (heap, interpreter buffers, packed weights) part of RSS; the rest is
    file-backed (libraries, the mapped model)."""
    return _proc_mib(pid, "smaps_rollup", "Anonymous:")


def idle_rss_after(pid: int, seconds: float) -> float | None:
    """RSS once the node has had ``seconds`` with nothing to label."""
    time.sleep(seconds)
    return rss_mib(pid)


def read_tweets() -> dict[str, list[dict[str, str]]]:
    by_entity: dict[str, list[dict[str, str]]] = {}
    with DATA.open(encoding="utf-8") as f:
        for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            by_entity.setdefault(row["entity"], []).append(row)
    return by_entity


class Records:
    """Label and error records by tweet id, with arrival times."""

    def __init__(self, port: int) -> None:
        self.by_id: dict[str, int] = {}
        self.first_model_at: dict[str, float] = {}
        self.lock = threading.Lock()
        self.client = subscriber(
            BrokerEndpoint("127.0.0.1", port), [LABELS, ERRORS], self._on_message
        )

    def _on_message(self, c, userdata, msg) -> None:
        record = json.loads(msg.payload)
        now = time.monotonic()
        with self.lock:
            self.by_id[record["id"]] = self.by_id.get(record["id"], 0) + 1
            version = (record.get("model") or {}).get("version")
            if version and version not in self.first_model_at:
                self.first_model_at[version] = now

    def count(self) -> int:
        with self.lock:
            return len(self.by_id)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def start_node(port: int, model: Path, state: Path, node_id: str, texts: int) -> subprocess.Popen:
    args = [sys.executable, "-m", "node", "start", "--model", str(model), "--node-id", node_id,
            "--broker", f"mqtt://127.0.0.1:{port}", "--state-dir", str(state),
            "--tweets-topic", TWEETS, "--labels-topic", LABELS, "--errors-topic", ERRORS,
            "--texts-per-entity", str(texts), "--no-ha-discovery",
            "--log-level", "warning"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(args, cwd=REPO, env=env)


def wait_online(port: int, node_id: str, timeout: float = 120) -> None:
    online = threading.Event()
    watch = new_client(BrokerEndpoint("127.0.0.1", port))
    watch.on_connect = lambda c, *a: c.subscribe(f"repedge/nodes/{node_id}/status", qos=1)
    watch.on_message = lambda c, u, m: (
        json.loads(m.payload).get("state") == "online" and not m.retain and online.set()
    )
    watch.connect("127.0.0.1", port)
    watch.loop_start()
    try:
        if not online.wait(timeout):
            raise RuntimeError(f"node {node_id} did not come online")
    finally:
        watch.disconnect()
        watch.loop_stop()


def publish_all(port: int, payloads: list[str], rate: float | None = None,
                stop: threading.Event | None = None) -> int:  # fmt: skip
    pub = new_client(BrokerEndpoint("127.0.0.1", port))
    pub.max_inflight_messages_set(200)
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    sent = 0
    next_at = time.monotonic()
    infos = []
    for payload in payloads:
        if stop is not None and stop.is_set():
            break
        infos.append(pub.publish(TWEETS, payload, qos=1))
        sent += 1
        if rate:
            next_at += 1 / rate
            time.sleep(max(0.0, next_at - time.monotonic()))
    for info in infos:
        info.wait_for_publish(60)
    pub.disconnect()
    pub.loop_stop()
    return sent


def count_sent(box: list[int], port: int, payloads: list[str], stop: threading.Event) -> None:
    box.append(publish_all(port, payloads, RATE, stop))


def fill_stream(by_entity, entities: list[str], per_entity: int) -> list[str]:
    payloads = []
    for entity in entities:
        rows = by_entity[entity]
        for i in range(per_entity):
            row = rows[i % len(rows)]
            text = row["text"] if i < len(rows) else f"{row['text']} #{i // len(rows)}"
            payloads.append(json.dumps({"id": f"f-{entity}-{i}", "text": text, "entity": entity}))
    return payloads


def sample_rss(pid: int, records: Records, total: int, settle_s: float = 5.0) -> list[float]:
    samples = []
    done_at = None
    deadline = time.monotonic() + 1800
    while time.monotonic() < deadline:
        value = rss_mib(pid)
        if value is not None:
            samples.append(value)
        if done_at is None and records.count() >= total:
            done_at = time.monotonic()
        if done_at is not None and time.monotonic() - done_at > settle_s:
            break
        time.sleep(0.5)
    return samples


def label_tsv(rows: list[dict[str, str]]) -> str:
    lines = ["id\tentity\tfiltering\tpolarity\ttext"]
    for r in rows:
        related = r["filtering"] == "RELATED"
        polarity = r["polarity"].lower() if related else ""
        if related and polarity not in ("negative", "neutral", "positive"):
            continue
        text = " ".join(r["text"].split())
        lines.append(f"{r['tweet_id']}\t{r['entity']}\t{r['filtering']}\t{polarity}\t{text}")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=REPO / "models" / "default")
    parser.add_argument("--texts-per-entity", type=int, default=2000)
    parser.add_argument("--entities", type=int, default=3)
    parser.add_argument("--labels", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--entity", default="BMW", help="The brand adapted.")
    parser.add_argument("--out", type=Path, default=REPO / "docs")
    args = parser.parse_args()
    if not DATA.exists():
        print(f"needs {DATA}", file=sys.stderr)
        return 2
    by_entity = read_tweets()
    entities = [args.entity] + [e for e in sorted(by_entity) if e != args.entity]
    entities = entities[: args.entities]
    tmp = Path(tempfile.mkdtemp(prefix="teach-bench-"))
    port = free_port()
    conf = write_config(BrokerConfig(data_dir=tmp / "broker", port=port, host="127.0.0.1"))
    broker = subprocess.Popen([find_program("mosquitto"), "-c", str(conf)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    time.sleep(0.5)
    result: dict = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": str(
            args.model.relative_to(REPO) if args.model.is_relative_to(REPO) else args.model
        ),
        "texts_per_entity": args.texts_per_entity,
        "entities": entities,
        "rss_mib": {},
    }
    node = None
    try:
        stream = fill_stream(by_entity, entities, args.texts_per_entity)
        for kept in (0, args.texts_per_entity):
            node_id = f"teach{kept}"
            node = start_node(port, args.model, tmp / node_id, node_id, kept)
            wait_online(port, node_id)
            records = Records(port)
            pump = threading.Thread(target=publish_all, args=(port, stream))
            started = time.monotonic()
            pump.start()
            samples = sample_rss(node.pid, records, len(stream))
            pump.join()
            seconds = time.monotonic() - started
            stored = 0
            db = tmp / node_id / "teach.sqlite"
            if db.exists():
                with sqlite3.connect(db) as con:
                    stored = con.execute("SELECT COUNT(*) FROM texts").fetchone()[0]
            result["rss_mib"][str(kept)] = {
                "median": round(statistics.median(samples), 1),
                "peak": round(max(samples), 1),
                "idle_after": round(samples[-1], 1),  # 5 s after the last label
                "anon_idle_after": round(anon_mib(node.pid) or 0.0, 1),
                "tweets": len(stream),
                "labelled": records.count(),
                "texts_kept": stored,
                "store_bytes": db.stat().st_size if db.exists() else 0,
                "seconds": round(seconds, 1),
            }
            print(f"texts-per-entity {kept}: {result['rss_mib'][str(kept)]}", flush=True)
            records.close()
            if kept:
                break  # the full node stays up for the adapt part
            node.terminate()
            node.wait(60)

        # -- adapt under a 50 tweets/s stream --------------------------------------------
        node_id = f"teach{args.texts_per_entity}"
        teacher = TeachClient(BrokerEndpoint.parse(f"mqtt://127.0.0.1:{port}"))
        gold = by_entity[args.entity][-args.labels * 2 :]  # the latest: a brand's current tweets
        imported = teacher.request(node_id, "import", tsv=label_tsv(gold[-args.labels :]))
        runs = []
        for repeat in range(args.repeats):
            records = Records(port)
            stop = threading.Event()
            texts = [row["text"] for row in by_entity[args.entity]]
            payloads = [json.dumps({"id": f"s{repeat}-{i}", "text": texts[i % len(texts)],
                                    "entity": args.entity}) for i in range(100_000)]  # fmt: skip
            sent_box: list[int] = []
            pump = threading.Thread(target=count_sent, args=(sent_box, port, payloads, stop))
            pump.start()
            time.sleep(3)
            before = set(records.first_model_at)
            t0 = time.monotonic()
            answer = teacher.request(node_id, "adapt", timeout=120, entity=args.entity)
            t_response = time.monotonic() - t0
            new_version = (answer.get("model") or {}).get("version")
            deadline = time.monotonic() + 300  # the stream's backlog is labelled first
            while answer["swapped"] and new_version not in records.first_model_at:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.01)
            t_serving = (
                records.first_model_at[new_version] - t0
                if new_version in records.first_model_at and new_version not in before
                else None
            )
            time.sleep(3)
            stop.set()
            pump.join()
            sent = sent_box[0]
            deadline = time.monotonic() + 300
            while records.count() < sent and time.monotonic() < deadline:
                time.sleep(0.1)
            with records.lock:
                doubled = sum(1 for n in records.by_id.values() if n > 1)
                labelled = len(records.by_id)
            runs.append({
                "swapped": answer["swapped"],
                "reason": answer["reason"],
                "summary": answer.get("summary", ""),
                "request_to_response_s": round(t_response, 2),
                "request_to_first_new_label_s": None if t_serving is None else round(t_serving, 2),
                "node_reported_s": answer.get("seconds"),
                "tweets_sent": sent,
                "tweets_labelled": labelled,
                "labelled_twice": doubled,
                "lost": sent - labelled,
                "node_rss_after_mib": rss_mib(node.pid),
                "node_anon_after_mib": anon_mib(node.pid),
                "node_rss_idle_5s_after_mib": idle_rss_after(node.pid, 5.0),
            })  # fmt: skip
            print(json.dumps(runs[-1]), flush=True)
            records.close()
            if answer["swapped"]:
                teacher.request(node_id, "rollback", timeout=60)
        teacher.close()
        result["adapt"] = {
            "entity": args.entity,
            "labels_imported": imported["added"],
            "stream_rate": RATE,
            "runs": runs,
        }
        result["rss_mib"]["full_after_adapt"] = rss_mib(node.pid)
        result["anon_mib_full_after_adapt"] = anon_mib(node.pid)
    finally:
        if node is not None:
            node.terminate()
            node.wait(60)
        broker.terminate()
        broker.wait(30)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "teach_node.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
