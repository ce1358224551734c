"""The idle-and-slow-client attack on every HTTP server repedge runs, while tweets flow.

A real Mosquitto, a real node (``node start --metrics-port``) and a real ``dashboard
serve``, each under a 1,024 open-file limit (the default a unit without ``LimitNOFILE``
inherits). The dashboard first gets a busy hour (``prefill_records`` labels over 100
entities), so that a snapshot is as large as a real one. Against each server, in waves:
``idle`` sockets that connect and never send a byte, plus ``slow`` readers that send a
request (``/events`` for the dashboard, ``/metrics`` for the node) and never read the
answer. Meanwhile ``rate`` tweets/s are
published for ``seconds``; every tweet's label is timed from publish to arrival, and
``/healthz`` of both servers is probed once a second.

Used by tests/test_http_attack.py (asserts) and benchmarks/http_attack.py (reports).
"""

from __future__ import annotations

import json
import resource
import selectors
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from broker.local import Mosquitto
from common.mqttclient import connect, new_client
from common.ports import free_port
from harness.mqtt import Collector, publish
from harness.node import REPO, NodeProcess, Topics
from harness.waiting import WAIT_S, wait_until

SERVER_FD_LIMIT = 1024


def raise_fd_limit(need: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE to ``need`` (up to the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        soft = need if hard == resource.RLIM_INFINITY else min(need, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return soft


def cap_fds(pid: int, limit: int = SERVER_FD_LIMIT) -> None:
    """What a unit without LimitNOFILE gives a service: a soft limit of 1,024."""
    _, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (limit, hard))


@dataclass
class Peak:
    """Samples a process's RSS, threads and open files every 0.2 s."""

    pid: int
    rss: list[int] = field(default_factory=list)
    threads: list[int] = field(default_factory=list)
    fds: list[int] = field(default_factory=list)

    def sample(self) -> None:
        try:
            p = psutil.Process(self.pid)
            with p.oneshot():
                self.rss.append(p.memory_info().rss)
                self.threads.append(p.num_threads())
                self.fds.append(p.num_fds())
        except psutil.Error:
            pass

    def figures(self, baseline: Peak) -> dict[str, Any]:
        mib = 2**20
        return {
            "rss_mib_before": round(statistics.median(baseline.rss) / mib, 1),
            "rss_mib_peak": round(max(self.rss) / mib, 1),
            "threads_before": max(baseline.threads),
            "threads_peak": max(self.threads),
            "open_files_before": max(baseline.fds),
            "open_files_peak": max(self.fds),
        }


def _connect_all(port: int, count: int, rcvbuf: int | None) -> list[socket.socket]:
    socks = []
    for _ in range(count):
        sock = socket.socket()
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", port))
        socks.append(sock)
    return socks


def _established(socks: list[socket.socket], wait_s: float) -> int:
    """How many of ``socks`` completed their TCP handshake within ``wait_s``."""
    done = 0
    with selectors.DefaultSelector() as sel:
        for sock in socks:
            sel.register(sock, selectors.EVENT_WRITE)
        deadline = time.monotonic() + wait_s
        while sel.get_map() and (left := deadline - time.monotonic()) > 0:
            for key, _ in sel.select(min(left, 0.5)):
                sel.unregister(key.fileobj)
                sock = key.fileobj
                if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:  # type: ignore[union-attr]
                    done += 1
    return done


def open_wave(port: int, idle: int, slow: int, path: str) -> tuple[list[socket.socket], int, int]:
    """``idle`` sockets that say nothing and ``slow`` ones that ask for ``path`` and never
    read; returns the sockets, how many idle ones connected and how many slow requests
    could be sent."""
    quiet = _connect_all(port, idle, None)
    connected = _established(quiet, 5.0)
    readers = _connect_all(port, slow, 4096)
    sent = 0
    request = f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    with selectors.DefaultSelector() as sel:
        for sock in readers:
            sel.register(sock, selectors.EVENT_WRITE)
        deadline = time.monotonic() + 10
        pending = len(readers)
        while pending and time.monotonic() < deadline:
            for key, _ in sel.select(0.5):
                sel.unregister(key.fileobj)
                pending -= 1
                try:
                    key.fileobj.send(request)  # type: ignore[union-attr]
                    sent += 1
                except OSError:
                    pass  # refused or reset: the server's choice
    return quiet + readers, connected, sent


def healthz(port: int, timeout: float = 10.0) -> float | None:
    """Seconds for a complete ``200`` answer to ``/healthz``; None if none came."""
    started = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n")
            answer = b""
            while chunk := sock.recv(4096):
                answer += chunk
    except OSError:
        return None
    return time.monotonic() - started if answer.split(b" ", 2)[1:2] == [b"200"] else None


class Labels:
    """Times each tweet from publish to its label record."""

    def __init__(self, broker: Mosquitto, topics: Topics) -> None:
        self.sent: dict[str, float] = {}
        self._topics = topics
        self._sub = Collector(broker, [topics.labels, topics.errors])
        self._pub = new_client(broker.endpoint())
        self._pub.max_inflight_messages_set(1000)
        connect(self._pub, broker.endpoint())
        self._pub.loop_start()

    @property
    def errors(self) -> int:
        return len(self._sub.on(self._topics.errors))

    @property
    def received(self) -> dict[str, float]:
        """Tweet id -> when its first label record arrived."""
        first: dict[str, float] = {}
        for m in self._sub.on(self._topics.labels):
            first.setdefault(m.json().get("id"), m.at)
        return first

    def publish(self, rate: float, seconds: float, stop: threading.Event) -> None:
        interval = 1.0 / rate
        start = time.monotonic()
        for i in range(int(rate * seconds)):
            due = start + i * interval
            if stop.wait(max(0.0, due - time.monotonic())):
                return
            tweet_id = f"a{i}-{uuid.uuid4().hex[:6]}"
            self.sent[tweet_id] = time.monotonic()
            tweet = {"id": tweet_id, "text": f"the new phone {i} is great", "entity": "Volvo"}
            self._pub.publish(self._topics.tweets, json.dumps(tweet), qos=1)

    def latencies(self) -> list[float]:
        received = self.received
        return [received[t] - s for t, s in self.sent.items() if t in received]

    def close(self) -> None:
        self._sub.close()
        self._pub.disconnect()
        self._pub.loop_stop()


def prefill_topic(topics: Topics) -> str:
    return f"{topics.prefix}/prefill/labels"


def prefill(broker: Mosquitto, topics: Topics, port: int, records: int) -> int:
    """Give the dashboard a busy hour (``records`` labels over 100 entities) so that its
    snapshot is the size a real one reaches; returns the snapshot's size in bytes."""
    payloads = [
        json.dumps({
            "id": f"p{i}", "label": ("negative", "neutral", "positive")[i % 3],
            "entity": f"brand-{i % 100}", "node_id": "prefill", "latency_ms": 3.0,
            "scores": {"negative": 0.2, "neutral": 0.3, "positive": 0.5},
            "text": f"prefilled tweet number {i} about brand {i % 100}, " * 2,
        })
        for i in range(records)
    ]  # fmt: skip
    publish(broker, prefill_topic(topics), payloads)

    def state() -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET /api/state HTTP/1.1\r\nConnection: close\r\n\r\n")
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        return answer.split(b"\r\n\r\n", 1)[1]

    wait_until(
        lambda: json.loads(state())["labels_total"] >= records,
        interval=0.1,
        what="the prefill to arrive",
    )
    return len(state())


def start_dashboard(broker: Mosquitto, topics: Topics, state: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    args = [sys.executable, "-m", "dashboard", "serve", "--broker", broker.url,
            "--port", str(port), "--topic", topics.labels, "--topic", topics.errors,
            "--topic", "repedge/nodes/+/+", "--topic", prefill_topic(topics),
            "--db", str(state / "history.sqlite")]  # fmt: skip
    state.mkdir(parents=True, exist_ok=True)
    log = open(state / "dashboard.log", "ab")  # noqa: SIM115 - the child keeps it open
    process = subprocess.Popen(args, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    try:
        cap_fds(process.pid)
        wait_until(lambda: healthz(port, 1.0) is not None, interval=0.1, what="dashboard /healthz")
    except BaseException:
        process.kill()
        process.wait(WAIT_S)
        raise
    return process, port


def run(
    broker: Mosquitto,
    model: Path | None,
    work: Path,
    *,
    rate: float = 50.0,
    seconds: float = 20.0,
    idle: int = 2000,
    slow: int = 600,
    waves: int = 2,
    prefill_records: int = 2000,
) -> dict[str, Any]:
    """The whole scenario; returns the figures (see module docstring)."""
    raise_fd_limit(2 * (idle + slow) + 1024)
    topics = Topics(f"test/attack/{uuid.uuid4().hex[:6]}")
    metrics_port = free_port()
    node = NodeProcess(
        model=model, broker=broker, node_id=f"attack{uuid.uuid4().hex[:6]}", topics=topics,
        state_dir=work / "node" / "state",
        extra=["--metrics-port", str(metrics_port), "--no-ha-discovery"],
    )  # fmt: skip
    watcher = Collector(broker, [node.status_topic()])
    dashboard = None
    labels = None
    try:
        node.start()
        assert node.process is not None
        cap_fds(node.process.pid)
        watcher.wait_for(
            lambda msgs: any(not m.retain and m.json()["state"] == "online" for m in msgs),
            what=f"node online; log:\n{node.log()}",
        )
        wait_until(
            lambda: healthz(metrics_port, 1.0) is not None, interval=0.1, what="node /healthz"
        )
        dashboard, dashboard_port = start_dashboard(broker, topics, work / "dashboard")
        snapshot_bytes = prefill(broker, topics, dashboard_port, prefill_records)
        labels = Labels(broker, topics)
        procs = {"node": Peak(node.process.pid), "dashboard": Peak(dashboard.pid)}
        before = {name: Peak(p.pid) for name, p in procs.items()}
        for _ in range(5):
            for peak in before.values():
                peak.sample()
            time.sleep(0.2)

        stop = threading.Event()
        publisher = threading.Thread(target=labels.publish, args=(rate, seconds, stop))
        publisher.start()
        probes: dict[str, list[float | None]] = {"node": [], "dashboard": []}
        retried = {"node": 0, "dashboard": 0}
        held: list[socket.socket] = []
        slow_sent = {"node": 0, "dashboard": 0}
        idle_connected = {"node": 0, "dashboard": 0}
        targets = {"node": (metrics_port, "/metrics"), "dashboard": (dashboard_port, "/events")}
        wave_every = seconds / waves
        next_wave = time.monotonic()
        waves_done = 0
        while publisher.is_alive():
            if waves_done < waves and time.monotonic() >= next_wave:
                for sock in held:  # the previous wave goes; a fresh one takes its place
                    sock.close()
                held = []
                for name, (port, path) in targets.items():
                    socks, connected, sent = open_wave(port, idle, slow, path)
                    held += socks
                    idle_connected[name] += connected
                    slow_sent[name] += sent
                waves_done += 1
                next_wave += wave_every
            for name, (port, _) in targets.items():
                answer = healthz(port)
                if answer is None:
                    # At the connection cap a flood can evict a probe's connection before
                    # its request is read (the oldest without a request goes); a monitor
                    # retries such a dropped connection, and so does the probe, once.
                    retried[name] += 1
                    answer = healthz(port)
                probes[name].append(answer)
            for peak in procs.values():
                peak.sample()
            time.sleep(0.2)
        publisher.join()
        deadline = time.monotonic() + 30
        while len(labels.received) < len(labels.sent) and time.monotonic() < deadline:
            for peak in procs.values():
                peak.sample()
            time.sleep(0.2)
        for sock in held:
            sock.close()

        latencies = labels.latencies()
        answered = {n: [p for p in v if p is not None] for n, v in probes.items()}
        return {
            "tweets_sent": len(labels.sent),
            "labels_received": len(labels.received),
            "error_records": labels.errors,
            "label_latency_s": {
                "p50": round(statistics.median(latencies), 3) if latencies else None,
                "p99": round(sorted(latencies)[int(0.99 * (len(latencies) - 1))], 3)
                if latencies
                else None,
                "max": round(max(latencies), 3) if latencies else None,
            },
            "rate_per_s": rate,
            "seconds": seconds,
            "per_server": {
                "idle_sockets_per_wave": idle,
                "slow_readers_per_wave": slow,
                "waves": waves,
            },
            "idle_sockets_connected": idle_connected,
            "slow_requests_sent": slow_sent,
            "healthz": {
                name: {
                    "probes": len(probes[name]),
                    "answered": len(answered[name]),
                    "retried": retried[name],
                    "max_s": round(max(answered[name]), 3) if answered[name] else None,
                }
                for name in probes
            },
            "processes": {name: procs[name].figures(before[name]) for name in procs},
            "dashboard_snapshot_bytes": snapshot_bytes,
            "fd_limit_of_servers": SERVER_FD_LIMIT,
            "node_alive": node.alive(),
            "dashboard_alive": dashboard.poll() is None,
            "node_log_thread_deaths": node.log().count("thread died"),
        }
    finally:
        if labels is not None:
            labels.close()
        watcher.close()
        if dashboard is not None and dashboard.poll() is None:
            dashboard.terminate()
            dashboard.wait(WAIT_S)
        if node.alive():
            node.kill()
