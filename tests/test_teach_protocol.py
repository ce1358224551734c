"""The teach protocol through a real Mosquitto with repedge's ACLs, plain and over TLS: a
``teach`` user gets texts and gives labels; ``view`` and ``dashboard`` users, subscribed to
everything, see no text and their labels never reach the node."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.subscribeoptions import SubscribeOptions

from broker.certs import make_certs
from broker.config import BrokerConfig
from broker.roles import set_role
from broker.users import add_user
from common.endpoint import BrokerEndpoint
from common.mqttclient import new_client
from edgemodel.inference import Classifier
from harness import WAIT_S, Mosquitto, start_mosquitto, wait_until
from node.service import NodeConfig, NodeService
from node.teach_client import TeachClient

USERS = {"tn1": "node", "teacher": "teach", "viewer": "view", "dash": "dashboard", "root": "admin"}


def pw(name: str) -> str:
    return f"pw-{name}"


@pytest.fixture(scope="module", params=["plain", "tls"])
def secured(request, tmp_path_factory) -> Iterator[tuple[Mosquitto, Path | None]]:
    data_dir = tmp_path_factory.mktemp(f"teach-{request.param}")
    config = BrokerConfig(data_dir=data_dir, auth=True)
    for name, role in USERS.items():
        add_user(config.password_file, name, pw(name))
        set_role(data_dir, config.acl_file, name, role)
    certs = None
    if request.param == "tls":
        certs = tmp_path_factory.mktemp("teach-certs")
        make_certs(certs)
    broker = start_mosquitto(data_dir, auth=True, tls_dir=certs)
    yield broker, certs
    broker.stop()


def endpoint(broker: Mosquitto, certs: Path | None, user: str) -> BrokerEndpoint:
    scheme = "mqtts" if certs else "mqtt"
    cafile = certs / "ca.crt" if certs else None
    return BrokerEndpoint.parse(f"{scheme}://{broker.host}:{broker.port}", user, pw(user), cafile)


class Raw:
    """A plain MQTT 5 client of one user, subscribed to ``#``, recording what it gets."""

    def __init__(self, ep: BrokerEndpoint) -> None:
        self.messages: list[mqtt.MQTTMessage] = []
        self.client = new_client(ep, f"r{uuid.uuid4().hex[:8]}")
        host, port = ep.address
        self.client.on_message = lambda c, u, m: self.messages.append(m)
        self.client.connect(host, port)
        self.client.loop_start()
        self.client.subscribe("#", options=SubscribeOptions(qos=1))

    def publish(self, topic: str, payload: str) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(WAIT_S)

    def wait_for(self, tag: bytes) -> None:
        wait_until(
            lambda: any(tag in m.payload for m in self.messages), interval=0.02, what=repr(tag)
        )

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_only_a_teach_user_reads_texts_and_gives_labels(secured, tiny_bundle, tmp_path) -> None:
    broker, certs = secured
    node_ep = endpoint(broker, certs, "tn1")
    config = NodeConfig(
        node_id="tn1",
        broker=BrokerEndpoint(
            broker.host,
            broker.port,
            tls=node_ep.tls,
            username="tn1",
            password=pw("tn1"),
            cafile=node_ep.cafile,
        ),
        state_dir=tmp_path / "state",
        session_expiry_s=60,
        telemetry_interval_s=60,
    )
    service = NodeService(config, Classifier(tiny_bundle, num_threads=1))
    service.start()
    root = Raw(endpoint(broker, certs, "root"))
    viewers = [Raw(endpoint(broker, certs, name)) for name in ("viewer", "dash")]
    teacher = TeachClient(endpoint(broker, certs, "teacher"))
    try:
        assert service.wait_connected(WAIT_S)
        for i in range(12):
            tweet = {"id": str(i), "text": f"my new kia number {i} is great", "entity": "Kia"}
            root.publish("repedge/tweets", json.dumps(tweet))
        root.wait_for(b'"id":"11"')
        # Labels go out before their texts reach the store's writer: wait for the texts.
        wait_until(lambda: service.teach_store.span("Kia")[0] >= 12, what="12 kept texts")

        first = teacher.request("tn1", "next", entity="Kia", timeout=WAIT_S)["tweet"]
        assert first["text"].startswith("my new kia number")
        # View-only users try to label that tweet and to ask for texts.
        for n, viewer in enumerate(viewers):
            for op in ({"op": "answer", "digest": first["digest"], "answer": "negative"},
                       {"op": "next"}):  # fmt: skip
                request = {**op, "entity": "Kia", "reply_to": f"v{n}", "request_id": "x"}
                viewer.publish("repedge/nodes/tn1/teach/request", json.dumps(request))
        # The teacher's own answer comes after theirs: once it is answered, theirs would
        # have been handled too (the node serves requests in order).
        done = teacher.request(
            "tn1", "answer", entity="Kia", digest=first["digest"], answer="positive",
            timeout=WAIT_S,
        )  # fmt: skip
        assert done["counts"]["labels"] == 1
        assert [a.answer for a in service.teach_store.answers("Kia")] == ["positive"]

        tag = uuid.uuid4().hex.encode()
        root.publish("repedge/labels", tag.decode())
        for viewer in viewers:
            viewer.wait_for(tag)  # everything queued before the tag has arrived
            assert not [m.topic for m in viewer.messages if "/teach/" in m.topic]
            # (the tweets feed itself is input, readable as before; no node output has text)
            leaked = [m for m in viewer.messages if b"my new kia" in m.payload]
            assert {m.topic for m in leaked} <= {"repedge/tweets"}
        assert [m for m in root.messages if "/teach/response/" in m.topic]  # admin may
    finally:
        teacher.close()
        for client in (root, *viewers):
            client.close()
        service.stop()
