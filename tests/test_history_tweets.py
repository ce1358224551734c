"""The tweets behind a point of the history chart: the node's text store lists kept texts by
entity and time, the teach protocol's ``texts`` request serves them to the teach role only
(real Mosquitto with repedge's ACLs), and the dashboard's relay says why when it cannot."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path

import numpy as np
import pytest

from broker.config import BrokerConfig
from broker.roles import set_role
from broker.users import add_user
from common.endpoint import BrokerEndpoint
from common.timestamps import to_wire
from dashboard.history_tweets import NodeTexts, TweetsUnavailable
from edgemodel.inference import Classifier, Prediction
from harness import WAIT_S, Collector, Mosquitto, publish, start_mosquitto, wait_until
from node.messages import Tweet
from node.service import NodeConfig, NodeService
from node.teach_client import TeachClient, TeachClientError, TeachNotAllowed
from node.teachstore import TeachStore

T0 = 1_700_000_000.0  # a fixed minute boundary's neighbourhood; any epoch works
SCORES = {"negative": 0.2, "neutral": 0.5, "positive": 0.3}


def wire(epoch: float) -> str:
    return to_wire(datetime.fromtimestamp(epoch, UTC))


def row(i: int, at: float | None, label: str = "neutral", related: float = 0.7, entity="Kia"):
    tweet = Tweet(id=f"t{i}", text=f"tweet {i}", entity=entity,
                  created_at=None if at is None else wire(at))  # fmt: skip
    return tweet, Prediction(label, SCORES, related, np.zeros(4, np.float32)), "sha"


def test_store_lists_texts_by_entity_and_event_time(tmp_path: Path) -> None:
    store = TeachStore(tmp_path / "teach.sqlite")
    store.keep([row(0, T0 - 30), row(1, T0 + 5, "negative"), row(2, T0 + 20, "positive", 0.2),
                row(3, T0 + 59, "negative"), row(4, T0 + 60),
                row(5, T0 + 10, entity="BMW")])  # fmt: skip
    store.keep([row(6, None)], labelled_at=T0 + 30)  # no created_at: the label time counts

    found, total = store.texts_between("kia", T0, T0 + 60)  # entity keys fold case
    assert [t.tweet_id for t in found] == ["t1", "t2", "t6", "t3"]  # [start, end), by time
    assert total == 4 and found[2].at == T0 + 30
    assert found[0].to_json()["at"] == T0 + 5

    negative, n = store.texts_between("Kia", T0, T0 + 60, label="negative")
    assert [t.tweet_id for t in negative] == ["t1", "t3"] and n == 2
    unrelated, _ = store.texts_between("Kia", T0, T0 + 60, related=False)
    assert [t.tweet_id for t in unrelated] == ["t2"]
    related, _ = store.texts_between("Kia", T0, T0 + 60, related=True)
    assert "t2" not in [t.tweet_id for t in related]
    first_two, n = store.texts_between("Kia", T0, T0 + 60, limit=2)
    assert [t.tweet_id for t in first_two] == ["t1", "t2"] and n == 4
    assert store.span("Kia") == (6, T0 - 30)
    assert store.texts_between("Nobody", T0, T0 + 60) == ([], 0)


def test_a_store_from_before_times_gains_the_column(tmp_path: Path) -> None:
    path = tmp_path / "teach.sqlite"
    old = sqlite3.connect(path)
    old.execute(
        "CREATE TABLE texts (seq INTEGER PRIMARY KEY AUTOINCREMENT, entity_key TEXT NOT NULL,"
        " entity TEXT NOT NULL, digest TEXT NOT NULL, tweet_id TEXT NOT NULL, text TEXT NOT"
        " NULL, label TEXT NOT NULL, scores TEXT NOT NULL, related_score REAL, embedding BLOB,"
        " model_sha256 TEXT, kept_at TEXT NOT NULL, UNIQUE (entity_key, digest))"
    )
    old.execute(
        "INSERT INTO texts (entity_key, entity, digest, tweet_id, text, label, scores, kept_at)"
        " VALUES ('kia', 'Kia', 'd0', 'old', 'an old text', 'neutral', ?, 'x')",
        (json.dumps(SCORES),),
    )
    old.commit()
    old.close()
    store = TeachStore(path)
    store.keep([row(1, T0)])
    found, _ = store.texts_between("Kia", T0 - 1, T0 + 1)
    assert [t.tweet_id for t in found] == ["t1"]  # the old one has no time: never listed
    assert store.span("Kia") == (2, T0)
    assert [t.tweet_id for t in store.candidates("Kia")] == ["old", "t1"]  # still teachable


USERS = {"tx1": "node", "teacher": "teach", "viewer": "view", "dash": "dashboard", "root": "admin",
         "watch": "admin"}  # fmt: skip


@pytest.fixture(scope="module")
def secured(tmp_path_factory) -> Iterator[Mosquitto]:
    data_dir = tmp_path_factory.mktemp("texts-broker")
    config = BrokerConfig(data_dir=data_dir, auth=True)
    for name, role in USERS.items():
        add_user(config.password_file, name, f"pw-{name}")
        set_role(data_dir, config.acl_file, name, role)
    broker = start_mosquitto(data_dir, auth=True)
    yield broker
    broker.stop()


def as_user(broker: Mosquitto, user: str) -> BrokerEndpoint:
    return BrokerEndpoint(broker.host, broker.port, username=user, password=f"pw-{user}")


def ask(client: TeachClient, start: float, end: float) -> dict:
    return client.request("tx1", "texts", WAIT_S, entity="Kia", **{"from": start, "to": end})


def test_only_the_teach_role_lists_texts_over_the_broker(secured, tiny_bundle, tmp_path) -> None:
    config = NodeConfig(
        node_id="tx1",
        broker=as_user(secured, "tx1"),
        state_dir=tmp_path / "state",
        session_expiry_s=60,
        telemetry_interval_s=60,
    )
    service = NodeService(config, Classifier(tiny_bundle, num_threads=1))
    service.start()
    clients = {user: TeachClient(as_user(secured, user)) for user in ("teacher", "viewer", "dash")}
    # (one connection per user: the broker uses the user name as the client id)
    root = as_user(secured, "root")
    try:
        assert service.wait_connected(WAIT_S)
        watcher = Collector(as_user(secured, "watch"), [config.labels_topic])
        tweets = [
            {"id": f"k{i}", "text": f"<b>kia</b> number {i}", "entity": "Kia",
             "created_at": wire(T0 + 20 * i)}
            for i in range(6)
        ]  # fmt: skip
        publish(root, config.tweets_topic, [json.dumps(t) for t in tweets])
        watcher.wait_count(config.labels_topic, len(tweets))
        watcher.close()
        # (the node hands texts to its writer just after publishing the labels)
        assert service.teach_store is not None
        wait_until(lambda: service.teach_store.span("Kia")[0] == 6, what="6 texts kept")

        got = ask(clients["teacher"], T0, T0 + 60)
        assert [t["id"] for t in got["tweets"]] == ["k0", "k1", "k2"]
        assert got["tweets"][0]["text"] == "<b>kia</b> number 0"  # raw here; inert on the web
        assert got["total"] == 3 and got["kept"] == 6 and got["oldest"] == T0
        with pytest.raises(TeachClientError, match="'from' before 'to'"):
            ask(clients["teacher"], 5, 1)

        # The dashboard's relay, as `dashboard serve` runs it with a teach user...
        relay = NodeTexts(clients["teacher"], lambda: ["tx1"])
        shown = relay("Kia", T0 + 60, T0 + 120)
        assert [t["id"] for t in shown["tweets"]] == ["k3", "k4", "k5"]
        assert {t["node"] for t in shown["tweets"]} == {"tx1"} and shown["note"] == ""
        assert "older than the oldest" in relay("Kia", T0 - 3600, T0 - 3540)["note"]
        assert "no kept text" in relay("Kia", T0 + 3600, T0 + 3660)["note"]

        # ...and with view-only users: the broker refuses the request, the node never sees it.
        for user in ("viewer", "dash"):
            with pytest.raises(TeachNotAllowed):
                ask(clients[user], T0, T0 + 60)
            with pytest.raises(TweetsUnavailable, match="may not read tweet texts") as refused:
                NodeTexts(clients[user], lambda: ["tx1"])("Kia", T0, T0 + 60)
            assert refused.value.status == HTTPStatus.FORBIDDEN
        with pytest.raises(TweetsUnavailable, match="no node is online"):
            NodeTexts(clients["teacher"], list)("Kia", T0, T0 + 60)
    finally:
        for client in clients.values():
            client.close()
        service.stop()
