"""Home Assistant MQTT discovery: the payloads, and a real node on a real Mosquitto."""

from __future__ import annotations

import json
import re
import uuid

import paho.mqtt.client as mqtt
import pytest
from jinja2.sandbox import SandboxedEnvironment

from broker.roles import rules_for
from harness import Collector, Received, publish
from node.ha_discovery import (
    DISCOVERY_PREFIX,
    HA_STATUS_TOPIC,
    SENSORS,
    discovery_messages,
    is_ha_online,
    object_id,
)

# <discovery_prefix>/<component>/[<node_id>/]<object_id>/config, ids in [a-zA-Z0-9_-].
TOPIC = re.compile(r"^homeassistant/sensor/[a-zA-Z0-9_-]+/[a-zA-Z0-9_-]+/config$")
REQUIRED = {"name", "unique_id", "state_topic", "value_template", "availability", "device"}


def check_config(topic: str, payload: str | bytes, node_id: str) -> dict:
    assert TOPIC.match(topic), topic
    config = json.loads(payload)
    assert set(config) >= REQUIRED
    assert topic.split("/")[3] == config["unique_id"]  # object id = unique id
    assert config["state_topic"] in (
        f"repedge/nodes/{node_id}/telemetry",
        f"repedge/nodes/{node_id}/status",
    )
    [availability] = config["availability"]
    assert availability == {
        "topic": f"repedge/nodes/{node_id}/status",
        "value_template": "{{ value_json.state }}",
        "payload_available": "online",
        "payload_not_available": "offline",
    }
    device = config["device"]
    assert set(device) >= {"identifiers", "name", "model", "manufacturer", "sw_version"}
    assert node_id in device["name"]
    return config


def test_one_config_per_sensor() -> None:
    messages = discovery_messages(
        "pi-1", "repedge/nodes/pi-1/status", "repedge/nodes/pi-1/telemetry"
    )
    configs = [check_config(topic, payload, "pi-1") for topic, payload in messages]
    assert len({c["unique_id"] for c in configs}) == len(SENSORS) == len(messages)
    by_name = {c["name"]: c for c in configs}
    assert set(by_name) >= {"Throughput", "Latency p99", "Queue depth", "Memory (RSS)", "CPU"}
    assert by_name["Latency p99"]["unit_of_measurement"] == "ms"
    assert by_name["Latency p99"]["device_class"] == "duration"
    assert by_name["Memory (RSS)"]["device_class"] == "data_size"
    assert by_name["Model version"]["state_topic"].endswith("/status")
    # One device for all of a node's sensors.
    assert len({json.dumps(c["device"], sort_keys=True) for c in configs}) == 1


@pytest.mark.parametrize("node_id", ["pi.kitchen", "nœud 1", "<b>x</b>", "a:b"])
def test_odd_node_ids_are_sanitized_in_topics_but_kept_in_names(node_id: str) -> None:
    status = f"repedge/nodes/{node_id}/status"
    for topic, payload in discovery_messages(node_id, status, f"repedge/nodes/{node_id}/x"):
        config = json.loads(payload)
        assert TOPIC.match(topic), topic
        assert config["device"]["name"] == f"repedge {node_id}"
        assert config["availability"][0]["topic"] == status


def test_sanitized_ids_stay_distinct() -> None:
    ids = ["pi.1", "pi_1", "pi 1", "pi-1"]
    assert len({object_id(i) for i in ids}) == len(ids)
    assert object_id("pi_1") == "repedge_pi_1"  # clean ids are kept as they are


@pytest.mark.parametrize("node_id", ["node1", "pi.kitchen"])
def test_a_node_users_acl_covers_its_discovery_topics(node_id: str) -> None:
    writable = [r.split()[-1] for r in rules_for(node_id, "node") if "write" in r.split()[1]]
    for topic, _payload in discovery_messages(node_id, "s", "t"):
        assert any(mqtt.topic_matches_sub(pattern, topic) for pattern in writable), topic
    if node_id == "pi.kitchen":  # "pi_kitchen" is another node, whose topics stay closed
        other = discovery_messages("pi_kitchen", "s", "t")[0][0]
        assert not any(mqtt.topic_matches_sub(pattern, other) for pattern in writable)


def test_birth_message() -> None:
    assert is_ha_online(b"online")
    assert not is_ha_online(b"offline")
    assert DISCOVERY_PREFIX == "homeassistant"


# -- a real node on a real Mosquitto ----------------------------------------------------


def render(template: str, payload: bytes) -> str:
    """A value_template evaluated the way Home Assistant does (Jinja2, value_json)."""
    env = SandboxedEnvironment()
    return env.from_string(template).render(value=payload.decode(), value_json=json.loads(payload))


def availability(config: dict, status: bytes) -> str:
    [avail] = config["availability"]
    state = render(avail["value_template"], status)
    assert state in (avail["payload_available"], avail["payload_not_available"])
    return "available" if state == avail["payload_available"] else "unavailable"


def fresh(topic_filter: str, mosquitto, count: int = 1) -> list[Received]:
    """What a subscriber arriving now gets: the retained messages."""
    late = Collector(mosquitto, [topic_filter])
    try:
        return late.wait_count(topic_filter, count)
    finally:
        late.close()


def test_node_is_discovered_and_availability_follows_its_status(
    node_factory, mosquitto, topics, tiny_bundle
) -> None:
    node = node_factory(extra=["--telemetry-interval", "0.5"])
    configs_filter = f"homeassistant/sensor/{object_id(node.node_id)}/+/config"
    status_topic = f"repedge/nodes/{node.node_id}/status"
    telemetry_topic = f"repedge/nodes/{node.node_id}/telemetry"
    watcher = Collector(
        mosquitto, [configs_filter, topics.labels, f"repedge/nodes/{node.node_id}/#"]
    )
    try:
        node.start_and_wait_online(watcher)
        watcher.wait_count(configs_filter, len(SENSORS))
        # Retained: Home Assistant (re)started later still finds every sensor.
        retained = fresh(configs_filter, mosquitto, len(SENSORS))
        assert len(retained) == len(SENSORS) and all(m.retain for m in retained)
        configs = [check_config(m.topic, m.payload, node.node_id) for m in retained]

        # Each template reads a real telemetry report / status as Home Assistant would.
        publish(mosquitto, topics.tweets, [f"lovely day {uuid.uuid4().hex[:6]}"])
        watcher.wait_count(topics.labels, 1)
        telemetry = watcher.wait_for(
            lambda msgs: [
                m for m in msgs if m.topic == telemetry_topic and m.json()["latency_p99_ms"]
            ],
            what="telemetry with a latency window",
        )[-1]
        [status] = fresh(status_topic, mosquitto)
        for config in configs:
            source = status if config["state_topic"] == status_topic else telemetry
            assert config["state_topic"] in (status_topic, telemetry_topic)
            shown = render(config["value_template"], source.payload)
            if config["name"] == "Model version":
                assert shown == tiny_bundle.identity()["version"]
            else:
                float(shown)  # a number, not "None" or a template error
            assert availability(config, status.payload) == "available"

        # Home Assistant's birth message makes the node publish its configs again.
        seen = len(watcher.on(configs_filter))
        publish(mosquitto, HA_STATUS_TOPIC, ["online"])
        watcher.wait_count(configs_filter, seen + len(SENSORS))

        # kill -9: the broker publishes the Last Will, and the sensors become unavailable.
        node.kill()
        watcher.wait_for(
            lambda msgs: any(
                m.topic == status_topic and m.json()["state"] == "offline" for m in msgs
            ),
            what="the Last Will",
        )
        [status] = fresh(status_topic, mosquitto)
        assert all(availability(c, status.payload) == "unavailable" for c in configs)
    finally:
        watcher.close()


def test_no_ha_discovery_publishes_nothing_under_homeassistant(node_factory, mosquitto) -> None:
    node = node_factory(extra=["--telemetry-interval", "0.5", "--no-ha-discovery"])
    telemetry_topic = f"repedge/nodes/{node.node_id}/telemetry"
    watcher = Collector(mosquitto, ["homeassistant/#", f"repedge/nodes/{node.node_id}/#"])
    try:
        node.start_and_wait_online(watcher)
        publish(mosquitto, HA_STATUS_TOPIC, ["online"])
        # Two telemetry reports after the birth message: the node has had time to answer it.
        seen = len(watcher.on(telemetry_topic))
        watcher.wait_count(telemetry_topic, seen + 2)
        ours = [
            m.topic
            for m in watcher.on("homeassistant/#")
            if object_id(node.node_id) in m.topic or node.node_id.encode() in m.payload
        ]
        assert ours == []
    finally:
        watcher.close()
