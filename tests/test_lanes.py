"""Every role against every lane, through a real Mosquitto with --auth (issue 20 item 2).

One broker per listener kind (plain MQTT, and TLS: the rules must not depend on the
listener), one connection per user (sessions are named after users). For
each role and lane: may the role publish there (the observer, an admin subscribed to ``#``,
sees it or not), may it receive from there (it subscribes to every filter it may, the
observer publishes), and may it join each share group of the tweets (the SUBACK). A
barrier (a QoS 1 publish of the receiver, whose PUBACK Mosquitto sends after everything it
queued for that receiver before) says when whatever was going to arrive has arrived.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.subscribeoptions import SubscribeOptions

from broker.certs import CA_CERT, make_certs
from broker.config import BrokerConfig
from broker.roles import ROLES, ha_object_prefix, set_role
from broker.users import add_user
from harness import WAIT_S, Mosquitto, start_mosquitto

# role under test -> (user, share group it is registered with)
USERS = {
    "node": ("pi-1", "workers"),
    "node-no-group": ("pi-2", None),
    "feeder": ("feed", None),
    "dashboard": ("board", None),
    "view": ("viewer", None),
    "teach": ("teacher", None),
    "site": ("north", None),
    "admin": ("ops", None),
}
OBSERVER = "root"  # an admin that watches and publishes

NODE = "pi-1"
EVERY = set(USERS)
DASHBOARDS = {"dashboard", "view", "teach"}
NODES = {"node", "node-no-group"}

# (lane, topic, roles that may publish there, roles that receive from there)
LANES = [
    ("tweets", "repedge/tweets", {"feeder", "admin"}, NODES | DASHBOARDS | {"site", "admin"}),
    ("labels", "repedge/labels", NODES | {"admin"}, DASHBOARDS | {"admin"}),
    ("errors", "repedge/errors", NODES | {"admin"}, DASHBOARDS | {"admin"}),
    ("own status", f"repedge/nodes/{NODE}/status", {"node", "admin"},
     {"node"} | DASHBOARDS | {"admin"}),
    ("teach request", f"repedge/nodes/{NODE}/teach/request", {"node", "teach", "admin"},
     {"node", "teach", "admin"}),
    ("teach response", f"repedge/nodes/{NODE}/teach/response/r1", {"node", "admin"},
     {"node", "teach", "admin"}),
    ("alerts", "repedge/alerts/BMW", {"dashboard", "teach", "admin"}, DASHBOARDS | {"admin"}),
    ("node discovery", f"homeassistant/sensor/{ha_object_prefix(NODE)}/cpu/config",
     {"node", "admin"}, {"admin"}),  # the acl lets the node read it; it may not subscribe
    ("alert discovery", "homeassistant/binary_sensor/repedge_alerts/BMW_spike/config",
     {"dashboard", "teach", "admin"}, {"admin"}),
    ("HA birth", "homeassistant/status", {"admin"}, NODES | DASHBOARDS | {"admin"}),
    ("site labels", "sites/north/repedge/labels", {"site", "admin"}, {"admin"}),
    ("site tweets", "sites/north/repedge/tweets", {"site", "admin"}, {"site", "admin"}),
    ("other site", "sites/south/repedge/labels", {"admin"}, {"admin"}),
    ("elsewhere", "elsewhere/x", {"admin"}, {"admin"}),
]  # fmt: skip

# (share group, roles that may join it)
SHARES = [("workers", {"node", "admin"}), ("repedge-sites", {"site", "admin"}),
          ("other", {"admin"})]  # fmt: skip

# Every filter a receiver tries; the broker refuses some of them for some roles. Only the
# node joins its share group: another member (the admin may join) would take half its tweets.
READ_FILTERS = ("#", f"repedge/nodes/{NODE}/#", "homeassistant/status", "repedge/tweets",
                "sites/north/repedge/tweets")  # fmt: skip
NODE_SHARE = "$share/workers/repedge/tweets"


class User:
    """One connected MQTT 5 client of one user, collecting what it receives."""

    def __init__(self, broker: Mosquitto, name: str, cafile: Path | None) -> None:
        self.name = name
        self.received: list[bytes] = []
        self.granted: dict[int, bool] = {}
        self._cond = threading.Condition()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv5)
        self.client.username_pw_set(name, f"pw-{name}")
        if cafile is not None:
            self.client.tls_set(ca_certs=str(cafile))
        connected = threading.Event()
        self.client.on_connect = lambda *a: connected.set()
        self.client.on_message = lambda c, u, msg: self.received.append(msg.payload)
        self.client.on_subscribe = self._on_subscribe
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert connected.wait(WAIT_S), f"{name}: no CONNACK"

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        with self._cond:
            self.granted[mid] = not reason_codes[0].is_failure
            self._cond.notify_all()

    def subscribe(self, topic_filter: str) -> bool:
        _, mid = self.client.subscribe(topic_filter, options=SubscribeOptions(qos=1))
        with self._cond:
            assert self._cond.wait_for(lambda: mid in self.granted, WAIT_S), "no SUBACK"
        return self.granted[mid]

    def unsubscribe(self, topic_filter: str) -> None:
        self.client.unsubscribe(topic_filter)

    def publish(self, topic: str, payload: str) -> None:
        # The PUBACK comes whether or not the acl let the message through.
        self.client.publish(topic, payload, qos=1).wait_for_publish(WAIT_S)

    def barrier(self) -> None:
        """Everything queued for this user before now has been received."""
        self.publish("barrier", "")

    def got(self, tag: str) -> bool:
        return any(p == tag.encode() for p in list(self.received))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture(scope="module", params=["plain", "tls"])
def users(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, User]]:
    data_dir = tmp_path_factory.mktemp("lanes-broker")
    tls: dict[str, Path] = {}
    cafile = None
    if request.param == "tls":
        certs = tmp_path_factory.mktemp("lanes-certs")
        make_certs(certs)
        tls, cafile = {"tls_dir": certs}, certs / CA_CERT
    config = BrokerConfig(data_dir=data_dir, auth=True)
    accounts = {name: (label, group) for label, (name, group) in USERS.items()}
    accounts[OBSERVER] = ("admin", None)
    for name, (label, group) in accounts.items():
        add_user(config.password_file, name, f"pw-{name}")
        set_role(data_dir, config.acl_file, name, label.removesuffix("-no-group"), group)
    broker = start_mosquitto(data_dir, auth=True, **tls)
    clients = {label: User(broker, name, cafile) for label, (name, _) in USERS.items()}
    observer = User(broker, OBSERVER, cafile)
    assert observer.subscribe("#")
    for client in clients.values():
        for topic_filter in READ_FILTERS:
            client.subscribe(topic_filter)
    assert clients["node"].subscribe(NODE_SHARE)
    clients[OBSERVER] = observer
    yield clients
    for client in clients.values():
        client.close()
    broker.stop()


def test_every_role_is_in_the_matrix() -> None:
    assert {label.removesuffix("-no-group") for label in USERS} == set(ROLES)


def _cases(direction: int) -> list:
    return [
        pytest.param(role, topic, role in lane[direction], id=f"{role}-{lane[0]}")
        for role in USERS
        for lane in LANES
        for topic in [lane[1]]
    ]


@pytest.mark.parametrize(("role", "topic", "allowed"), _cases(2))
def test_write(users: dict[str, User], role: str, topic: str, allowed: bool) -> None:
    tag = f"w-{uuid.uuid4().hex}"
    users[role].publish(topic, tag)
    observer = users[OBSERVER]
    observer.barrier()
    arrived = observer.got(tag)
    verb = "could" if arrived else "could not"
    assert arrived == allowed, f"{role} ({USERS[role][0]}) {verb} publish to {topic}"


@pytest.mark.parametrize(("role", "topic", "allowed"), _cases(3))
def test_read(users: dict[str, User], role: str, topic: str, allowed: bool) -> None:
    tag = f"r-{uuid.uuid4().hex}"
    users[OBSERVER].publish(topic, tag)
    reader = users[role]
    reader.barrier()
    arrived = reader.got(tag)
    verb = "received" if arrived else "did not receive"
    assert arrived == allowed, f"{role} ({USERS[role][0]}) {verb} a message on {topic}"


@pytest.mark.parametrize(
    ("role", "group", "allowed"),
    [pytest.param(role, group, role in who, id=f"{role}-{group}")
     for role in USERS for group, who in SHARES],
)  # fmt: skip
def test_share_group(users: dict[str, User], role: str, group: str, allowed: bool) -> None:
    topic_filter = f"$share/{group}/repedge/tweets"
    granted = users[role].subscribe(topic_filter)
    if granted and topic_filter != NODE_SHARE:  # leave the node in its group
        users[role].unsubscribe(topic_filter)
    verb = "may" if granted else "may not"
    assert granted == allowed, f"{role} ({USERS[role][0]}) {verb} join {topic_filter}"
