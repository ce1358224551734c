"""Issue 11's node defects, each against a real Mosquitto: poison tweets, a failing record
store, an early ack on message-id wrap, reused ids, the Last Will's time field."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from common.mqttclient import new_client
from edgemodel.bundle import VariantInfo, update_manifest
from edgemodel.canaries import DEFAULT_CANARIES
from edgemodel.inference import Classifier
from harness import REPO, WAIT_S, Collector, embedded_node, holds_for, publish, wait_until
from node.dedup import RecordStore
from node.messages import content_id
from trainer.tiny import build_tiny_bundle

POISON = [
    rb'{"id":"px1","text":"hello \ud800 world"}',
    rb'{"id":"px2\ud800","text":"hello world"}',
    rb'{"id":"px3","text":"hello world","entity":"\udfff"}',
    b'{"id":"px4","text":"deep","x":' + b"[" * 2000 + b"]" * 2000 + b"}",
    b'{"id":"' + b"7" * 300 + b'","text":"an id of 300 characters"}',
]


def ids_on(watcher: Collector, topic: str) -> list[str]:
    return [r["id"] for r in watcher.json(topic)]


# -- 1. poison tweets -------------------------------------------------------------------


def test_poison_tweets_beyond_the_receive_maximum_do_not_stall_the_node(node_factory, mosquitto):
    """300 poison tweets (more than the 256 the broker lets the node hold unacked), mixed
    with good ones: every one gets a record, and the node keeps labelling. Before: each
    batch with a poison tweet raised and was never acked, and the node stopped."""
    node = node_factory(extra=["--telemetry-interval", "0.5"])
    telemetry = f"repedge/nodes/{node.node_id}/telemetry"
    watcher = Collector(
        mosquitto, [node.topics.labels, node.topics.errors, node.status_topic(), telemetry]
    )
    node.start_and_wait_online(watcher)
    payloads: list[bytes] = []
    for i in range(60):
        payloads += POISON
        payloads.append(json.dumps({"id": f"good{i}", "text": f"good tweet {i}"}).encode())
    publish(mosquitto, node.topics.tweets, payloads)
    watcher.wait_for(
        lambda _: (
            len(watcher.on(node.topics.errors)) >= 300
            and {f"good{i}" for i in range(60)} <= set(ids_on(watcher, node.topics.labels))
        ),
        what=f"300 error records and 60 labels; log:\n{node.log()[-3000:]}",
    )
    reasons = {(e["reason"], e["id"]) for e in watcher.json(node.topics.errors)}
    assert reasons == {
        ("bad_field", None),  # the long id, refused and not echoed
        ("malformed_json", None),  # nested too deeply
        ("not_utf8", None),  # a lone surrogate in the id
        ("not_utf8", "px1"),
        ("not_utf8", "px3"),
    }
    # And afterwards: still serving, and the record store is fine.
    publish(mosquitto, node.topics.tweets, [json.dumps({"id": "after", "text": "still on"})])
    watcher.wait_for(lambda _: "after" in ids_on(watcher, node.topics.labels), what="after")
    report = watcher.wait_for(
        lambda _: next((t for t in reversed(watcher.json(telemetry)) if t["processed"] >= 61), 0),
        what="telemetry",
    )
    assert report["record_store"] == "ok"
    # Repeats of a poison tweet that had an id are answered from the store.
    assert report["errors"] + report["duplicates"] >= 300
    watcher.close()


# -- 2. the record store fails (full disk) ----------------------------------------------


def test_full_disk_under_the_record_store_degrades_and_recovers(mosquitto, tiny_bundle, tmp_path):
    """Fault injection at the SQLite layer: ``PRAGMA max_page_count`` caps the store's
    file at its current size, and SQLite answers every write that needs a new page with
    SQLITE_FULL, "database or disk is full", the error a full filesystem gives. The node
    must keep labelling, say "degraded" in telemetry, and recover by itself once the cap
    is lifted ("space returns"). Before: the batch raised, was never acked, and the node
    stalled until restarted."""
    service, topics = embedded_node(
        mosquitto, tmp_path, Classifier(tiny_bundle, num_threads=1), store_retry_s=0.3
    )
    watcher = Collector(mosquitto, [topics.labels, topics.errors])
    service.start()
    try:
        assert service.wait_connected(WAIT_S)
        publish(mosquitto, topics.tweets, [json.dumps({"id": "warm", "text": "warm up"})])
        watcher.wait_for(lambda _: "warm" in ids_on(watcher, topics.labels), what="warm")
        db = service.store.store._db  # the live connection the node writes through
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        db.execute(f"PRAGMA max_page_count = {pages}")  # the disk is full

        full = [json.dumps({"id": f"d{i}", "text": f"disk full tweet {i} " + "x" * 300})
                for i in range(200)]  # fmt: skip
        publish(mosquitto, topics.tweets, full)
        watcher.wait_for(
            lambda _: {f"d{i}" for i in range(200)} <= set(ids_on(watcher, topics.labels)),
            what="labels while the disk is full",
        )
        report = service.telemetry()
        assert report["record_store"].startswith("degraded: write: OperationalError"), report
        assert "full" in report["record_store"]
        assert service.store.unstored > 0

        time.sleep(0.5)  # past the retry interval: still full, still degraded
        more = [json.dumps({"id": f"s{i}", "text": f"still full {i} " + "y" * 300})
                for i in range(100)]  # fmt: skip
        publish(mosquitto, topics.tweets, more)
        watcher.wait_for(
            lambda _: {f"s{i}" for i in range(100)} <= set(ids_on(watcher, topics.labels)),
            what="labels while the disk is still full",
        )
        assert service.telemetry()["record_store"].startswith("degraded")

        db.execute("PRAGMA max_page_count = 1073741823")  # space returns
        time.sleep(0.5)  # past the retry interval: the next batch tries the store again
        publish(mosquitto, topics.tweets, [json.dumps({"id": "back", "text": "space again"})])
        watcher.wait_for(lambda _: "back" in ids_on(watcher, topics.labels), what="back")
        assert service.telemetry()["record_store"] == "ok"
        # Stored again: a redelivery is answered with the identical record.
        publish(mosquitto, topics.tweets, [json.dumps({"id": "back", "text": "space again"})])
        watcher.wait_for(lambda _: ids_on(watcher, topics.labels).count("back") == 2, what="repeat")
        first, second = [m.payload for m in watcher.on(topics.labels) if m.json()["id"] == "back"]
        assert first == second
        assert service.store.store.get("back", content_id("space again")) is not None
    finally:
        service.stop()
        watcher.close()


def test_unopenable_record_store_at_start_labels_and_recovers(mosquitto, tiny_bundle, tmp_path):
    """A store path that cannot be opened (a directory where the file should be: works
    the same for root, unlike permissions) -> the node starts, labels, reports degraded,
    and opens the store once the path is usable."""
    service, topics = embedded_node(
        mosquitto, tmp_path, Classifier(tiny_bundle, num_threads=1), store_retry_s=0.3
    )
    service.config.store_path.mkdir(parents=True)
    watcher = Collector(mosquitto, [topics.labels])
    service.start()
    try:
        assert service.wait_connected(WAIT_S)
        assert service.telemetry()["record_store"].startswith("degraded: open:")
        publish(mosquitto, topics.tweets, [json.dumps({"id": "o1", "text": "no store"})])
        watcher.wait_for(lambda _: "o1" in ids_on(watcher, topics.labels), what="o1")
        shutil.rmtree(service.config.store_path)
        time.sleep(0.5)  # past the retry interval: the next batch opens the store
        publish(mosquitto, topics.tweets, [json.dumps({"id": "o2", "text": "store back"})])
        watcher.wait_for(lambda _: "o2" in ids_on(watcher, topics.labels), what="o2")
        assert service.telemetry()["record_store"] == "ok"
        assert service.config.store_path.is_file()
    finally:
        service.stop()
        watcher.close()


# -- 3. early ack on message-id wrap, in a real client ----------------------------------


def test_label_drawing_a_telemetry_id_is_not_acked_before_its_puback(
    mosquitto, tiny_bundle, tmp_path
):
    """Telemetry (QoS 0) takes message id M; paho's counter is then set so that the next
    label draws M again, as it would after 65,535 more publishes. The tweet's ack must
    come after the broker's PUBACK for the label. Before: paho had reported the QoS 0
    publish, M sat in the node's "early" set, and the tweet was acked at once."""
    service, topics = embedded_node(mosquitto, tmp_path, Classifier(tiny_bundle, num_threads=1))
    client = service.shell.client
    events: list[tuple[str, int]] = []
    lock = threading.Lock()
    real_ack, real_on_publish = client.ack, client.on_publish

    def ack(mid, qos):
        with lock:
            events.append(("ack", mid))
        return real_ack(mid, qos)

    def on_publish(c, userdata, mid, reason_code, properties):
        with lock:
            events.append(("puback", mid))
        real_on_publish(c, userdata, mid, reason_code, properties)

    client.ack = ack
    client.on_publish = on_publish
    published: list[tuple[str, int]] = []
    real_publish = client.publish

    def tracking_publish(topic, payload=None, qos=0, retain=False, properties=None):
        info = real_publish(topic, payload, qos, retain, properties)
        published.append((topic, info.mid))
        return info

    client.publish = tracking_publish
    watcher = Collector(mosquitto, [topics.labels])
    service.start()
    try:
        assert service.wait_connected(WAIT_S)
        assert service.publish_telemetry()
        telemetry_mid = published[-1][1]
        # written: paho reported it
        wait_until(lambda: ("puback", telemetry_mid) in events, interval=0.01, what="PUBACK")
        client._last_mid = telemetry_mid - 1  # the wrap, without 65,535 publishes
        publish(mosquitto, topics.tweets, [json.dumps({"id": "w1", "text": "wrap"})])
        watcher.wait_for(lambda _: "w1" in ids_on(watcher, topics.labels), what="label")
        # (The label can reach the watcher before the worker thread has noted its id.)
        wait_until(
            lambda: any(topic == topics.labels for topic, _ in published),
            interval=0.01,
            what="the label's publish",
        )
        label_mid = next(mid for topic, mid in published if topic == topics.labels)
        assert label_mid == telemetry_mid
        wait_until(lambda: any(kind == "ack" for kind, _ in events), interval=0.01, what="ack")
        with lock:
            after_telemetry = events[events.index(("puback", telemetry_mid)) + 1 :]
        kinds = [kind for kind, mid in after_telemetry if mid == label_mid or kind == "ack"]
        assert kinds[:2] == ["puback", "ack"], f"tweet acked before its label's PUBACK: {events}"
    finally:
        service.stop()
        watcher.close()


# -- 5. reused ids -------------------------------------------------------------------------


def test_reused_id_is_labelled_afresh_and_counted(node_factory, mosquitto):
    node = node_factory(extra=["--telemetry-interval", "0.5"])
    telemetry = f"repedge/nodes/{node.node_id}/telemetry"
    watcher = Collector(mosquitto, [node.topics.labels, node.status_topic(), telemetry])
    node.start_and_wait_online(watcher)
    a = json.dumps({"id": "r1", "text": "the first tweet with this id", "entity": "acme"})
    b = json.dumps({"id": "r1", "text": "somebody else's text under the same id"})
    publish(mosquitto, node.topics.tweets, [a])
    watcher.wait_count(node.topics.labels, 1)
    publish(mosquitto, node.topics.tweets, [b])
    watcher.wait_count(node.topics.labels, 2)
    publish(mosquitto, node.topics.tweets, [a])  # identical content again
    records = watcher.wait_count(node.topics.labels, 3)
    first, second, third = (m.payload for m in records)
    assert json.loads(second)["id"] == "r1" and second != first
    assert "entity" not in json.loads(second)  # the second tweet's own record, not A's
    assert third == first  # the stored record, verbatim
    report = watcher.wait_for(
        lambda _: next((t for t in reversed(watcher.json(telemetry)) if t["id_reused"]), None),
        what="id_reused in telemetry",
    )
    assert report["id_reused"] == 1 and report["duplicates"] == 1 and report["processed"] == 2
    watcher.close()


def test_a_first_version_store_file_is_migrated(tmp_path):
    path = tmp_path / "records.sqlite"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE records (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
        " id TEXT NOT NULL UNIQUE, topic TEXT NOT NULL, payload TEXT NOT NULL)"
    )
    db.executemany(
        "INSERT INTO records (id, topic, payload) VALUES (?, ?, ?)",
        [("old1", "labels", '{"id":"old1"}'), ("old2", "errors", '{"id":"old2"}')],
    )
    db.commit()
    db.close()
    store = RecordStore(path)
    assert len(store) == 2
    # Old rows have no digest: they answer no tweet (their content is unknown) ...
    assert store.lookup([("old1", content_id("anything"))]) == ({}, set())
    # ... and the new key works, for the same id too.
    digest = content_id("new text")
    assert store.put_if_absent([("old1", digest, "labels", "{}")]) == {
        ("old1", digest): ("labels", "{}")
    }
    assert store.get("old1", digest) == ("labels", "{}")
    store.close()
    reopened = RecordStore(path)  # already migrated: opens as is
    assert len(reopened) == 3
    version = sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0]
    assert version == 3


def test_a_second_version_store_forgets_its_collision_prone_digests(tmp_path):
    """Schema 2 keyed on sha256(text U+001F entity): after the upgrade its rows answer
    nothing (their digests cannot be recomputed: the store holds no texts), so a tweet
    redelivered across the upgrade is labelled afresh, never given another's record."""
    path = tmp_path / "records.sqlite"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE records (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL,"
        " digest TEXT, topic TEXT NOT NULL, payload TEXT NOT NULL, UNIQUE (id, digest))"
    )
    old_digest = hashlib.sha256(b"a new model\x1fBMW\x1f").hexdigest()[:16]
    db.execute(
        "INSERT INTO records (id, digest, topic, payload) VALUES (?, ?, ?, ?)",
        ("r3", old_digest, "labels", '{"id":"r3"}'),
    )
    db.execute("PRAGMA user_version = 2")
    db.commit()
    db.close()
    store = RecordStore(path)
    assert len(store) == 1  # kept, pruned with age
    assert store.lookup([("r3", old_digest)]) == ({}, set())
    # Not counted as an id reused for other content either: its content is unknown.
    assert store.lookup([("r3", content_id("a new model", "BMW\x1f"))]) == ({}, set())
    store.close()
    version = sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0]
    assert version == 3


# -- 10. the Last Will says when it was set -----------------------------------------------


def test_last_will_carries_its_connect_time_not_a_timestamp(node_factory, mosquitto):
    node = node_factory()
    watcher = Collector(mosquitto, [node.status_topic()])
    node.start_and_wait_online(watcher)
    online = [s for s in watcher.json(node.status_topic()) if s["state"] == "online"][-1]
    time.sleep(1.1)
    node.kill()
    will = watcher.wait_for(
        lambda _: [s for s in watcher.json(node.status_topic()) if s["state"] == "offline"],
        what="Last Will",
    )[-1]
    assert will["reason"] == "connection lost"
    assert "timestamp" not in will  # it would pass for the time of death
    assert will["connected_at"] <= online["timestamp"]
    watcher.close()


# -- 8. a model file that matches its hash but is not the model -------------------------


def rehashed_copy(bundle, root: Path, flatbuffer: bytes, **manifest) -> Path:
    """A copy of ``bundle`` whose FlatBuffer is ``flatbuffer``, with the manifest's sha256
    and size updated to match: the hash check passes, whatever the bytes are."""
    shutil.copytree(bundle.root, root)
    info = bundle.manifest.variants[bundle.variant]
    (root / info.file).write_bytes(flatbuffer)
    variants = dict(bundle.manifest.variants)
    variants[bundle.variant] = VariantInfo(
        file=info.file,
        sha256=hashlib.sha256(flatbuffer).hexdigest(),
        size_bytes=len(flatbuffer),
        quantization=info.quantization,
    )
    update_manifest(root, variants=variants, **manifest)
    return root


def node_start(model: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "node", "start", "--model", str(model),
         "--broker", "mqtt://127.0.0.1:9", "--state-dir", str(tmp_path / "state"),
         "--node-id", "corrupt", "--threads", "1"],
        capture_output=True, text=True, timeout=WAIT_S, cwd=REPO,
    )  # fmt: skip


def test_a_file_that_is_no_flatbuffer_exits_2_without_a_traceback(tiny_bundle, tmp_path):
    garbage = bytes(range(256)) * 64
    model = rehashed_copy(tiny_bundle, tmp_path / "garbage", garbage)
    done = node_start(model, tmp_path)
    assert done.returncode == 2, done.stderr
    assert "the model does not load" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.fixture(scope="module")
def other_weights(tmp_path_factory):
    """Another tiny model: a valid FlatBuffer with different weights."""
    # Seed 3: labels every canary "negative" where seed 0 (tiny_bundle) says "positive".
    return build_tiny_bundle(tmp_path_factory.mktemp("seed3") / "bundle", seed=3)


CANARY_TEXTS = [
    *DEFAULT_CANARIES,
    "the battery died after a week",
    "new store opening downtown on friday",
    "best pizza in town, friendly staff",
    "my flight was cancelled again",
    "quarterly revenue beat expectations",
    "the app keeps crashing on login",
]


def test_changed_weights_that_match_their_hash_fail_the_canaries(
    tiny_bundle, other_weights, tmp_path
):
    """The manifest's canaries carry the labels the real model gives; the file is swapped
    for other weights (hash updated, as a corruption the hash cannot see). Before: served
    silently."""
    original = Classifier(tiny_bundle, num_threads=1)
    swapped = Classifier(other_weights, num_threads=1)
    canaries = [
        {"text": t, "entity": e, "label": original.classify([t], [e])[0].label}
        for t in CANARY_TEXTS
        for e in (None, "acme")
    ]
    differ = [
        c for c in canaries if swapped.classify([c["text"]], [c["entity"]])[0].label != c["label"]
    ]
    assert differ, "the two random models agree on every canary; pick other texts"
    good = rehashed_copy(
        tiny_bundle, tmp_path / "good", tiny_bundle.model_path.read_bytes(), canaries=canaries
    )
    bad = rehashed_copy(
        tiny_bundle, tmp_path / "bad", other_weights.model_path.read_bytes(), canaries=canaries
    )
    done = node_start(bad, tmp_path)
    assert done.returncode == 2, done.stderr
    assert "fails its canary tweets" in done.stderr and "Traceback" not in done.stderr
    # The intact model with the same canaries passes them (and then waits for a broker).
    with pytest.raises(subprocess.TimeoutExpired):
        subprocess.run(
            [sys.executable, "-m", "node", "start", "--model", str(good),
             "--broker", "mqtt://127.0.0.1:9", "--state-dir", str(tmp_path / "s2"),
             "--node-id", "intact", "--threads", "1"],
            capture_output=True, text=True, timeout=8, cwd=REPO,
        )  # fmt: skip


def test_canaries_run_when_serving_an_installed_model(tiny_bundle, tmp_path):
    """`provision install` leaves the signed canaries in the slot; node start checks them."""
    from node.serve import StartError, load_classifier

    canaries = [{"text": "good car", "entity": None, "label": "no-such-label"}]
    with pytest.raises(StartError, match="canary"):
        load_classifier(tiny_bundle.root, None, 1, canaries)
    label = Classifier(tiny_bundle, num_threads=1).classify(["good car"])[0].label
    assert load_classifier(tiny_bundle.root, None, 1, [{**canaries[0], "label": label}])


# -- the broker's flow control, which the node's memory bound relies on ------------------


def mosquitto_version() -> tuple[int, ...]:
    from broker.config import find_program

    out = subprocess.run([find_program("mosquitto"), "-h"], capture_output=True, text=True)
    words = out.stdout.split()
    return tuple(int(x) for x in words[words.index("version") + 1].split("."))


@pytest.mark.xfail(
    mosquitto_version() < (2, 0, 13),
    reason="Mosquitto before 2.0.13 refills its send quota wrongly on in-order PUBACKs "
    "(eclipse/mosquitto#2306): Receive Maximum does not bound what a node holds",
    strict=True,
)
def test_broker_honours_receive_maximum_while_acks_flow(mosquitto):
    """A subscriber with Receive Maximum 16 that acks 4 messages, oldest first, may hold
    at most 16 unacknowledged. The node relies on this to keep its memory bounded under
    a backlog (docs/node.md, "Memory under a backlog")."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    topic = f"test/rm/{uuid.uuid4().hex[:8]}"
    got: list[int] = []
    subscribed = threading.Event()
    sub = new_client(mosquitto.endpoint(), f"rm-{uuid.uuid4().hex[:8]}", manual_ack=True)
    sub.on_message = lambda c, u, m: got.append(m.mid)
    sub.on_subscribe = lambda *a: subscribed.set()
    props = Properties(PacketTypes.CONNECT)
    props.ReceiveMaximum = 16
    props.SessionExpiryInterval = 60
    sub.connect(mosquitto.host, mosquitto.port, clean_start=True, properties=props)
    sub.subscribe(topic, qos=1)
    sub.loop_start()
    try:
        assert subscribed.wait(WAIT_S)
        publish(mosquitto, topic, [str(i) for i in range(200)])
        wait_until(lambda: len(got) >= 16, what="a full window of 16 deliveries")
        for _ in range(4):
            sub.ack(got[0], 1)
            got.pop(0)
            wait_until(lambda: len(got) >= 16, what="the next delivery after an ack")
        holds_for(lambda: len(got) <= 16, 0.5, what="at most 16 unacknowledged deliveries")
    finally:
        sub.disconnect()
        sub.loop_stop()
