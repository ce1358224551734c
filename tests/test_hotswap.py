"""A running node picks up a signed model from a "USB stick" folder mid-stream.

2,000 tweets stream over MQTT with QoS 1 while an artifact is written to the folder the node
watches. Every tweet gets exactly one label (repeats are byte-identical), tweets sent after
the node announced the install carry the new model's identity, and the provisioning events
reach MQTT and telemetry.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from common.mqttclient import new_client
from edgemodel.canaries import DEFAULT_CANARIES, compute_canaries
from edgemodel.inference import Classifier
from harness import WAIT_S, Collector
from provisioning.artifact import build_artifact, runtime_of
from provisioning.keys import generate_keypair, load_private_key
from provisioning.usb import write_to_stick
from trainer.tiny import build_tiny_bundle

TOTAL = 2000
# Up to this many tweets stream freely; after that they trickle until the node announces
# the new model, so the swap is guaranteed to land while tweets are still flowing.
FREE = 1000


def signed_artifact(tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    """Operator side: a key pair and a new model (other seed, version 0.0.2) signed as 2."""
    generate_keypair(tmp_path / "operator.key", tmp_path / "operator.pub")
    bundle = build_tiny_bundle(tmp_path / "new-model", version="0.0.2", seed=1)
    classifier = Classifier(bundle)
    canaries, _ = compute_canaries(classifier, DEFAULT_CANARIES[:3])
    artifact = build_artifact(
        bundle,
        load_private_key(tmp_path / "operator.key"),
        "2",
        tmp_path / "artifacts",
        canaries,
        runtime_of(classifier),
    )
    return artifact, tmp_path / "operator.pub", bundle.identity()


@pytest.mark.slow
def test_hot_swap_mid_stream(node_factory, mosquitto, tiny_bundle, topics, tmp_path) -> None:
    artifact, public_key, new_identity = signed_artifact(tmp_path)
    old_identity = tiny_bundle.identity()
    assert old_identity != new_identity
    mount = tmp_path / "usb"
    mount.mkdir()
    node = node_factory(
        extra=[
            "--watch-mount", str(mount),
            "--trust-key", str(public_key),
            "--provision-state", str(tmp_path / "provisioning"),
            "--telemetry-interval", "0.5",
        ]
    )  # fmt: skip
    events_topic = f"repedge/nodes/{node.node_id}/events"
    telemetry_topic = f"repedge/nodes/{node.node_id}/telemetry"
    watcher = Collector(
        mosquitto, [topics.labels, topics.errors, f"repedge/nodes/{node.node_id}/#"]
    )
    node.start_and_wait_online(watcher)

    payloads = [
        json.dumps({"id": f"t{i}", "text": f"tweet {i}: the new phone from acme", "entity": "acme"})
        for i in range(TOTAL)
    ]
    announced = threading.Event()
    first_after: list[int] = []  # index of the first tweet sent after "installed" was seen
    failure: list[BaseException] = []

    def stream() -> None:
        client = new_client(mosquitto.endpoint())
        client.max_inflight_messages_set(100)
        client.connect(mosquitto.host, mosquitto.port)
        client.loop_start()
        try:
            i = 0
            while i < TOTAL:
                if announced.is_set() and not first_after:
                    first_after.append(i)
                step = 50 if i < FREE or announced.is_set() else 5
                infos = [client.publish(topics.tweets, p, qos=1) for p in payloads[i : i + step]]
                for info in infos:
                    info.wait_for_publish(WAIT_S)
                i += step
                if i >= FREE and not announced.is_set():
                    announced.wait(0.25)  # pacing only; nothing is asserted about time
        except BaseException as exc:
            failure.append(exc)
        finally:
            client.disconnect()
            client.loop_stop()

    publisher = threading.Thread(target=stream, name="tweet-stream")
    publisher.start()
    try:
        watcher.wait_count(topics.labels, 300)  # mid-stream: the old model is serving
        write_to_stick(artifact, mount)
        installed = watcher.wait_for(
            lambda _m: [e for e in watcher.json(events_topic) if e["event"] == "installed"],
            what=f"an 'installed' event; node log:\n{node.log()}",
        )[0]
        announced.set()
    finally:
        announced.set()
        publisher.join(WAIT_S * 2)
    assert not failure, failure
    assert first_after and first_after[0] < TOTAL, "the stream ended before the swap"

    def all_labelled(_msgs):
        seen = {m.json()["id"] for m in watcher.on(topics.labels)}
        return len(seen) >= TOTAL

    watcher.wait_for(all_labelled, timeout=WAIT_S * 2, what=f"{TOTAL} labels")
    assert watcher.on(topics.errors) == []

    first: dict[str, bytes] = {}
    for message in watcher.on(topics.labels):
        record = json.loads(message.payload)
        # QoS 1 may repeat a record; a repeat must be the stored original, byte for byte.
        assert first.setdefault(record["id"], message.payload) == message.payload
    assert set(first) == {f"t{i}" for i in range(TOTAL)}
    models = {i: json.loads(first[f"t{i}"])["model"] for i in range(TOTAL)}
    assert all(m in (old_identity, new_identity) for m in models.values())
    assert all(models[i] == new_identity for i in range(first_after[0], TOTAL))
    assert models[0] == old_identity

    # The provisioning events went out on MQTT, in order, and telemetry reports them.
    events = watcher.json(events_topic)
    assert [e["event"] for e in events] == ["install_started", "installed"]
    assert installed["version"] == "2" and installed["model"] == new_identity
    report = watcher.wait_for(
        lambda _m: [
            t
            for t in watcher.json(telemetry_topic)
            if t["model"] == new_identity
            and any(e["event"] == "installed" for e in t["provisioning"])
        ],
        what="telemetry with the new model and its install event",
    )[0]
    assert report["provisioning"][-1]["version"] == "2"
    state = json.loads((tmp_path / "provisioning" / "active.json").read_text())
    assert state["active"] == "2"
    watcher.close()
