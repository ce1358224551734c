"""A durable broker for the node: RabbitMQ's MQTT plugin against Mosquitto under kill -9.

Issue 20 item 7. Mosquitto 2.0 sends a PUBACK before it saves the message, so a crash loses
what arrived since its last autosave (docs/broker.md: at most 100 tweets with repedge's
settings). RabbitMQ's MQTT plugin publishes a QoS 1 message as persistent into the durable
queue of each persistent session and sends the PUBACK once the queue has confirmed it. This
runs the same crash trial against both, in one run, with MQTT 3.1.1 clients (RabbitMQ 3.10,
Debian 12's, speaks no MQTT 5):

* a persistent subscriber (``clean_session=False``, QoS 1) subscribes and goes away;
* a publisher sends a burst of QoS 1 tweets (100 in flight); after a random 25-75 % of them
  were PUBACKed, the broker is killed with SIGKILL (its whole process group), restarted on the
  same data folder, and the subscriber's session drained: lost = PUBACKed but never delivered;
* throughput: tweets/s until the last PUBACK of a burst, the subscriber offline (its queue
  fills) and online (connected and acking), medians of --trials.

RabbitMQ runs unprivileged in a temporary folder on free ports (its own RABBITMQ_* settings,
its own epmd port). ``--queue-type quorum`` sets ``mqtt.durable_queue_type`` (quorum
queues; the default is classic durable queues). Without rabbitmq-server (``apt-get install
rabbitmq-server``) the script says so and exits 0.

Run:  python benchmarks/broker_durability_rabbitmq.py [--burst 5000] [--trials 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from durability_trial import (  # noqa: E402  (its neighbour in benchmarks/)
    MQTT311,
    Publisher,
    close,
    crash_trial,
    make_sink_session,
    sink,
)

from broker.local import Mosquitto  # noqa: E402
from common.ports import free_port, wait_listening  # noqa: E402

RABBITMQ_SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")


class RabbitMQ:
    """A private RabbitMQ with the MQTT plugin: free ports, data in ``base``."""

    def __init__(self, base: Path, queue_type: str = "classic") -> None:
        self.base = base
        self.port = free_port()
        self.epmd_port = free_port()
        self.process: subprocess.Popen | None = None
        base.mkdir(parents=True, exist_ok=True)
        conf = [
            f"listeners.tcp.default = {free_port()}",
            f"mqtt.listeners.tcp.default = {self.port}",
            "mqtt.allow_anonymous = true",
        ]
        if queue_type != "classic":
            conf.append(f"mqtt.durable_queue_type = {queue_type}")
        (base / "rabbitmq.conf").write_text("\n".join(conf) + "\n")
        (base / "enabled_plugins").write_text("[rabbitmq_mqtt].\n")
        self.env = {
            **os.environ,
            "HOME": str(base),  # the Erlang cookie
            "RABBITMQ_HOME": str(RABBITMQ_SERVER.parents[1]),
            "RABBITMQ_NODENAME": f"bench{self.port}@localhost",
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(base / "pid"),
            "RABBITMQ_DIST_PORT": str(free_port()),
            "ERL_EPMD_PORT": str(self.epmd_port),
        }

    def start(self) -> RabbitMQ:
        with open(self.base / "server.log", "ab") as log:
            self.process = subprocess.Popen(
                [str(RABBITMQ_SERVER)], env=self.env, stdout=log, stderr=log,
                start_new_session=True,  # its own process group: kill -9 takes the Erlang VM too
            )  # fmt: skip
        wait_listening("127.0.0.1", self.port, 180, self.process)
        return self

    def _signal_group(self, sig: int) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            self.process.wait(120)
        self.process = None

    def kill(self) -> None:
        self._signal_group(signal.SIGKILL)

    def stop(self) -> None:
        self._signal_group(signal.SIGTERM)

    def close(self) -> None:
        """Stop the broker and the epmd it started (its own port, so only ours)."""
        self.stop()
        epmd = shutil.which("epmd") or "/usr/lib/erlang/bin/epmd"
        subprocess.run([epmd, "-kill"], env=self.env, capture_output=True, check=False)


def burst_rate(port: int, run: str, count: int, online: bool) -> float:
    """Tweets/s until the last PUBACK, the sink connected (``online``) or not."""
    subscriber = sink(MQTT311, port) if online else None
    publisher = Publisher(MQTT311, port)
    start = time.perf_counter()
    publisher.send(run, count)
    publisher.wait_acked(count)
    elapsed = time.perf_counter() - start
    publisher.close()
    if subscriber is not None:
        close(subscriber)
    assert len(publisher.acked_mids) == count, f"{len(publisher.acked_mids)} of {count} acked"
    return count / elapsed


def measure(key: str, name: str, make: Callable[[Path], object], args, root: Path) -> dict:
    rng = random.Random(f"{key}-{args.seed}")
    offline, online, trials = [], [], []
    for r in range(args.trials):
        broker = make(root / f"{key}-tp{r}")
        try:
            make_sink_session(MQTT311, broker.port)
            online.append(burst_rate(broker.port, f"o{r}", args.burst, online=True))
            offline.append(burst_rate(broker.port, f"e{r}", args.burst, online=False))
        finally:
            getattr(broker, "close", broker.stop)()
    for r in range(args.trials):
        broker = make(root / f"{key}-crash{r}")
        try:
            kill_after = rng.randrange(args.burst // 4, args.burst * 3 // 4)
            make_sink_session(MQTT311, broker.port)
            trials.append(
                crash_trial(MQTT311, broker, f"c{r}", args.burst, kill_after, args.drain_idle)
            )
        finally:
            getattr(broker, "close", broker.stop)()
    row = {
        "broker": name,
        "tweets_per_s_subscriber_online": round(statistics.median(online)),
        "tweets_per_s_subscriber_offline": round(statistics.median(offline)),
        "crash_trials": trials,
        "lost_max": max(t["lost"] for t in trials),
    }
    lost = ", ".join(f"{t['lost']} of {t['acked']}" for t in trials)
    print(f"| {name} | {row['tweets_per_s_subscriber_online']:,} "
          f"| {row['tweets_per_s_subscriber_offline']:,} | {lost} |", flush=True)  # fmt: skip
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--burst", type=int, default=5000)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--seed", type=int, default=20)
    # After the restart the sink takes what arrives until nothing came for this long (a
    # quorum queue may need a while to elect its leader again).
    parser.add_argument("--drain-idle", type=float, default=5.0)
    parser.add_argument("--queue-type", default="classic", choices=["classic", "quorum"])
    parser.add_argument(
        "--out", type=Path, default=REPO / "docs" / "broker_durability_rabbitmq.json"
    )
    args = parser.parse_args()
    if not RABBITMQ_SERVER.exists():
        print(f"skipped: {RABBITMQ_SERVER} missing (apt-get install -y rabbitmq-server)")
        return
    version = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "rabbitmq-server"],
                             capture_output=True, text=True).stdout  # fmt: skip
    root = Path(tempfile.mkdtemp(prefix="durability-rmq-"))
    print("| broker | tweets/s, subscriber online | offline (queued) | PUBACKed lost to kill -9 |")
    print("|---|---|---|---|")
    try:
        rows = [
            measure(
                "mosquitto",
                "Mosquitto, autosave every 100 changes",
                lambda d: Mosquitto("127.0.0.1", free_port(), d).start(),
                args,
                root,
            ),
            measure(
                "rabbitmq",
                f"RabbitMQ {version} MQTT, {args.queue_type} durable queue",
                lambda d: RabbitMQ(d, args.queue_type).start(),
                args,
                root,
            ),
        ]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    result = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, shared with other jobs",
        "burst": args.burst,
        "trials": args.trials,
        "drain_idle_s": args.drain_idle,
        "rows": rows,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
