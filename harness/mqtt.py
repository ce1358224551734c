"""Watching and feeding MQTT traffic in tests and benchmarks: a collector and a publisher."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.subscribeoptions import SubscribeOptions

from broker.local import Mosquitto
from common.endpoint import BrokerEndpoint
from common.mqttclient import connect, new_client
from harness.waiting import WAIT_S


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool
    at: float = 0.0  # time.monotonic() on arrival, for benchmarks that time labels

    def json(self) -> Any:
        return json.loads(self.payload)


def endpoint_of(broker: Mosquitto | BrokerEndpoint, **auth: str) -> BrokerEndpoint:
    """A test broker's endpoint (with ``username``/``password`` if given), or the endpoint
    itself: TLS and client certificates come with a BrokerEndpoint."""
    if isinstance(broker, BrokerEndpoint):
        return broker
    return broker.endpoint(auth.get("username"), auth.get("password"))


def subscriber(
    endpoint: BrokerEndpoint,
    topics: list[str],
    on_message: Callable[[mqtt.Client, Any, mqtt.MQTTMessage], None],
    client_id: str = "",
) -> mqtt.Client:
    """A running client subscribed (QoS 1) to ``topics`` before it is returned, so nothing
    published afterwards is missed; TimeoutError where the broker does not grant it."""
    subscribed = threading.Event()
    client = new_client(endpoint, client_id)
    client.on_connect = lambda c, *a: c.subscribe([(t, SubscribeOptions(qos=1)) for t in topics])
    client.on_subscribe = lambda *a: subscribed.set()
    client.on_message = on_message
    connect(client, endpoint)
    client.loop_start()
    if not subscribed.wait(WAIT_S):
        client.loop_stop()
        raise TimeoutError(f"could not subscribe to {topics}")
    return client


class Collector:
    """Subscribes (QoS 1) before returning and records every message it receives."""

    def __init__(self, broker: Mosquitto | BrokerEndpoint, topics: list[str], **auth: str) -> None:
        self.messages: list[Received] = []
        self._cond = threading.Condition()

        def on_message(client, userdata, msg):
            with self._cond:
                received = Received(msg.topic, msg.payload, msg.retain, time.monotonic())
                self.messages.append(received)
                self._cond.notify_all()

        self.client = subscriber(
            endpoint_of(broker, **auth), topics, on_message, f"collector-{uuid.uuid4().hex[:8]}"
        )

    def on(self, topic: str) -> list[Received]:
        with self._cond:
            return [m for m in self.messages if mqtt.topic_matches_sub(topic, m.topic)]

    def json(self, topic: str) -> list[Any]:
        return [m.json() for m in self.on(topic)]

    def wait_for(
        self, predicate: Callable[[list[Received]], Any], timeout: float = WAIT_S, what: str = ""
    ) -> Any:
        """Wait until ``predicate(messages)`` is truthy; return its value. Woken by each
        message rather than polled."""
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


def publish(
    broker: Mosquitto | BrokerEndpoint, topic: str, payloads: list[bytes | str], qos: int = 1
) -> None:
    """Publish and wait until the broker has acknowledged every message."""
    endpoint = endpoint_of(broker)
    publisher = new_client(endpoint)
    publisher.max_inflight_messages_set(100)
    connect(publisher, endpoint)
    publisher.loop_start()
    try:
        infos = [publisher.publish(topic, p, qos=qos) for p in payloads]
        for info in infos:
            info.wait_for_publish(WAIT_S)
    finally:
        publisher.disconnect()
        publisher.loop_stop()
