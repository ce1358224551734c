"""Adapt on the node while tweets stream at 50/s: the adapted head replaces the served model
only when cross-validation says it is better, no tweet is lost or labelled twice across
the swap, provisioning events record it, and rollback restores the previous model."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path

from common.endpoint import BrokerEndpoint
from common.mqttclient import new_client
from edgemodel.bundle import ModelBundle
from edgemodel.inference import Classifier
from harness import REPO, WAIT_S, Collector, embedded_node, publish, wait_until
from node.serve import adapted_slot_for
from node.teach_client import TeachClient
from provisioning.install import installed_slot, read_state
from provisioning.local import LocalSlots

RATE = 50.0


def label_file(n: int) -> str:
    """Labels a rule decides (the random tiny model does not know it): learnable."""
    rows = ["id\tentity\tfiltering\tpolarity\ttext"]
    kinds = [
        ("RELATED", "positive", "love love my new kia, wonderful"),
        ("RELATED", "negative", "hate this broken kia, awful awful"),
        ("UNRELATED", "", "rain and cold weather in the mountains today"),
    ]
    for i in range(n):
        filtering, polarity, text = kinds[i % 3]
        rows.append(f"l{i}\tKia\t{filtering}\t{polarity}\t{text} {i}")
    return "\n".join(rows) + "\n"


def stream(mosquitto, topic: str, stop: threading.Event, sent: list[str]) -> None:
    client = new_client(mosquitto.endpoint())
    client.connect(mosquitto.host, mosquitto.port)
    client.loop_start()
    next_at = time.monotonic()
    while not stop.is_set():
        tweet_id = f"s{len(sent)}"
        text = f"driving my kia to work number {len(sent)}"
        body = json.dumps({"id": tweet_id, "text": text, "entity": "Kia"})
        client.publish(topic, body, qos=1)
        sent.append(tweet_id)
        next_at += 1 / RATE
        time.sleep(max(0.0, next_at - time.monotonic()))
    client.disconnect()
    client.loop_stop()


def provision_elsewhere(bundle: Path, work: Path) -> Classifier:
    """Operator: keygen, `provision bundle`, `provision write` to a stick; the other node:
    `provision install` from it. The classifier the other node then serves."""
    from typer.testing import CliRunner

    from provisioning.cli import app

    runner = CliRunner()
    key, stick, state = work / "site.key", work / "usb", work / "node2"
    stick.mkdir(parents=True)
    steps = [
        ["keygen", str(key)],
        ["bundle", str(bundle), "--key", str(key), "--version", "7", "--out", str(work / "a")],
    ]
    for step in steps:
        result = runner.invoke(app, step)
        assert result.exit_code == 0, result.output
    (artifact,) = (work / "a").iterdir()
    for step in (
        ["write", str(artifact), "--to", str(stick)],
        ["install", "--from", str(stick), "--state-dir", str(state),
         "--trust-key", f"{key}.pub"],
    ):  # fmt: skip
        result = runner.invoke(app, step)
        assert result.exit_code == 0, result.output
    slot = installed_slot(state)
    assert slot is not None
    return Classifier(ModelBundle.load(slot.path, variant=slot.variant))


def test_adapt_swaps_under_load_and_rolls_back(mosquitto, tiny_bundle, tmp_path: Path) -> None:
    service, topics = embedded_node(mosquitto, tmp_path, Classifier(tiny_bundle, num_threads=1))
    service.model_slots = LocalSlots(tmp_path / "provisioning")
    watcher = Collector(mosquitto, [topics.labels, "repedge/nodes/+/events"])
    service.start()
    teacher = TeachClient(BrokerEndpoint.parse(mosquitto.url))
    node = service.config.node_id
    try:
        assert service.wait_connected(WAIT_S)
        # Too few labels to say anything: the node keeps its model and says why.
        teacher.request(node, "import", tsv=label_file(3), timeout=WAIT_S)
        refused = teacher.request(node, "adapt", entity="Kia", timeout=WAIT_S)
        assert not refused["swapped"] and "kept the current model" in refused["reason"]
        assert service.model_identity() == tiny_bundle.identity()
        unknown = teacher.request(node, "adapt", entity="Kai", timeout=WAIT_S)
        assert not unknown["swapped"] and "entities with labels: Kia" in unknown["reason"]

        assert teacher.request(node, "import", tsv=label_file(60))["added"] == 57
        sent: list[str] = []
        stop = threading.Event()
        feeder = threading.Thread(target=stream, args=(mosquitto, topics.tweets, stop, sent))
        feeder.start()
        try:
            watcher.wait_count(topics.labels, 25)  # the stream is flowing
            before = weakref.ref(service.current_classifier())
            adapted = teacher.request(node, "adapt", entity="Kia")
            assert adapted["swapped"], adapted
            new_sha = adapted["model"]
            assert "polarity accuracy, current model on the labels" in adapted["summary"]

            def after_swap(msgs):
                return [m for m in msgs if m.topic == topics.labels
                        and m.json()["model"]["version"] == new_sha["version"]]  # fmt: skip

            watcher.wait_for(lambda msgs: len(after_swap(msgs)) >= 25, what="labels after swap")
            assert before() is None, "the model served before the swap is released"
        finally:
            stop.set()
            feeder.join()
        labels = watcher.wait_count(topics.labels, len(sent))
        ids = [m.json()["id"] for m in labels]
        assert sorted(ids) == sorted(sent), "every tweet labelled exactly once across the swap"
        assert (
            service.model_identity()["version"]
            == new_sha["version"]
            != tiny_bundle.manifest.version
        )
        assert read_state(tmp_path / "provisioning")["previous"] is not None

        # A restart with the same --model serves the adaptation; after rollback, not.
        prov = tmp_path / "provisioning"
        assert adapted_slot_for(tiny_bundle.root, prov) is not None

        back = teacher.request(node, "rollback", timeout=WAIT_S)
        assert back["swapped"] and back["model"]["version"] == tiny_bundle.manifest.version
        assert service.model_identity()["version"] == tiny_bundle.manifest.version

        def events(msgs) -> list[str]:
            return [m.json()["event"] for m in msgs if m.topic.endswith("/events")]

        assert adapted_slot_for(tiny_bundle.root, prov) is None
        seen = watcher.wait_for(lambda msgs: "rolled_back" in events(msgs) and events(msgs))
        assert seen.count("adapt_refused") == 2 and "adapted" in seen

        # Fleet: the adapted bundle (kept as the previous slot) signs and provisions to
        # another, air-gapped node of the site like any bundle.
        state = read_state(tmp_path / "provisioning")
        adapted_dir = tmp_path / "provisioning" / "slots" / state["previous"] / "bundle"
        other = provision_elsewhere(adapted_dir, tmp_path / "fleet")
        texts = ["love love my new kia, wonderful 1000", "hate this broken kia, awful 1001"]
        ours = Classifier(ModelBundle.load(adapted_dir)).classify(texts, ["Kia", "Kia"])
        assert other.bundle.identity()["version"] == new_sha["version"]
        assert other.classify(texts, ["Kia", "Kia"]) == ours
    finally:
        teacher.close()
        service.stop()
        watcher.close()


def test_an_idle_node_releases_the_replaced_model(mosquitto, tiny_bundle, tmp_path: Path) -> None:
    """A swap while no tweet arrives frees the replaced model at once: nothing in the node
    (the inference loop between batches included) keeps its interpreter and packed weights,
    so the node does not hold two models until the next tweet, or for good."""
    service, topics = embedded_node(mosquitto, tmp_path, Classifier(tiny_bundle, num_threads=1))
    service.model_slots = LocalSlots(tmp_path / "provisioning")
    watcher = Collector(mosquitto, [topics.labels])
    service.start()
    teacher = TeachClient(BrokerEndpoint.parse(mosquitto.url))
    node = service.config.node_id

    def label(n: int, prefix: str) -> None:
        tweets = [json.dumps({"id": f"{prefix}{i}", "text": f"my kia {i}", "entity": "Kia"})
                  for i in range(n)]  # fmt: skip
        publish(mosquitto, topics.tweets, tweets)
        watcher.wait_for(
            lambda msgs: sum(m.json()["id"].startswith(prefix) for m in msgs) == n,
            what=f"labels of the {prefix} tweets",
        )

    try:
        assert service.wait_connected(WAIT_S)
        teacher.request(node, "import", tsv=label_file(60), timeout=WAIT_S)
        label(5, "first-")  # the inference loop has served the first model
        served = weakref.ref(service.current_classifier())
        adapted = teacher.request(node, "adapt", entity="Kia", timeout=WAIT_S)
        assert adapted["swapped"], adapted
        wait_until(lambda: served() is None, what="the model served before adapt released")
        label(5, "adapted-")  # now the loop has run the adapted model
        replaced = weakref.ref(service.current_classifier())
        back = teacher.request(node, "rollback", timeout=WAIT_S)
        assert back["swapped"], back
        wait_until(lambda: replaced() is None, what="the adapted model released on rollback")
        label(3, "after-")  # and the node serves on
    finally:
        teacher.close()
        service.stop()
        watcher.close()


def test_local_slots_need_no_cryptography(tiny_bundle, tmp_path: Path) -> None:
    """Installing and rolling back the node's own adaptations (local slots) loads no
    cryptography: its native library would cost an adapting node ~6 MiB of RSS for
    signatures it never checks. Signed USB installs import it where they need it."""
    code = (
        "import sys\n"
        "import node.serve, node.service\n"
        "from edgemodel.bundle import ModelBundle\n"
        "from edgemodel.inference import Classifier\n"
        "from provisioning.local import LocalSlots\n"
        f"bundle = ModelBundle.load({str(tiny_bundle.root)!r})\n"
        f"slots = LocalSlots({str(tmp_path / 'provisioning')!r})\n"
        "for _ in range(2):\n"
        "    slots.install(bundle, Classifier(bundle, num_threads=1), [], {'source': 'test'})\n"
        "slots.rollback()\n"
        "assert 'cryptography' not in sys.modules, 'cryptography was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
