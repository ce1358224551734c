"""What the two broker durability benchmarks share (broker_durability.py, Mosquitto's
autosave settings; broker_durability_rabbitmq.py, RabbitMQ against Mosquitto): the tweets, a
QoS 1 publisher that records which were PUBACKed, the persistent subscriber ("sink") whose
session queues them, and the kill -9 trial. Not a benchmark itself.

The MQTT version is the caller's choice (``MqttVersion``): Mosquitto is measured with MQTT 5,
while RabbitMQ 3.10 (Debian 12's) speaks only 3.1.1, so its comparison runs both on 3.1.1.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

TOPIC = "repedge/tweets"
SINK_ID = "durability-sink"
HOST = "127.0.0.1"


class KillableBroker(Protocol):
    port: int

    def kill(self) -> None: ...

    def start(self) -> object: ...


@dataclass(frozen=True)
class MqttVersion:
    """How a client is made and connected: MQTT 5 (a session expiry keeps a persistent
    session) or 3.1.1 (``clean_session=False`` does)."""

    v5: bool = True

    def client(self, client_id: str = "", persistent: bool = False) -> mqtt.Client:
        if self.v5:
            return mqtt.Client(
                CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
            )
        return mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=not persistent,
            protocol=mqtt.MQTTv311,
        )  # fmt: skip

    def connect(self, client: mqtt.Client, port: int, persistent: bool = False) -> None:
        if not self.v5:
            client.connect(HOST, port)
            return
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600 if persistent else 0
        if persistent:
            client.connect(HOST, port, clean_start=False, properties=props)
        else:
            client.connect(HOST, port, properties=props)


MQTT5 = MqttVersion(v5=True)
MQTT311 = MqttVersion(v5=False)


def payload(run: str, i: int) -> bytes:
    text = f"tweet {i} of run {run}: the new phone from that brand is honestly not bad at all"
    return json.dumps({"id": f"{run}-{i}", "text": text, "entity": "Samsung"}).encode()


def sink(version: MqttVersion, port: int) -> mqtt.Client:
    """The persistent subscriber, connected and subscribed (QoS 1) before it returns."""
    client = version.client(SINK_ID, persistent=True)
    done = threading.Event()
    client.on_subscribe = lambda *a: done.set()
    client.on_connect = lambda c, *a: c.subscribe(TOPIC, qos=1)
    version.connect(client, port, persistent=True)
    client.loop_start()
    assert done.wait(30), "the sink could not subscribe"
    return client


def close(client: mqtt.Client) -> None:
    client.disconnect()
    client.loop_stop()


def make_sink_session(version: MqttVersion, port: int) -> None:
    """An offline persistent subscriber: the broker queues every tweet for it."""
    close(sink(version, port))


class Publisher:
    """Publishes a burst with 100 QoS 1 messages in flight; records which were PUBACKed."""

    def __init__(self, version: MqttVersion, port: int) -> None:
        self.client = version.client()
        self.client.max_inflight_messages_set(100)
        self.client.max_queued_messages_set(0)
        self.acked_count = 0
        # For the crash trials (bursts under 65,535 messages, so mids do not wrap).
        self.acked_mids: set[int] = set()
        self.mids: dict[int, int] = {}
        self.gone = threading.Event()
        self.client.on_publish = self._on_publish
        self.client.on_disconnect = lambda *a: self.gone.set()
        version.connect(self.client, port)
        self.client.loop_start()

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        if not reason_code.is_failure:
            self.acked_count += 1
            self.acked_mids.add(mid)

    def send(self, run: str, count: int) -> None:
        for i in range(count):
            if self.gone.is_set():
                return
            # paho keys unsent messages by their 16-bit mid: keep far fewer than 65,535
            # outstanding, or a large backlog fill overwrites its own queue.
            while i - self.acked_count >= 20_000 and not self.gone.is_set():
                time.sleep(0.001)
            self.mids[self.client.publish(TOPIC, payload(run, i), qos=1).mid] = i

    def acked(self) -> set[int]:
        return {self.mids[m] for m in list(self.acked_mids) if m in self.mids}

    def wait_acked(self, count: int, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while self.acked_count < count and time.monotonic() < deadline:
            time.sleep(0.001)

    def close(self) -> None:
        close(self.client)


def drain_sink(version: MqttVersion, port: int, run: str, idle_s: float) -> set[int]:
    """Reconnect the sink's session; the indexes of this run's tweets it receives until
    nothing came for ``idle_s``."""
    got: set[int] = set()
    last = [time.monotonic()]
    prefix = f'"id": "{run}-'.encode()

    def on_message(client, userdata, msg):
        last[0] = time.monotonic()
        start = msg.payload.find(prefix)
        if start >= 0:
            rest = msg.payload[start + len(prefix) :]
            got.add(int(rest[: rest.index(b'"')]))

    client = version.client(SINK_ID, persistent=True)
    client.on_message = on_message
    version.connect(client, port, persistent=True)
    client.loop_start()
    while time.monotonic() - last[0] < idle_s:
        time.sleep(0.1)
    close(client)
    return got


def crash_trial(
    version: MqttVersion,
    broker: KillableBroker,
    run: str,
    count: int,
    kill_after: int,
    drain_idle_s: float,
) -> dict[str, int]:
    """A burst into the sink's session; kill -9 after ``kill_after`` PUBACKs, restart on the
    same data, drain: lost = PUBACKed but never delivered."""
    publisher = Publisher(version, broker.port)
    sender = threading.Thread(target=publisher.send, args=(run, count), daemon=True)
    sender.start()
    publisher.wait_acked(kill_after)
    broker.kill()
    publisher.gone.wait(10)
    sender.join(30)
    publisher.client.loop_stop()
    acked = publisher.acked()
    broker.start()
    received = drain_sink(version, broker.port, run, drain_idle_s)
    return {"acked": len(acked), "lost": len(acked - received), "received": len(received)}
