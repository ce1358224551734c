"""Two heads on one encoder: reputation with an entity, sentiment without (--task-heads).

A tiny random classifier is exported by the real path and run by the node's Classifier;
each tweet's logits must be the head its input selects, in Keras and in the FlatBuffer.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
from tokenizers import Tokenizer

from node.inference import Classifier, pad_batch
from trainer.encoders import minilm_folder
from trainer.encoders.bert import tiny_bert
from trainer.model import build_classifier, has_task_heads
from trainer.tiny import LABELS, build_tiny_bundle

TWEETS = [
    ("recall announced for the new hatchback", "Honda"),
    ("recall announced for the new hatchback", None),
    ("what a drive, love it", "BMW"),
    ("what a drive, love it", None),
]


@pytest.fixture(scope="module")
def model() -> keras.Model:
    vocab = Tokenizer.from_file(str(minilm_folder() / "tokenizer.json")).get_vocab_size()
    return build_classifier(tiny_bert(vocab, seed=3), num_labels=len(LABELS), task_heads=True)


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
    vocab = Tokenizer.from_file(str(minilm_folder() / "tokenizer.json")).get_vocab_size()
    assert not has_task_heads(build_classifier(tiny_bert(vocab), num_labels=3))
