"""Three heads on one encoder (reputation, sentiment, related/unrelated), exported by the
real path and served by the node's inference code, in Keras and in LiteRT; the related
answer in label records through a real Mosquitto; older bundles without the head."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from edgemodel.bundle import EMBEDDING_OUTPUT, RELATED_OUTPUT
from edgemodel.inference import Classifier, pad_batch, softmax
from harness import Collector, publish
from harness.tweets import TWEETS
from trainer.tiny import build_tiny_bundle, tiny_classifier


@pytest.fixture(scope="module")
def model() -> keras.Model:
    return tiny_classifier(seed=5, task_heads=True, related_head=True)


@pytest.fixture(scope="module")
def bundle(model: keras.Model, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("three") / "bundle"
    return build_tiny_bundle(Path(root), variants=("fp32", "int8"), model=model)


def keras_outputs(model: keras.Model, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    names = ("reputation_logits", "sentiment_logits", "logits", "filter_logits", "mean_pool")
    probe = keras.Model(model.inputs, [model.get_layer(n).output for n in names])
    inputs = [batch["input_ids"], batch["segment_ids"], batch["attention_mask"]]
    return dict(zip(names, (np.asarray(x) for x in probe(inputs, training=False)), strict=True))


def test_each_tweet_gets_the_heads_its_input_selects(model, bundle) -> None:
    clf = Classifier(bundle.__class__.load(bundle.root, variant="fp32"))
    assert clf.has_related_head and clf.has_embedding
    encoded = [clf.encode(text, entity) for text, entity in TWEETS]
    ref = keras_outputs(model, pad_batch(encoded))
    with_entity = np.array([entity is not None for _, entity in TWEETS])
    expected = np.where(with_entity[:, None], ref["reputation_logits"], ref["sentiment_logits"])
    np.testing.assert_allclose(ref["logits"], expected, atol=1e-6)

    raw = clf.run(encoded)
    np.testing.assert_allclose(raw["logits"], expected, atol=1e-4)
    np.testing.assert_allclose(raw[RELATED_OUTPUT], ref["filter_logits"], atol=1e-4)
    np.testing.assert_allclose(raw[EMBEDDING_OUTPUT], ref["mean_pool"], atol=1e-4)

    predictions = clf.predict(encoded)
    for (_, entity), prediction, rel in zip(TWEETS, predictions, ref["filter_logits"], strict=True):
        if entity is None:
            assert prediction.related_score is None and prediction.related is None
        else:
            assert prediction.related_score == pytest.approx(float(softmax(rel)[1]), abs=1e-4)
            assert prediction.related == (prediction.related_score >= 0.5)


def test_int8_keeps_the_related_head(bundle) -> None:
    fp32 = Classifier(bundle.__class__.load(bundle.root, variant="fp32"))
    int8 = Classifier(bundle.__class__.load(bundle.root, variant="int8"))
    encoded = [fp32.encode(text, entity) for text, entity in TWEETS]
    a, b = fp32.predict(encoded), int8.predict(encoded)
    for x, y in zip(a, b, strict=True):
        assert (x.related_score is None) == (y.related_score is None)
        if x.related_score is not None:
            assert y.related_score == pytest.approx(x.related_score, abs=0.05)


def test_older_bundle_without_the_head_gives_no_related(tiny_bundle) -> None:
    clf = Classifier(tiny_bundle)
    assert not clf.has_related_head
    (prediction,) = clf.classify(["what a drive, love it"], ["BMW"])
    assert prediction.related_score is None


def test_label_records_carry_related_through_mosquitto(bundle, node_factory, mosquitto) -> None:
    node = node_factory(model=bundle.root)
    watcher = Collector(mosquitto, [node.status_topic(), node.topics.labels])
    try:
        node.start_and_wait_online(watcher)
        publish(
            mosquitto,
            node.topics.tweets,
            [
                '{"id": "with", "text": "what a drive, love it", "entity": "BMW"}',
                '{"id": "without", "text": "what a drive, love it"}',
            ],
        )
        records = {
            r["id"]: r for r in (m.json() for m in watcher.wait_count(node.topics.labels, 2))
        }
    finally:
        watcher.close()
    with_entity, without = records["with"], records["without"]
    assert isinstance(with_entity["related"], bool)
    assert 0.0 <= with_entity["related_score"] <= 1.0
    assert with_entity["related"] == (with_entity["related_score"] >= 0.5)
    assert set(with_entity["scores"]) == {"negative", "neutral", "positive"}
    assert "related" not in without and "related_score" not in without


def test_pruned_vocabulary_keeps_the_related_head(model, bundle, tmp_path: Path) -> None:
    from edgemodel.data import Example
    from trainer.compress import CompressOptions, compress_bundle

    parent = bundle.__class__.load(bundle.root, variant="fp32")
    corpus = [Example(text=t, label="neutral", entity=e) for t, e in TWEETS]
    pruned = compress_bundle(
        model, parent, corpus, tmp_path / "pruned", CompressOptions(variants=("fp32",))
    )
    answers = []
    for b in (parent, pruned):
        clf = Classifier(b)
        assert clf.has_related_head
        answers.append(clf.run([clf.encode(t, e) for t, e in TWEETS]))
    np.testing.assert_allclose(answers[1][RELATED_OUTPUT], answers[0][RELATED_OUTPUT], atol=1e-5)
