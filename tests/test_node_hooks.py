"""The hot-swap hooks provisioning uses: swap_classifier() and record_event()."""

from __future__ import annotations

import json
import shutil

import pytest

from edgemodel.bundle import ModelBundle, update_manifest
from edgemodel.inference import Classifier
from harness import WAIT_S, Collector, embedded_node, publish


@pytest.fixture
def second_model(tiny_bundle, tmp_path) -> ModelBundle:
    """Same weights, another version: enough to tell which model produced a record."""
    root = tmp_path / "v2"
    shutil.copytree(tiny_bundle.root, root)
    update_manifest(root, version="0.0.2")
    return ModelBundle.load(root)


def versions(watcher: Collector, topic: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for record in watcher.json(topic):
        out.setdefault(record["id"], []).append(record["model"]["version"])
    return out


def test_swap_between_batches_and_events(mosquitto, tiny_bundle, second_model, tmp_path):
    service, topics = embedded_node(mosquitto, tmp_path, Classifier(tiny_bundle, num_threads=1))
    events_topic = service.config.node_topic("events")
    watcher = Collector(mosquitto, [topics.labels, events_topic])
    service.start()
    try:
        assert service.wait_connected(WAIT_S)
        publish(mosquitto, topics.tweets, [json.dumps({"id": "before", "text": "good car"})])
        watcher.wait_for(lambda _: "before" in versions(watcher, topics.labels))

        service.swap_classifier(Classifier(second_model, num_threads=1))
        event = {"event": "installed", "version": "0.0.2"}
        service.record_event(event)
        publish(
            mosquitto,
            topics.tweets,
            [json.dumps({"id": "after", "text": "good car"}),
             json.dumps({"id": "before", "text": "good car"})],  # a redelivery, say
        )  # fmt: skip
        watcher.wait_for(lambda _: len(watcher.on(topics.labels)) == 3)
        got = versions(watcher, topics.labels)
        assert got == {"before": ["0.0.1", "0.0.1"], "after": ["0.0.2"]}
        repeats = [m.payload for m in watcher.on(topics.labels) if m.json()["id"] == "before"]
        assert repeats[0] == repeats[1]  # the repeat is the stored record, verbatim

        assert watcher.wait_count(events_topic, 1)[0].json() == event
        telemetry = service.telemetry()
        assert telemetry["model"] == second_model.identity()
        assert telemetry["provisioning"] == [event]
    finally:
        assert service.stop()
        watcher.close()


def test_without_a_model_tweets_wait_for_one(mosquitto, tiny_bundle, tmp_path):
    service, topics = embedded_node(mosquitto, tmp_path, None)
    watcher = Collector(mosquitto, [topics.labels])
    service.start()
    try:
        assert service.wait_connected(WAIT_S)
        publish(mosquitto, topics.tweets, [json.dumps({"id": "w1", "text": "waiting"})])
        assert service.telemetry()["model"] is None
        service.swap_classifier(Classifier(tiny_bundle, num_threads=1))
        assert watcher.wait_count(topics.labels, 1)[0].json()["id"] == "w1"
    finally:
        service.stop()
        watcher.close()
