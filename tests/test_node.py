"""The node as users run it (`python -m node start`) against a real Mosquitto."""

from __future__ import annotations

import json
import math
import subprocess
import uuid
from datetime import datetime

import pytest

from edgemodel.inference import Classifier
from harness import WAIT_S, Collector, NodeProcess, Topics, publish
from node.messages import content_id


@pytest.fixture(scope="module")
def serving(mosquitto, tiny_bundle, tmp_path_factory):
    """One node for this module's tests (starting one takes a second or two)."""
    node_id = f"m{uuid.uuid4().hex[:8]}"
    topics = Topics(f"test/node/{node_id}")
    node = NodeProcess(
        model=tiny_bundle.root,
        broker=mosquitto,
        node_id=node_id,
        topics=topics,
        state_dir=tmp_path_factory.mktemp(node_id) / "state",
        extra=["--telemetry-interval", "0.5"],
    )
    watcher = Collector(mosquitto, [topics.labels, topics.errors, f"repedge/nodes/{node_id}/#"])
    node.start_and_wait_online(watcher)
    yield node, watcher
    watcher.close()
    if node.alive():
        node.kill()


def labels_for(watcher: Collector, topics: Topics, ids: set[str]) -> dict[str, dict]:
    def found(_msgs):
        records = {r["id"]: r for r in watcher.json(topics.labels) if r["id"] in ids}
        return records if len(records) == len(ids) else None

    return watcher.wait_for(found, what=f"labels for {sorted(ids)}")


def check_label_record(record: dict, bundle, node_id: str) -> None:
    assert set(record) >= {"id", "label", "scores", "model", "node_id", "latency_ms", "timestamp"}
    assert record["model"] == bundle.identity()
    assert set(record["scores"]) == set(bundle.labels)
    assert math.isclose(sum(record["scores"].values()), 1.0, abs_tol=1e-3)
    assert record["label"] == max(record["scores"], key=record["scores"].get)
    assert record["node_id"] == node_id
    assert record["latency_ms"] >= 0
    datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00"))


def test_plain_text_from_mosquitto_pub(serving, mosquitto, tiny_bundle) -> None:
    node, watcher = serving
    text = f"I love my new car {uuid.uuid4().hex[:6]}"
    subprocess.run(
        ["mosquitto_pub", "-h", mosquitto.host, "-p", str(mosquitto.port),
         "-t", node.topics.tweets, "-q", "1", "-m", text],
        check=True, timeout=WAIT_S,
    )  # fmt: skip
    record = labels_for(watcher, node.topics, {content_id(text)})[content_id(text)]
    check_label_record(record, tiny_bundle, node.node_id)
    assert "entity" not in record


def test_json_from_paho(serving, mosquitto, tiny_bundle) -> None:
    node, watcher = serving
    tweets = [
        {"id": "j1", "text": "BMW recalls 100k cars", "entity": "BMW"},
        {"id": 42, "text": "Toyota announces new plant", "entity": "Toyota"},
        {"text": "no id here, just text"},
    ]
    publish(mosquitto, node.topics.tweets, [json.dumps(t) for t in tweets])
    ids = {"j1", "42", content_id("no id here, just text")}
    records = labels_for(watcher, node.topics, ids)
    for record in records.values():
        check_label_record(record, tiny_bundle, node.node_id)
    assert records["j1"]["entity"] == "BMW" and records["42"]["entity"] == "Toyota"


BAD_INPUTS = [
    (b"\xff\xfe\xfa", "not_utf8", None),
    (b"", "empty_text", None),
    (b"x" * 4097, "too_large", None),
    (b'{"id": "b1", "text": "unterminated', "malformed_json", None),
    (b'{"id": "b2", "text": ["not", "a", "string"]}', "bad_field", "b2"),
    (b'{"id": "b3", "text": "ok", "entity": 7}', "bad_field", "b3"),
    (b'{"id": "b4", "text": "\\ue000\\ue001"}', "no_known_tokens", "b4"),
]


def test_bad_input_gets_error_records_and_the_node_keeps_serving(serving, mosquitto) -> None:
    node, watcher = serving
    before = len(watcher.on(node.topics.errors))
    publish(mosquitto, node.topics.tweets, [payload for payload, _, _ in BAD_INPUTS])
    errors = watcher.wait_count(node.topics.errors, before + len(BAD_INPUTS))[before:]
    got = sorted((e.json()["reason"], e.json()["id"]) for e in errors)
    assert got == sorted((reason, tweet_id) for _, reason, tweet_id in BAD_INPUTS)
    for error in errors:
        assert error.json()["node_id"] == node.node_id and error.json()["detail"]
    publish(mosquitto, node.topics.tweets, [b'{"id": "after-bad", "text": "still here?"}'])
    labels_for(watcher, node.topics, {"after-bad"})
    assert node.alive()


def test_telemetry(serving, mosquitto, tiny_bundle) -> None:
    node, watcher = serving
    publish(
        mosquitto,
        node.topics.tweets,
        [json.dumps({"id": f"tm{i}", "text": "fine"}) for i in range(20)],
    )
    labels_for(watcher, node.topics, {f"tm{i}" for i in range(20)})
    topic = f"repedge/nodes/{node.node_id}/telemetry"
    report = watcher.wait_for(
        lambda _: next((t for t in reversed(watcher.json(topic)) if t["processed"] >= 20), None),
        what="telemetry counting 20 tweets",
    )
    assert report["node_id"] == node.node_id
    assert report["model"] == tiny_bundle.identity()
    latency = report["latency_ms"]
    assert 0 <= latency["p50"] <= latency["p95"] <= latency["p99"]
    assert report["queue_depth"] >= 0 and report["queue_size"] == 256
    assert report["rss_bytes"] > 10 * 2**20 and report["cpu_percent"] >= 0
    assert "cpu_temperature_c" in report  # a number, or null where the OS exposes none
    assert report["throughput_per_s"] >= 0 and report["uptime_s"] > 0
    assert report["provisioning"] == [] and report["connected"] is True


def test_retained_status_is_online(serving, mosquitto) -> None:
    node, _ = serving
    late = Collector(mosquitto, [node.status_topic()])
    try:
        status = late.wait_count(node.status_topic(), 1)[0]
    finally:
        late.close()
    assert status.retain and status.json()["state"] == "online"
    assert status.json()["node_id"] == node.node_id


def node_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    import os
    import sys

    return subprocess.run(
        [sys.executable, "-m", "node", *args],
        capture_output=True, text=True, timeout=WAIT_S, check=False,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


def test_help_and_argument_errors(tmp_path) -> None:
    top = node_cli("--help")
    assert top.returncode == 0 and "start" in top.stdout
    start = node_cli("start", "--help")
    assert start.returncode == 0
    for option in ("--model", "--broker", "--node-id", "--max-batch", "--watch-mount"):
        assert option in start.stdout
    # Without --model the node serves $REPEDGE_MODEL or the shipped models/default;
    # with neither it says what to give.
    no_model = node_cli(
        "start", "--node-id", "x", "--state-dir", str(tmp_path),
        env={"REPEDGE_MODEL": str(tmp_path / "no-bundle-here")},
    )  # fmt: skip
    assert no_model.returncode == 2 and "--model" in no_model.stderr
    missing = node_cli("start", "--model", str(tmp_path / "nothing"), "--state-dir", str(tmp_path))
    assert missing.returncode == 2 and "no model at" in missing.stderr


def test_default_model_is_the_shipped_bundle() -> None:
    """`node start` with no --model serves models/default, which must load and classify."""
    from edgemodel.bundle import DEFAULT_BUNDLE_DIR, default_bundle_path
    from edgemodel.inference import Classifier

    assert default_bundle_path() == DEFAULT_BUNDLE_DIR
    clf = Classifier.from_path(DEFAULT_BUNDLE_DIR)
    assert clf.bundle.variant == clf.bundle.manifest.default_variant == "int4"
    negative, positive = clf.classify(
        ["worst car i ever owned, the engine died twice and the dealer laughed at me",
         "absolutely love my new car, best purchase ever"],
    )  # fmt: skip
    assert (negative.label, positive.label) == ("negative", "positive")


def test_node_entity_is_the_entity_of_tweets_without_one(node_factory, mosquitto, tiny_bundle):
    node = node_factory(extra=["--entity", "Honda"])
    watcher = Collector(mosquitto, [node.topics.labels, node.status_topic()])
    node.start_and_wait_online(watcher)
    text = "recall announced for the new hatchback"
    publish(
        mosquitto,
        node.topics.tweets,
        [text, json.dumps({"id": "own", "text": text, "entity": "Fiat"})],
    )
    records = labels_for(watcher, node.topics, {content_id(text, "Honda"), "own"})
    honda, fiat = records[content_id(text, "Honda")], records["own"]
    assert honda["entity"] == "Honda" and fiat["entity"] == "Fiat"
    # The label is the model's answer for (text, entity), not for the bare text.
    clf = Classifier(tiny_bundle)
    with_entity, bare = clf.classify([text, text], ["Honda", None])
    assert with_entity.scores != bare.scores
    for label, score in with_entity.scores.items():
        assert math.isclose(honda["scores"][label], score, abs_tol=1e-4)
    watcher.close()
