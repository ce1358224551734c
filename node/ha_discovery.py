"""Home Assistant MQTT discovery: a node shows up in Home Assistant as a device with sensors.

Home Assistant reads retained JSON configs on
``<discovery_prefix>/<component>/[<node_id>/]<object_id>/config`` (prefix ``homeassistant``),
where both ids may only use ``[a-zA-Z0-9_-]``. Each sensor here reads one flat field of
the node's telemetry (``repedge/nodes/<id>/telemetry``) or, for the model version, its
retained status; availability follows the status's ``state`` (``online``/``offline``,
the offline one being the node's Last Will). Home Assistant announces itself with
``online`` on ``homeassistant/status`` when it starts, and the node then publishes the
configs again, in case they were removed from the broker.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING, Any

from common import topics
from common.hass import object_id

if TYPE_CHECKING:
    from node.service import NodeService

DISCOVERY_PREFIX = topics.HA_DISCOVERY_PREFIX
HA_STATUS_TOPIC = topics.HA_STATUS
HA_ONLINE = b"online"


@dataclass(frozen=True)
class Sensor:
    key: str  # the object id's suffix: stable, it is part of unique_id
    name: str  # shown after the device name in Home Assistant
    value_template: str
    source: str = "telemetry"  # which node topic the value comes from: telemetry | status
    unit: str | None = None
    device_class: str | None = None
    state_class: str | None = "measurement"
    icon: str | None = None
    entity_category: str | None = None


def _field(name: str) -> str:
    # A null field renders as "None", which Home Assistant's MQTT sensor takes as unknown.
    return "{{ value_json." + name + " }}"


SENSORS: tuple[Sensor, ...] = (
    Sensor("throughput", "Throughput", _field("throughput_per_s"), unit="tweets/s",
           icon="mdi:speedometer"),
    Sensor("latency_p99", "Latency p99", _field("latency_p99_ms"), unit="ms",
           device_class="duration"),
    Sensor("queue_depth", "Queue depth", _field("queue_depth"), unit="tweets",
           icon="mdi:tray-full"),
    Sensor("rss", "Memory (RSS)", _field("rss_mib"), unit="MiB", device_class="data_size"),
    Sensor("cpu", "CPU", _field("cpu_percent"), unit="%", icon="mdi:cpu-64-bit"),
    Sensor("model_version", "Model version",
           "{{ value_json.model.version if value_json.model else None }}",
           source="status", state_class=None, icon="mdi:brain", entity_category="diagnostic"),
)  # fmt: skip


def sw_version() -> str:
    try:
        return metadata.version("repedge")
    except metadata.PackageNotFoundError:  # running from a source tree that is not installed
        return "unknown"


def config_topic(node_id: str, sensor: Sensor, prefix: str = DISCOVERY_PREFIX) -> str:
    node = object_id(node_id)
    # object_id = unique_id, as Home Assistant recommends; the node level groups a node's
    # configs (homeassistant/sensor/repedge_<id>/+/config).
    return f"{prefix}/sensor/{node}/{node}_{sensor.key}/config"


def sensor_config(
    node_id: str, sensor: Sensor, status_topic: str, telemetry_topic: str, version: str
) -> dict[str, Any]:
    """The discovery payload of one sensor (full key names, not the abbreviations)."""
    node = object_id(node_id)
    config: dict[str, Any] = {
        "name": sensor.name,
        "unique_id": f"{node}_{sensor.key}",
        "state_topic": status_topic if sensor.source == "status" else telemetry_topic,
        "value_template": sensor.value_template,
        "availability": [
            {
                "topic": status_topic,
                "value_template": "{{ value_json.state }}",
                "payload_available": "online",
                "payload_not_available": "offline",
            }
        ],
        "device": {
            "identifiers": [node],
            "name": f"repedge {node_id}",
            "model": "repedge edge node",
            "manufacturer": "repedge",
            "sw_version": version,
        },
        "origin": {"name": "repedge", "sw_version": version},
    }
    optional = {
        "unit_of_measurement": sensor.unit,
        "device_class": sensor.device_class,
        "state_class": sensor.state_class,
        "icon": sensor.icon,
        "entity_category": sensor.entity_category,
    }
    config.update({k: v for k, v in optional.items() if v is not None})
    return config


def discovery_messages(
    node_id: str,
    status_topic: str,
    telemetry_topic: str,
    prefix: str = DISCOVERY_PREFIX,
) -> list[tuple[str, str]]:
    """(topic, JSON payload) for every sensor; publish them retained, QoS 1."""
    version = sw_version()
    return [
        (
            config_topic(node_id, sensor, prefix),
            json.dumps(sensor_config(node_id, sensor, status_topic, telemetry_topic, version)),
        )
        for sensor in SENSORS
    ]


def is_ha_online(payload: bytes) -> bool:
    """Home Assistant's birth message on ``homeassistant/status``."""
    return payload.strip() == HA_ONLINE


def attach(service: NodeService, prefix: str = DISCOVERY_PREFIX) -> None:
    """Publish the configs on every (re)connect and on Home Assistant's birth message;
    call before ``start()``."""
    config = service.config

    def publishes() -> list[tuple[str, str, int, bool]]:
        messages = discovery_messages(
            config.node_id,
            config.node_topic(topics.STATUS),
            config.node_topic(topics.TELEMETRY),
            prefix,
        )
        return [(topic, payload, 1, True) for topic, payload in messages]

    def on_ha_status(topic: str, payload: bytes) -> None:
        # On paho's network thread, like the connect publishes.
        if is_ha_online(payload):
            for topic_, payload_, qos, retain in publishes():
                service.shell.publish(topic_, payload_, qos, retain)

    service.hooks.connect_publishes.append(publishes)
    # QoS 0: a birth missed while the node is away needs no queueing, since the node
    # publishes the configs on every reconnect anyway.
    service.hooks.subscriptions.append((f"{prefix}/status", 0, on_ha_status))
