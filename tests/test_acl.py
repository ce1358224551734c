"""Per-role access control and session binding, against a real Mosquitto with --auth.

Mosquitto 2.0 drops a refused publish silently (the publisher still gets its PUBACK), and its
acl file grants every SUBSCRIBE but delivers only what the user may read. So each lane is
checked from the other side: an admin watching ``#`` for what a user writes, and a user
subscribed to ``#`` for what the admin writes. A barrier (a QoS 1 publish of the receiver,
whose PUBACK Mosquitto sends after every message it queued for that receiver before) tells
when everything that was going to arrive has arrived.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from broker.config import BrokerConfig, render_config, write_config
from broker.roles import (
    SUBSCRIBE_RULES_FILE,
    RoleError,
    ha_object_prefix,
    read_roles,
    read_share_groups,
    render_acl,
    set_role,
)
from broker.users import add_user
from harness import WAIT_S, Collector, Mosquitto, start_mosquitto, wait_until

USERS = {
    "node1": "node",
    "node2": "node",
    "victim": "node",
    "feeder1": "feeder",
    "dash": "dashboard",
    "north": "site",
    "root": "admin",
}
# The share group each node user is registered with (`broker users add --share-group`).
GROUPS = {"node1": "workers", "node2": "pool"}


def password(name: str) -> str:
    return f"pw-{name}"


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    data_dir = tmp_path_factory.mktemp("acl-broker")
    config = BrokerConfig(data_dir=data_dir, auth=True)
    for name, role in USERS.items():
        add_user(config.password_file, name, password(name))
        set_role(data_dir, config.acl_file, name, role, GROUPS.get(name))
    broker = start_mosquitto(data_dir, auth=True)
    yield broker
    broker.stop()


class Client:
    """A connected MQTT 5 client of one user; records connect and subscribe results."""

    def __init__(
        self,
        broker: Mosquitto,
        user: str | None,
        client_id: str = "",
        clean_start: bool = True,
        on_message=None,
    ) -> None:
        self.connack = threading.Event()
        self.reason: mqtt.ReasonCode | None = None
        self.session_present = False
        self.granted: dict[int, list[mqtt.ReasonCode]] = {}
        self._suback = threading.Condition()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"c-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        if user is not None:
            self.client.username_pw_set(user, password(user))

        def on_connect(client, userdata, flags, reason_code, properties):
            self.reason = reason_code
            self.session_present = flags.session_present
            self.connack.set()

        def on_subscribe(client, userdata, mid, reason_codes, properties):
            with self._suback:
                self.granted[mid] = reason_codes
                self._suback.notify_all()

        self.client.on_connect = on_connect
        self.client.on_subscribe = on_subscribe
        if on_message is not None:
            self.client.on_message = on_message
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 0 if clean_start else 300
        self.client.connect(broker.host, broker.port, clean_start=clean_start, properties=props)
        self.client.loop_start()
        assert self.connack.wait(WAIT_S), "no CONNACK"

    @property
    def refused(self) -> bool:
        return self.reason is None or self.reason.is_failure

    def subscribe(self, topic: str) -> bool:
        """Subscribe; True if the broker granted it."""
        _, mid = self.client.subscribe(topic, options=SubscribeOptions(qos=1))
        with self._suback:
            assert self._suback.wait_for(lambda: mid in self.granted, WAIT_S), "no SUBACK"
        return not self.granted[mid][0].is_failure

    def publish(self, topic: str, payload: str, retain: bool = False) -> None:
        # wait_for_publish returns on the PUBACK whether or not the acl let it through.
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(WAIT_S)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def admin_watcher(broker: Mosquitto) -> Collector:
    return Collector(broker, ["#"], username="root", password=password("root"))


def barrier(client: mqtt.Client) -> None:
    """Return once every message the broker had queued for ``client`` has been handled."""
    client.publish("barrier", b"", qos=1).wait_for_publish(WAIT_S)


def writes_through(
    broker: Mosquitto, user: str, attempts: list[tuple[str, bool]], retain: bool = False
) -> None:
    """Publish to each topic as ``user``; exactly the allowed ones must reach the admin."""
    watcher = admin_watcher(broker)
    client = Client(broker, user)
    try:
        tag = uuid.uuid4().hex[:8]
        for topic, _ in attempts:
            client.publish(topic, f"{tag} {topic}", retain=retain)
        barrier(watcher.client)
        seen = {m.topic for m in watcher.messages if m.payload.startswith(tag.encode())}
        expected = {topic for topic, allowed in attempts if allowed}
        assert seen == expected, f"{user} wrote {sorted(seen)}, may write {sorted(expected)}"
    finally:
        client.close()
        watcher.close()
        if retain:  # leave no retained configs behind for the other tests
            admin = Client(broker, "root")
            for topic, _ in attempts:
                admin.publish(topic, "", retain=True)
            admin.close()


# A node may subscribe only to the filters a node uses (broker/roles.py): it reads through those.
NODE_FILTERS = ("#", "repedge/#", "repedge/tweets", "homeassistant/status")


def reads_through(
    broker: Mosquitto, user: str, attempts: list[tuple[str, bool]], filters=("#",)
) -> None:
    """The admin publishes to each topic; ``user``, subscribed to everything it may
    subscribe to of ``filters``, must get exactly the allowed ones."""
    received: list[mqtt.MQTTMessage] = []
    reader = Client(broker, user, on_message=lambda c, u, msg: received.append(msg))
    admin = Client(broker, "root")
    try:
        for topic_filter in filters:
            reader.subscribe(topic_filter)
        tag = uuid.uuid4().hex[:8]
        for topic, _ in attempts:
            admin.publish(topic, f"{tag} {topic}")
        barrier(reader.client)
        seen = {m.topic for m in received if m.payload.startswith(tag.encode())}
        expected = {topic for topic, allowed in attempts if allowed}
        assert seen == expected, f"{user} read {sorted(seen)}, may read {sorted(expected)}"
    finally:
        admin.close()
        reader.close()


def test_acl_has_no_catch_all_and_every_user_is_named(tmp_path: Path) -> None:
    text = render_acl(USERS)
    assert "pattern" not in text  # a pattern line applies to every user
    for name in USERS:
        assert f"user {name}\n" in text
    conf = render_config(BrokerConfig(data_dir=tmp_path, auth=True))
    assert "use_username_as_clientid true" in conf
    # An acl left by an older version (one catch-all line for everyone) does not survive
    # the next start; hand-written rules belong in acl.local, which does.
    config = BrokerConfig(data_dir=tmp_path / "old", auth=True)
    config.data_dir.mkdir()
    config.acl_file.write_text("pattern readwrite repedge/#\n")
    (config.data_dir / "acl.local").write_text("user extra\ntopic read extra/#\n")
    write_config(config)
    acl = config.acl_file.read_text()
    assert "pattern" not in acl and "topic read extra/#" in acl


def test_bad_role_or_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RoleError, match="unknown role"):
        set_role(tmp_path, tmp_path / "acl", "n1", "superuser")
    with pytest.raises(RoleError, match="invalid user name"):
        set_role(tmp_path, tmp_path / "acl", "n/1", "node")  # would widen a topic filter
    with pytest.raises(RoleError, match="invalid user name"):
        set_role(tmp_path, tmp_path / "acl", "#", "node")
    assert read_roles(tmp_path) == {}


def test_anonymous_clients_are_refused(broker: Mosquitto) -> None:
    assert Client(broker, None).refused
    assert not Client(broker, "node1").refused


def test_node_writes_only_its_own_records_and_status(broker: Mosquitto) -> None:
    writes_through(
        broker,
        "node1",
        [
            ("repedge/labels", True),
            ("repedge/errors", True),
            ("repedge/nodes/node1/status", True),
            ("repedge/nodes/node1/telemetry", True),
            ("repedge/nodes/node2/status", False),  # impersonating another node
            ("repedge/tweets", False),  # injecting tweets
            ("repedge/other", False),
            ("elsewhere", False),
        ],
    )


def test_node_publishes_only_its_own_discovery_configs(broker: Mosquitto) -> None:
    writes_through(
        broker,
        "node1",
        [
            ("homeassistant/sensor/repedge_node1/polarity/config", True),
            ("homeassistant/sensor/repedge_node2/polarity/config", False),
            ("homeassistant/light/kitchen/config", False),
        ],
        retain=True,
    )


def test_node_reads_tweets_and_its_own_topics_only(broker: Mosquitto) -> None:
    reads_through(
        broker,
        "node1",
        [
            ("repedge/tweets", True),
            ("homeassistant/status", True),
            ("repedge/nodes/node1/command", True),
            ("repedge/labels", False),  # other nodes' answers
            ("repedge/nodes/node2/status", False),
            ("homeassistant/sensor/kitchen/state", False),
            ("elsewhere", False),
        ],
        filters=(
            *NODE_FILTERS,
            "$share/workers/repedge/tweets",
            "repedge/nodes/node1/#",
            "repedge/nodes/+/status",
        ),
    )


def test_node_receives_tweets_through_a_share_group(broker: Mosquitto) -> None:
    received: list[bytes] = []
    got = threading.Event()

    def on_message(client, userdata, msg):
        received.append(msg.payload)
        got.set()

    node = Client(broker, "node2", on_message=on_message)
    feeder = Client(broker, "feeder1")
    try:
        node.subscribe("$share/pool/repedge/tweets")
        feeder.publish("repedge/tweets", "shared hello")
        assert got.wait(WAIT_S)
        assert received == [b"shared hello"]
    finally:
        feeder.close()
        node.close()


def test_feeder_only_writes_tweets(broker: Mosquitto) -> None:
    writes_through(
        broker,
        "feeder1",
        [
            ("repedge/tweets", True),
            ("repedge/labels", False),  # forging a label
            ("repedge/nodes/node1/status", False),
            ("homeassistant/sensor/repedge_node1/polarity/config", False),
        ],
    )
    reads_through(broker, "feeder1", [("repedge/tweets", False), ("repedge/labels", False)])


def test_dashboard_reads_and_writes_only_its_alerts(broker: Mosquitto) -> None:
    reads_through(
        broker,
        "dash",
        [
            ("repedge/labels", True),
            ("repedge/errors", True),
            ("repedge/nodes/node1/status", True),
            ("homeassistant/status", True),
            ("homeassistant/sensor/kitchen/state", False),
            ("elsewhere", False),
        ],
    )
    writes_through(
        broker,
        "dash",
        [
            ("repedge/tweets", False),
            ("repedge/labels", False),
            ("repedge/nodes/x/status", False),
            # The spike alerts it evaluates, and their Home Assistant discovery; no other.
            ("repedge/alerts/BMW", True),
            ("repedge/alerts/BMW/events", True),
            ("homeassistant/binary_sensor/repedge_alerts/BMW_spike/config", True),
            ("homeassistant/sensor/repedge_node1/repedge_node1_cpu/config", False),
        ],
    )


def test_site_bridge_writes_only_under_its_site(broker: Mosquitto) -> None:
    writes_through(
        broker,
        "north",
        [
            ("sites/north/repedge/labels", True),
            ("sites/north/repedge/nodes/pi/status", True),
            ("sites/south/repedge/labels", False),
            ("repedge/labels", False),
            ("repedge/tweets", False),
        ],
    )
    reads_through(
        broker,
        "north",
        [
            ("sites/north/repedge/tweets", True),
            ("repedge/tweets", True),  # shared among sites at the centre
            ("sites/south/repedge/tweets", False),
            ("sites/south/repedge/labels", False),
            ("repedge/labels", False),
        ],
    )


@pytest.mark.parametrize("attacker", ["feeder1", "node2"])
def test_takeover_of_a_node_session_is_refused(broker: Mosquitto, attacker: str) -> None:
    """Another user connecting with the node's client id (clean start) cannot wipe its queue."""
    node_client_id = "repedge-node-victim"
    node = Client(broker, "victim", client_id=node_client_id, clean_start=False)
    node.subscribe("repedge/tweets")
    node.close()  # offline: the broker queues tweets for its session

    feeder = Client(broker, "feeder1")
    tag = uuid.uuid4().hex[:8]
    for i in range(5):
        feeder.publish("repedge/tweets", f"{tag}-{i}")
    feeder.close()

    for client_id in (node_client_id, "victim"):  # the node's client id, and its user name
        intruder = Client(broker, attacker, client_id=client_id, clean_start=True)
        intruder.close()

    received: list[bytes] = []
    done = threading.Event()

    def on_message(client, userdata, msg):
        if msg.payload.startswith(tag.encode()):
            received.append(msg.payload)
            if len(received) == 5:
                done.set()

    node = Client(
        broker, "victim", client_id=node_client_id, clean_start=False, on_message=on_message
    )
    try:
        assert node.session_present, "the node's session was wiped"
        assert done.wait(WAIT_S), f"queued tweets lost: got {received}"
        assert received == [f"{tag}-{i}".encode() for i in range(5)]
    finally:
        node.close()


def share_dealt(broker: Mosquitto, member: str, intruder: str, group: str, n: int = 20) -> int:
    """``member`` and ``intruder`` subscribe to ``$share/<group>/repedge/tweets``; the admin
    sends ``n`` tweets (not a feeder: a user has one connection, its session is named after
    it). Returns how many of them reached ``member``."""
    tag = uuid.uuid4().hex[:8]
    received: list[bytes] = []
    all_in = threading.Event()

    def on_message(client, userdata, msg):
        if msg.payload.startswith(tag.encode()):
            received.append(msg.payload)
            if len(received) == n:
                all_in.set()

    real = Client(broker, member, on_message=on_message)
    rogue = Client(broker, intruder)
    feeder = Client(broker, "root")
    try:
        assert real.subscribe(f"$share/{group}/repedge/tweets"), f"{member} refused ${group}"
        rogue.subscribe(f"$share/{group}/repedge/tweets")
        for i in range(n):
            feeder.publish("repedge/tweets", f"{tag}-{i}")
        all_in.wait(WAIT_S)
        barrier(real.client)
        return len(received)
    finally:
        feeder.close()
        rogue.close()
        real.close()


@pytest.mark.parametrize(
    ("member", "intruder", "group"),
    [
        ("node1", "north", "workers"),  # a site's bridge in the nodes' group
        ("node1", "dash", "workers"),  # a dashboard (it reads repedge/#)
        ("node1", "feeder1", "workers"),  # a feeder: dealt tweets it may not read
        ("north", "node1", "repedge-sites"),  # a node in the sites' group
    ],
)
def test_nobody_takes_tweets_from_another_role_s_share_group(
    broker: Mosquitto, member: str, intruder: str, group: str
) -> None:
    got = share_dealt(broker, member, intruder, group)
    assert got == 20, f"{intruder} joined ${group} and took {20 - got} of 20 tweets from {member}"


@pytest.mark.parametrize(
    ("node", "node_filter", "tool_filter"),
    [
        ("node2", "$share/pool/repedge/tweets", "repedge/tweets"),
        ("node2", "$share/pool/repedge/tweets", "$share/other/repedge/tweets"),
        ("victim", "repedge/tweets", "#"),
        ("victim", "repedge/tweets", "repedge/+"),
        ("victim", "repedge/tweets", "$share/workers/repedge/tweets"),
    ],
)
def test_a_tool_with_a_node_s_credentials_cannot_double_its_tweets(
    broker: Mosquitto, node: str, node_filter: str, tool_filter: str
) -> None:
    """A tool logged in as the node, with a persistent session, shares the node's session
    (sessions are named after users): a filter it leaves there that also matches the tweets
    would deliver each tweet twice, and the node would label it twice."""
    tool = Client(broker, node, clean_start=False)
    assert tool.subscribe(node_filter)  # the node's own filter: the same subscription
    tool_filter_granted = tool.subscribe(tool_filter)
    tool.close()

    tag = uuid.uuid4().hex[:8]
    received: list[bytes] = []
    node_client = Client(
        broker,
        node,
        clean_start=False,
        on_message=lambda c, u, msg: received.append(msg.payload),
    )
    admin = Client(broker, "root")
    try:
        assert node_client.session_present
        assert node_client.subscribe(node_filter)
        for i in range(10):
            admin.publish("repedge/tweets", f"{tag}-{i}")
        wait_until(lambda: len(received) >= 10, what="10 tweets")
        barrier(node_client.client)
        assert sorted(received) == sorted(f"{tag}-{i}".encode() for i in range(10)), (
            f"the node got {len(received)} deliveries of 10 tweets after a tool left "
            f"{tool_filter} in its session"
        )
        assert not tool_filter_granted, f"{node} may subscribe {tool_filter}"
    finally:
        admin.close()
        node_client.client.unsubscribe(node_filter)
        node_client.close()


def test_colliding_node_ids_own_distinct_discovery_topics(tmp_path: Path) -> None:
    """Issue 20: node ``pi_1_4e59eb52`` wrote node ``pi.1``'s discovery config."""
    assert ha_object_prefix("pi.1") != ha_object_prefix("pi_1_4e59eb52")
    acl = render_acl({"pi.1": "node", "pi_1_4e59eb52": "node"})
    own = [line for line in acl.splitlines() if line.startswith("topic readwrite homeassistant/")]
    assert len(own) == 2 and len(set(own)) == 2
    # A node named like the alert sensors' object id would own their discovery topics.
    with pytest.raises(RoleError, match="alert sensors"):
        set_role(tmp_path, tmp_path / "acl", "alerts", "node")


def test_a_node_cannot_write_a_colliding_node_s_discovery_topic(broker: Mosquitto) -> None:
    """The real broker: node1 writes only its own object id's discovery topics, and the
    object id of a look-alike user name (``node1`` with a suffix) is a different one."""
    other = ha_object_prefix("node.1")
    writes_through(
        broker,
        "node1",
        [
            (f"homeassistant/sensor/{ha_object_prefix('node1')}/cpu/config", True),
            (f"homeassistant/sensor/{other}/cpu/config", False),
            ("homeassistant/binary_sensor/repedge_alerts/BMW_spike/config", False),
        ],
        retain=True,
    )


def test_share_groups_are_checked_and_remembered_per_node_user(tmp_path: Path) -> None:
    acl = tmp_path / "acl"
    with pytest.raises(RoleError, match="for node users"):
        set_role(tmp_path, acl, "north", "site", "workers")
    with pytest.raises(RoleError, match="sites' share group"):
        set_role(tmp_path, acl, "pi-1", "node", "repedge-sites")
    with pytest.raises(RoleError, match="invalid share group"):
        set_role(tmp_path, acl, "pi-1", "node", "a/#")
    set_role(tmp_path, acl, "pi-1", "node", "pis")
    set_role(tmp_path, acl, "pi-2", "node")
    assert read_roles(tmp_path) == {"pi-1": "node", "pi-2": "node"}
    assert read_share_groups(tmp_path) == {"pi-1": "pis"}
    rules = json.loads((tmp_path / SUBSCRIBE_RULES_FILE).read_text())
    filters = {
        role["rolename"]: [a["topic"] for a in role["acls"] if a["allow"]]
        for role in rules["roles"]
    }
    assert filters["subscribe-pi-1"][0] == "$share/pis/repedge/tweets"
    assert filters["subscribe-pi-2"][0] == "repedge/tweets"
    set_role(tmp_path, acl, "pi-1", "node")  # re-added without a group: the group is gone
    assert read_share_groups(tmp_path) == {}
