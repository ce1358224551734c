"""Home Assistant MQTT discovery: the payloads, and a real node on a real Mosquitto."""

from __future__ import annotations

import json
import re

import pytest

from node.ha_discovery import (
    DISCOVERY_PREFIX,
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


def test_birth_message() -> None:
    assert is_ha_online(b"online")
    assert not is_ha_online(b"offline")
    assert DISCOVERY_PREFIX == "homeassistant"
