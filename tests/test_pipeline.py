"""The whole offline pipeline on a tiny config and a slice of the shared data.

Train a few steps, export all four FlatBuffer variants, evaluate them through the node's
inference code, and check what the bundle and the reports say.
"""

import json
import uuid
from pathlib import Path

import pytest

from edgemodel.bundle import ModelBundle
from edgemodel.inference import Classifier
from edgemodel.splits import DataSources
from harness import Collector, NodeProcess, Topics, publish
from trainer.pipeline import run_training
from trainer.train import TrainConfig

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SEMEVAL = SHARED / "semeval2017" / "train_2013-2016.tsv"
REPLAB = SHARED / "replab2013" / "automotive_en.tsv"

# Every test here needs the module's training run (about 80 s on 2 cores).
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (SEMEVAL.exists() and REPLAB.exists()), reason="needs ../shared/data"),
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run")
    config = TrainConfig(
        base="tiny-bert", epochs=1, batch_size=16, eval_every=4, max_length=48, filter_head=True
    )
    run_training(config, DataSources(semeval=SEMEVAL, replab=REPLAB, limit=48), out)
    return out


def test_bundle_has_all_variants_with_matching_hashes(trained):
    bundle = ModelBundle.load(trained / "bundle")  # verifies the default variant's sha256
    assert set(bundle.manifest.variants) == {"fp32", "fp16", "int8", "int8-full"}
    for variant in bundle.manifest.variants:
        ModelBundle.load(trained / "bundle", variant=variant).verify()
    sizes = {v: i.size_bytes for v, i in bundle.manifest.variants.items()}
    assert sizes["int8"] < sizes["fp16"] < sizes["fp32"]
    assert bundle.manifest.entity_input
    assert bundle.manifest.training["config"]["base"] == "tiny-bert"
    assert bundle.labels == ["negative", "neutral", "positive"]


def test_every_variant_is_evaluated_on_every_held_out_set(trained):
    """RepLab's and SemEval's held-out tests, and SemEval's temporal hold-out (its latest
    tweets by time, kept out of training)."""
    metrics = ModelBundle.load(trained / "bundle").manifest.metrics
    assert set(metrics) == {"semeval", "semeval_temporal", "replab"}
    for source in metrics.values():
        assert set(source["variants"]) == {"fp32", "fp16", "int8", "int8-full"}
        for scores in source["variants"].values():
            assert 0.0 <= scores["accuracy"] <= 1.0
            assert 0.0 <= scores["macro_recall"] <= 1.0
    reports = trained / "reports"
    assert json.loads((reports / "test_replab.json").read_text())["dataset"]["size"] > 0
    assert "| int8 |" in (reports / "test_semeval.md").read_text()
    assert "| int8 |" in (reports / "test_semeval_temporal.md").read_text()


def test_training_history_and_dev_selection_are_recorded(trained):
    summary = json.loads((trained / "checkpoints" / "training.json").read_text())
    assert summary["history"], "dev was never scored"
    assert summary["best"]["score"] == max(h["score"] for h in summary["history"])
    assert (trained / "checkpoints" / "best.weights.h5").exists()


def test_exported_int8_runs_in_the_node_classifier(trained):
    clf = Classifier.from_path(trained / "bundle" / "int8.tflite")
    [pred] = clf.classify(["my new bmw is amazing"], ["BMW"])
    assert pred.label in clf.labels
    assert sum(pred.scores.values()) == pytest.approx(1.0, abs=1e-4)


def test_trained_int8_served_by_the_node_through_mosquitto(trained, mosquitto, tmp_path):
    """`node start --model .../int8.tflite` labels tweets published to a real broker, and
    its labels are the ones the trainer's evaluation path (the same Classifier) gives."""
    node_id = f"p{uuid.uuid4().hex[:8]}"
    topics = Topics(f"test/pipeline/{node_id}")
    node = NodeProcess(
        model=trained / "bundle" / "int8.tflite",
        broker=mosquitto,
        node_id=node_id,
        topics=topics,
        state_dir=tmp_path / "state",
    )
    watcher = Collector(mosquitto, [topics.labels, topics.errors, f"repedge/nodes/{node_id}/#"])
    tweets = [
        {"id": "a", "text": "my new bmw is amazing", "entity": "BMW"},
        {"id": "b", "text": "worst customer service ever, avoid this dealer"},
        {"id": "c", "text": "Volvo recalls 50,000 cars", "entity": "Volvo"},
    ]
    try:
        node.start_and_wait_online(watcher)
        publish(mosquitto, topics.tweets, [json.dumps(t) for t in tweets])
        records = {m.json()["id"]: m.json() for m in watcher.wait_count(topics.labels, 3)}
    finally:
        watcher.close()
        node.kill()
    clf = Classifier.from_path(trained / "bundle" / "int8.tflite")
    expected = clf.classify([t["text"] for t in tweets], [t.get("entity") for t in tweets])
    for tweet, pred in zip(tweets, expected, strict=True):
        record = records[tweet["id"]]
        assert record["label"] == pred.label
        assert record["scores"] == pytest.approx(pred.scores, abs=1e-5)
        assert record["model"]["variant"] == "int8"
