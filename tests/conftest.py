"""Shared fixtures: a real Mosquitto from repedge's own config, the tiny bundle, and
helpers to run `python -m node start` as a subprocess and watch MQTT traffic.

Fixture names are a contract with other test files: ``mosquitto`` (.host, .port,
.data_dir, .url) and ``tiny_bundle`` (a ModelBundle).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.subscribeoptions import SubscribeOptions

from broker.config import BrokerConfig, find_program, write_config
from common.endpoint import BrokerEndpoint

REPO = Path(__file__).resolve().parents[1]
# Generous: these bound a hang on a loaded 2-core machine, they do not measure speed.
WAIT_S = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(host: str, port: int, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port}")


@dataclass
class Mosquitto:
    host: str
    port: int
    data_dir: Path
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "mosquitto.log"

    def start(self, **config: Any) -> Mosquitto:
        conf = write_config(
            BrokerConfig(data_dir=self.data_dir, port=self.port, host=self.host, **config)
        )
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [find_program("mosquitto"), "-c", str(conf)], stdout=log, stderr=log
            )
        wait_for_port(self.host, self.port)
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()  # SIGTERM: Mosquitto saves its persistence file
            self.process.wait(WAIT_S)
        self.process = None


def start_mosquitto(data_dir: Path, port: int | None = None, **config: Any) -> Mosquitto:
    """A Mosquitto with repedge's config (see broker/config.py) on a free local port."""
    return Mosquitto("127.0.0.1", port or free_port(), data_dir).start(**config)


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    broker = start_mosquitto(tmp_path_factory.mktemp("mosquitto"))
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory):
    from trainer.tiny import build_tiny_bundle

    return build_tiny_bundle(tmp_path_factory.mktemp("tiny") / "bundle")


# -- MQTT helpers -------------------------------------------------------------------------


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool

    def json(self) -> Any:
        return json.loads(self.payload)


class Collector:
    """Subscribes (QoS 1) before returning and records every message it receives."""

    def __init__(self, broker: Mosquitto, topics: list[str], **auth: str) -> None:
        self.messages: list[Received] = []
        self._cond = threading.Condition()
        subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"collector-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        if auth:
            self.client.username_pw_set(auth["username"], auth["password"])

        def on_connect(client, userdata, flags, reason_code, properties):
            client.subscribe([(t, SubscribeOptions(qos=1)) for t in topics])

        def on_message(client, userdata, msg):
            with self._cond:
                self.messages.append(Received(msg.topic, msg.payload, msg.retain))
                self._cond.notify_all()

        self.client.on_connect = on_connect
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_message = on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        if not subscribed.wait(WAIT_S):
            raise TimeoutError(f"could not subscribe to {topics}")

    def on(self, topic: str) -> list[Received]:
        with self._cond:
            return [m for m in self.messages if mqtt.topic_matches_sub(topic, m.topic)]

    def json(self, topic: str) -> list[Any]:
        return [m.json() for m in self.on(topic)]

    def wait_for(
        self, predicate: Callable[[list[Received]], Any], timeout: float = WAIT_S, what: str = ""
    ) -> Any:
        """Wait until ``predicate(messages)`` is truthy; return its value."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                result = predicate(list(self.messages))
                if result:
                    return result
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"timed out waiting for {what or predicate}")
                self._cond.wait(min(remaining, 0.5))

    def wait_count(self, topic: str, count: int, timeout: float = WAIT_S) -> list[Received]:
        return self.wait_for(
            lambda msgs: (
                len([m for m in msgs if mqtt.topic_matches_sub(topic, m.topic)]) >= count
                and self.on(topic)
            ),
            timeout,
            f"{count} messages on {topic}",
        )

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def publish(broker: Mosquitto, topic: str, payloads: list[bytes | str], qos: int = 1) -> None:
    """Publish and wait until the broker has acknowledged every message."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(100)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        infos = [client.publish(topic, p, qos=qos) for p in payloads]
        for info in infos:
            info.wait_for_publish(WAIT_S)
    finally:
        client.disconnect()
        client.loop_stop()


# -- the node as a subprocess -------------------------------------------------------------


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
        "broker": BrokerEndpoint(mosquitto.host, mosquitto.port),
        "tweets_topic": topics.tweets,
        "labels_topic": topics.labels,
        "errors_topic": topics.errors,
        "state_dir": tmp_path / "state",
        "session_expiry_s": 60,
        "telemetry_interval_s": 60,
    }
    return NodeService(NodeConfig(**(settings | config)), classifier), topics


@pytest.fixture
def topics(request: pytest.FixtureRequest) -> Topics:
    return Topics(f"test/{request.node.name}/{uuid.uuid4().hex[:6]}")


@pytest.fixture
def node_factory(
    tmp_path: Path, topics: Topics, tiny_bundle, mosquitto: Mosquitto
) -> Iterator[Callable[..., NodeProcess]]:
    """Make NodeProcess objects (not started); every one left running is killed afterwards."""
    made: list[NodeProcess] = []

    def make(
        broker: Mosquitto | None = None, model: Path | None = None, extra: list[str] | None = None
    ) -> NodeProcess:
        node_id = f"t{uuid.uuid4().hex[:8]}"
        node = NodeProcess(
            model=model or tiny_bundle.root,
            broker=broker or mosquitto,
            node_id=node_id,
            topics=topics,
            state_dir=tmp_path / node_id / "state",
            extra=extra or [],
        )
        made.append(node)
        return node

    yield make
    for node in made:
        if node.alive():
            node.kill()
