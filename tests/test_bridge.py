"""A site broker bridged to a central broker: two real Mosquitto processes, a real node.

The centre is watched by a subscriber with a persistent session, as a fleet dashboard or
archiver would be: what the centre accepted while that subscriber was away still reaches it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from broker.bridge import BridgeConfig, BridgeError, parse_bridge_url, render_bridge
from broker.config import BrokerConfig, render_config
from common.mqttclient import new_client
from harness import (
    REPO,
    WAIT_S,
    Collector,
    Mosquitto,
    NodeProcess,
    Topics,
    free_port,
    holds_for,
    publish,
    start_mosquitto,
    wait_listening,
    wait_until,
)

OUTAGE_S = 30.0


def tweets(prefix: str, n: int) -> list[str]:
    return [json.dumps({"id": f"{prefix}{i}", "text": f"tweet number {i} about cars"})
            for i in range(n)]  # fmt: skip


class CentralArchive:
    """Subscriber at the centre with a fixed client id and a persistent session."""

    def __init__(self, broker: Mosquitto, topic: str) -> None:
        self.by_id: dict[str, set[bytes]] = defaultdict(set)
        self.deliveries = 0
        self._cond = threading.Condition()
        subscribed = threading.Event()
        self.client = new_client(
            broker.endpoint(), f"archive-{uuid.uuid4().hex[:8]}", max_reconnect_s=2
        )

        def on_connect(client, userdata, flags, reason_code, properties):
            if not flags.session_present:
                client.subscribe(topic, options=SubscribeOptions(qos=1))

        def on_message(client, userdata, msg):
            with self._cond:
                self.by_id[json.loads(msg.payload)["id"]].add(msg.payload)
                self.deliveries += 1
                self._cond.notify_all()

        self.client.on_connect = on_connect
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_message = on_message
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self.client.connect(broker.host, broker.port, clean_start=False, properties=props)
        self.client.loop_start()
        assert subscribed.wait(WAIT_S), "archive could not subscribe"

    def wait_ids(self, ids: set[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not ids <= self.by_id.keys():
                left = deadline - time.monotonic()
                missing = len(ids - self.by_id.keys())
                assert left > 0, f"{missing} of {len(ids)} labels never reached the centre"
                self._cond.wait(min(left, 0.5))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def site_node(site: Mosquitto, tiny_bundle, tmp_path: Path, name: str) -> NodeProcess:
    # Default topics: the bridge forwards repedge/labels, not the suite's test/... topics.
    return NodeProcess(
        model=tiny_bundle.root,
        broker=site,
        node_id=f"{name}-{uuid.uuid4().hex[:6]}",
        topics=Topics("repedge"),
        state_dir=tmp_path / name / "state",
    )


def wait_bridge_up(central: Mosquitto, site_name: str) -> None:
    # Mosquitto publishes 1 (retained) on the notification topic once the bridge is up.
    watcher = Collector(central, [f"sites/{site_name}/repedge/bridge/state"])
    try:
        watcher.wait_for(
            lambda msgs: any(m.payload == b"1" for m in msgs), what=f"bridge {site_name} up"
        )
    finally:
        watcher.close()


# -- rendering ----------------------------------------------------------------------------


def test_rendered_bridge_remaps_results_under_the_site_and_persists_its_queue(tmp_path):
    text = render_config(
        BrokerConfig(data_dir=tmp_path, bridge=BridgeConfig("mqtt://centre:1884", "north"))
    )
    bridge = text[text.index("connection ") :]  # bridge options come after everything else
    assert "address centre:1884" in bridge
    assert "bridge_protocol_version mqttv50" in bridge
    assert "cleansession false" in bridge and "local_cleansession false" in bridge
    assert 'topic repedge/labels out 1 "" sites/north/' in bridge
    assert 'topic repedge/errors out 1 "" sites/north/' in bridge
    assert 'topic repedge/nodes/# out 1 "" sites/north/' in bridge
    assert " in " not in bridge  # no tweets from the centre unless asked
    assert "persistence true" in text


def test_bridge_options_render_tls_credentials_and_central_feeds(tmp_path):
    ca = tmp_path / "ca.crt"
    text = render_bridge(
        BridgeConfig("mqtts://centre", "s1", "site1", "pw", cafile=ca, tweets_in="site")
    )
    assert "address centre:8883" in text
    assert f"bridge_cafile {ca.resolve()}" in text
    assert "remote_username site1" in text and "remote_password pw" in text
    assert 'topic repedge/tweets in 1 "" sites/s1/' in text
    assert "bridge_capath /etc/ssl/certs" in render_bridge(BridgeConfig("mqtts://c:1", "s1"))
    shared = render_bridge(BridgeConfig("mqtt://c", "s1", tweets_in="shared"))
    assert 'topic repedge/tweets in 1 "" $share/repedge-sites/' in shared
    # MQTT 5 bridges subscribe with No Local, a protocol error on a shared subscription.
    assert "bridge_protocol_version mqttv311" in shared and "try_private false" in shared
    v311 = render_bridge(BridgeConfig("mqtt://c", "s1", protocol="mqttv311"))
    assert "bridge_protocol_version mqttv311" in v311 and "try_private false" in v311


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"url": "http://centre", "site": "a"}, "mqtt://HOST:PORT"),
        ({"url": "mqtt://u:p@centre", "site": "a"}, "--bridge-user"),
        ({"url": "mqtt://centre:99999", "site": "a"}, "Port out of range"),
        ({"url": "mqtt://centre", "site": "a/b"}, "site name"),
        ({"url": "mqtt://centre", "site": ""}, "site name"),
        ({"url": "mqtt://centre", "site": "a", "username": "x\ny"}, "one non-empty line"),
        ({"url": "mqtt://centre", "site": "a", "password": "p"}, "needs a bridge user"),
        ({"url": "mqtt://centre", "site": "a", "tweets_in": "all"}, "choose one of"),
        ({"url": "mqtt://centre", "site": "a", "protocol": "mqttv31"}, "choose one of"),
    ],
)
def test_bad_bridge_options_are_refused_with_a_reason(kwargs, message):
    with pytest.raises(BridgeError, match=message):
        BridgeConfig(**kwargs)


def test_bridge_url_defaults_ports_by_scheme():
    assert parse_bridge_url("mqtt://c") == (False, "c", 1883)
    assert parse_bridge_url("mqtts://c") == (True, "c", 8883)
    assert parse_bridge_url("mqtt://[::1]:1999") == (False, "::1", 1999)


def test_broker_cli_refuses_a_site_without_a_bridge(tmp_path):
    from typer.testing import CliRunner

    from broker.cli import app

    result = CliRunner().invoke(
        app, ["start", "--dry-run", "--data-dir", str(tmp_path), "--site", "north"]
    )
    assert result.exit_code == 2
    assert "--bridge-to and --site go together" in result.output


# -- real brokers ---------------------------------------------------------------------------


@pytest.mark.slow
def test_labels_made_while_the_centre_is_down_all_arrive_once_it_is_back(tmp_path, tiny_bundle):
    central = start_mosquitto(tmp_path / "central")
    site = Mosquitto("127.0.0.1", free_port(), tmp_path / "site")
    node = site_node(site, tiny_bundle, tmp_path, "n1")
    archive = None
    try:
        site.start(bridge=BridgeConfig(central.url, "north"))
        archive = CentralArchive(central, "sites/north/repedge/labels")
        wait_bridge_up(central, "north")
        local = Collector(site, ["repedge/labels", node.status_topic()])
        node.start_and_wait_online(local)

        central.stop()
        down_since = time.monotonic()
        ids = {f"o{i}" for i in range(2000)}
        publish(site, "repedge/tweets", tweets("o", 2000))
        local.wait_for(
            lambda _: {r["id"] for r in local.json("repedge/labels")} >= ids,
            timeout=300,
            what="2,000 labels at the site",
        )
        local.close()
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down_since)))
        assert time.monotonic() - down_since >= OUTAGE_S

        central.start()
        archive.wait_ids(ids, timeout=300)
        assert set(archive.by_id) == ids
        changed = [i for i, payloads in archive.by_id.items() if len(payloads) > 1]
        assert changed == [], f"labels that arrived twice with different content: {changed[:5]}"
    finally:
        if archive is not None:
            archive.close()
        if node.alive():
            node.kill()
        site.stop()
        central.stop()


def test_queue_survives_a_site_broker_restart_during_the_outage(tmp_path, tiny_bundle):
    central = start_mosquitto(tmp_path / "central")
    site = Mosquitto("127.0.0.1", free_port(), tmp_path / "site")
    bridge = BridgeConfig(central.url, "south")
    node = site_node(site, tiny_bundle, tmp_path, "n2")
    archive = None
    try:
        site.start(bridge=bridge)
        archive = CentralArchive(central, "sites/south/repedge/labels")
        wait_bridge_up(central, "south")
        local = Collector(site, ["repedge/labels", node.status_topic()])
        node.start_and_wait_online(local)

        central.stop()
        first = {f"a{i}" for i in range(1000)}
        publish(site, "repedge/tweets", tweets("a", 1000))
        local.wait_for(lambda _: {r["id"] for r in local.json("repedge/labels")} >= first)
        local.close()

        # SIGTERM: Mosquitto writes its queues (the bridge's too) to its persistence file.
        site.stop()
        site.start(bridge=bridge)
        local = Collector(site, ["repedge/labels"])
        second = {f"b{i}" for i in range(1000)}
        publish(site, "repedge/tweets", tweets("b", 1000))  # the node reconnects by itself
        local.wait_for(lambda _: {r["id"] for r in local.json("repedge/labels")} >= second)
        local.close()

        central.start()
        archive.wait_ids(first | second, timeout=300)
        assert set(archive.by_id) == first | second
        assert all(len(payloads) == 1 for payloads in archive.by_id.values())
    finally:
        if archive is not None:
            archive.close()
        if node.alive():
            node.kill()
        site.stop()
        central.stop()


def test_a_central_feed_is_spread_over_sites_each_tweet_labelled_once(tmp_path, tiny_bundle):
    central = start_mosquitto(tmp_path / "central")
    sites = [Mosquitto("127.0.0.1", free_port(), tmp_path / name) for name in ("east", "west")]
    nodes = [site_node(s, tiny_bundle, tmp_path, f"n-{i}") for i, s in enumerate(sites)]
    watcher = None
    try:
        for site, name in zip(sites, ("east", "west"), strict=True):
            site.start(bridge=BridgeConfig(central.url, name, tweets_in="shared"))
            wait_bridge_up(central, name)
        for node, site in zip(nodes, sites, strict=True):
            local = Collector(site, [node.status_topic()])
            node.start_and_wait_online(local)
            local.close()
        watcher = Collector(central, ["sites/+/repedge/labels"])
        publish(central, "repedge/tweets", tweets("f", 400))
        watcher.wait_count("sites/+/repedge/labels", 400)
        # A tweet labelled at both sites would show up as a 401st record.
        holds_for(lambda: len(watcher.on("sites/+/repedge/labels")) == 400, 1.0, what="400")
        labels = watcher.on("sites/+/repedge/labels")
        records = [(m.topic.split("/")[1], m.json()["id"]) for m in labels]
        ids = [i for _, i in records]
        assert sorted(ids) == sorted(f"f{i}" for i in range(400))
        per_site = {name: sum(1 for s, _ in records if s == name) for name in ("east", "west")}
        assert all(count > 0 for count in per_site.values()), per_site
    finally:
        if watcher is not None:
            watcher.close()
        for node in nodes:
            if node.alive():
                node.kill()
        for site in sites:
            site.stop()
        central.stop()


# -- a clustered broker as the centre: RabbitMQ's MQTT plugin, where Debian's package is here ---

RABBITMQ_SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")


class RabbitMQ:
    """A private RabbitMQ node (own ports, own epmd, own files) with the MQTT plugin."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.mqtt_port, amqp, dist, self.epmd_port = (free_port() for _ in range(4))
        root.mkdir(parents=True)
        (root / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = {amqp}\nmqtt.listeners.tcp.default = {self.mqtt_port}\n"
            "mqtt.allow_anonymous = true\nloopback_users = none\n"
        )
        (root / "enabled_plugins").write_text("[rabbitmq_mqtt].\n")
        self.env = {
            **os.environ,
            "HOME": str(root),  # the Erlang cookie goes here
            "RABBITMQ_NODENAME": f"t{uuid.uuid4().hex[:8]}@localhost",
            "RABBITMQ_MNESIA_BASE": str(root / "mnesia"),
            "RABBITMQ_LOG_BASE": str(root / "log"),
            "RABBITMQ_CONFIG_FILE": str(root / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(root / "enabled_plugins"),
            "RABBITMQ_DIST_PORT": str(dist),
            "ERL_EPMD_PORT": str(self.epmd_port),
        }
        self.process: subprocess.Popen | None = None

    def start(self) -> RabbitMQ:
        with open(self.root / "out.log", "ab") as log:
            self.process = subprocess.Popen(
                [str(RABBITMQ_SERVER)], env=self.env, stdout=log, stderr=log,
                start_new_session=True,
            )  # fmt: skip
        wait_listening("127.0.0.1", self.mqtt_port, 180)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(WAIT_S)
        # The epmd this node started on its private port would outlive it.
        subprocess.run(
            ["epmd", "-port", str(self.epmd_port), "-kill"], capture_output=True, check=False
        )


@pytest.mark.skipif(not RABBITMQ_SERVER.exists(), reason="rabbitmq-server is not installed")
def test_a_site_bridges_to_rabbitmq_over_mqtt_3_1_1(tmp_path, tiny_bundle):
    # Debian 12's RabbitMQ is 3.10: MQTT 3.1.1 only, hence --bridge-protocol mqttv311.
    rabbit = RabbitMQ(tmp_path / "rabbit").start()
    site = Mosquitto("127.0.0.1", free_port(), tmp_path / "site")
    node = site_node(site, tiny_bundle, tmp_path, "n-r")
    received: list[mqtt.MQTTMessage] = []
    subscribed = threading.Event()
    centre = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id="archive", protocol=mqtt.MQTTv311,
        clean_session=False,
    )  # fmt: skip
    centre.on_connect = lambda c, *a: c.subscribe("sites/+/repedge/labels", qos=1)
    centre.on_subscribe = lambda *a: subscribed.set()
    centre.on_message = lambda c, u, msg: received.append(msg)
    try:
        centre.connect("127.0.0.1", rabbit.mqtt_port)
        centre.loop_start()
        assert subscribed.wait(WAIT_S)
        site.start(bridge=BridgeConfig(f"mqtt://127.0.0.1:{rabbit.mqtt_port}", "north",
                                       protocol="mqttv311"))  # fmt: skip
        local = Collector(site, [node.status_topic()])
        node.start_and_wait_online(local)
        local.close()
        publish(site, "repedge/tweets", tweets("r", 300))
        wait_until(
            lambda: len({json.loads(m.payload)["id"] for m in received}) >= 300,
            timeout=120,
            what="300 labels at RabbitMQ",
        )
        assert {m.topic for m in received} == {"sites/north/repedge/labels"}
    finally:
        centre.disconnect()
        centre.loop_stop()
        if node.alive():
            node.kill()
        site.stop()
        rabbit.stop()


# -- the fleet demo: one command, a centre and two bridged sites with two nodes each -----------


@pytest.mark.slow
def test_fleet_demo_brings_every_label_to_the_centre(tmp_path):
    base = free_port()
    env = {
        **os.environ,
        "REPEDGE_FLEET_PORT": str(base),
        "REPEDGE_FLEET_STATE": str(tmp_path / "fleet"),
    }
    out, err = tmp_path / "demo.out", tmp_path / "demo.err"
    with open(out, "w") as stdout, open(err, "w") as stderr:
        # Its own session: whatever happens, the whole demo can be killed as one group.
        demo = subprocess.Popen(
            ["bash", str(REPO / "scripts" / "fleet-demo.sh"), "--once"],
            cwd=REPO, env=env, stdout=stdout, stderr=stderr, start_new_session=True,
        )  # fmt: skip
    try:
        assert demo.wait(600) == 0, err.read_text()[-2000:]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(demo.pid, signal.SIGKILL)
    lines = out.read_text().splitlines()
    summary = [line for line in lines if "labels reached the centre" in line]
    assert summary == ["14 labels reached the centre (14 tweets sent)"], "\n".join(lines[-30:])
    rows = [line.split() for line in lines if line.startswith(("north ", "south "))]
    assert {row[1] for row in rows} == {"north-1", "north-2", "south-1", "south-2"}
    assert all(row[1].startswith(row[0]) for row in rows)  # each site's labels, its own nodes
    for port in (base, base + 1, base + 2):  # torn down
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
