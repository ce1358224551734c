"""Two heads on one encoder: reputation with an entity, sentiment without (--task-heads).

A tiny random classifier is exported by the real path and run by the node's Classifier;
each tweet's logits must be the head its input selects, in Keras and in the FlatBuffer.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from edgemodel.data import Example
from edgemodel.inference import Classifier, pad_batch
from harness.tweets import TWEETS
from trainer.compress import CompressOptions, compress_bundle
from trainer.model import has_task_heads
from trainer.tiny import build_tiny_bundle, tiny_classifier


@pytest.fixture(scope="module")
def model() -> keras.Model:
    return tiny_classifier(seed=3, task_heads=True)


@pytest.fixture(scope="module")
def classifier(model: keras.Model, tmp_path_factory: pytest.TempPathFactory) -> Classifier:
    root = tmp_path_factory.mktemp("heads") / "bundle"
    return Classifier(build_tiny_bundle(Path(root), variants=("fp32",), model=model))


def head_outputs(model: keras.Model, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    names = ("reputation_logits", "sentiment_logits", "logits")
    probe = keras.Model(model.inputs, [model.get_layer(n).output for n in names])
    inputs = [batch["input_ids"], batch["segment_ids"], batch["attention_mask"]]
    return dict(zip(names, (np.asarray(x) for x in probe(inputs, training=False)), strict=True))


def test_each_tweet_gets_the_head_its_input_selects(model, classifier) -> None:
    encoded = [classifier.encode(text, entity) for text, entity in TWEETS]
    outputs = head_outputs(model, pad_batch(encoded))
    with_entity = np.array([entity is not None for _, entity in TWEETS])
    expected = np.where(
        with_entity[:, None], outputs["reputation_logits"], outputs["sentiment_logits"]
    )
    np.testing.assert_allclose(outputs["logits"], expected, atol=1e-6)
    # The heads differ, so the selection is visible in the output.
    assert not np.allclose(outputs["reputation_logits"], outputs["sentiment_logits"], atol=1e-3)

    flatbuffer = classifier.predict_logits(encoded)
    np.testing.assert_allclose(flatbuffer, expected, atol=1e-4)


def test_padding_never_selects_the_reputation_head(model, classifier) -> None:
    """Padded rows of a mixed batch keep segment 0 for the padding, so no false entity."""
    short = classifier.encode("ok", None)
    long = classifier.encode("a long tweet about the dealer and the service", "Fiat")
    together = classifier.predict_logits([short, long])
    alone = classifier.predict_logits([short])
    np.testing.assert_allclose(together[0], alone[0], atol=1e-4)


def test_task_heads_are_recognised(model) -> None:
    assert has_task_heads(model)
    assert not has_task_heads(tiny_classifier(seed=3))


@pytest.mark.slow
def test_pruned_vocabulary_keeps_both_heads(model, tmp_path: Path) -> None:
    parent = build_tiny_bundle(tmp_path / "parent", variants=("fp32",), model=model)
    corpus = [Example(text=t, label="neutral", entity=e) for t, e in TWEETS]
    pruned = compress_bundle(
        model, parent, corpus, tmp_path / "pruned", CompressOptions(variants=("fp32",))
    )
    logits = []
    for bundle in (parent, pruned):
        clf = Classifier(bundle)
        logits.append(clf.predict_logits([clf.encode(t, e) for t, e in TWEETS]))
    np.testing.assert_allclose(logits[1], logits[0], atol=1e-5)
