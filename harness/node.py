"""The node under test: `python -m node start` as a subprocess, or a NodeService in process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from broker.local import Mosquitto
from harness.mqtt import Collector
from harness.waiting import WAIT_S

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Topics:
    prefix: str

    @property
    def tweets(self) -> str:
        return f"{self.prefix}/tweets"

    @property
    def labels(self) -> str:
        return f"{self.prefix}/labels"

    @property
    def errors(self) -> str:
        return f"{self.prefix}/errors"


@dataclass
class NodeProcess:
    """`python -m node start ...`, with its own topics, node id and state folder."""

    model: Path | None
    broker: Mosquitto
    node_id: str
    topics: Topics
    state_dir: Path
    extra: list[str] = field(default_factory=list)
    process: subprocess.Popen | None = None
    starts: int = 0

    @property
    def log_path(self) -> Path:
        return self.state_dir.parent / f"{self.node_id}.log"

    def status_topic(self) -> str:
        return f"repedge/nodes/{self.node_id}/status"

    def args(self) -> list[str]:
        args = [sys.executable, "-m", "node", "start"]
        if self.model is not None:
            args += ["--model", str(self.model)]
        return [
            *args,
            "--broker", self.broker.url,
            "--node-id", self.node_id,
            "--state-dir", str(self.state_dir),
            "--tweets-topic", self.topics.tweets,
            "--labels-topic", self.topics.labels,
            "--errors-topic", self.topics.errors,
            "--threads", "1",
            # Short sessions: test nodes must not leave queues behind in the broker.
            "--session-expiry", "300",
            *self.extra,
        ]  # fmt: skip

    def start(self) -> NodeProcess:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.args(), cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env
            )
        self.starts += 1
        return self

    def start_and_wait_online(self, watcher: Collector) -> NodeProcess:
        """Start, then wait for a fresh "online" status (the node is subscribed by then)."""
        seen = len(watcher.on(self.status_topic()))
        self.start()
        watcher.wait_for(
            lambda msgs: any(
                m.json()["state"] == "online"
                for m in watcher.on(self.status_topic())[seen:]
                if not m.retain
            ),
            what=f"{self.node_id} online; log:\n{self.log()}",
        )
        return self

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.wait()

    def wait(self, timeout: float = WAIT_S) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def embedded_node(mosquitto: Mosquitto, tmp_path: Path, classifier, **config: Any):
    """A NodeService (not started) on its own topics, node id and state folder; settings
    for tests (short session expiry, quiet telemetry) that ``config`` may override."""
    from node.service import NodeConfig, NodeService

    topics = Topics(f"test/embedded/{uuid.uuid4().hex[:8]}")
    settings: dict[str, Any] = {
        "node_id": f"e{uuid.uuid4().hex[:8]}",
        "broker": mosquitto.endpoint(),
        "tweets_topic": topics.tweets,
        "labels_topic": topics.labels,
        "errors_topic": topics.errors,
        "state_dir": tmp_path / "state",
        "session_expiry_s": 60,
        "telemetry_interval_s": 60,
    }
    return NodeService(NodeConfig(**(settings | config)), classifier), topics
