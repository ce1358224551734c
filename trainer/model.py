"""The polarity classifier: an encoder, masked mean pooling, a softmax head."""

from __future__ import annotations

import keras

from edgemodel.bundle import INPUT_NAMES
from edgemodel.bundle import RELATED_OUTPUT as RELATED_OUTPUT_NAME


class MaskedMeanPool(keras.layers.Layer):
    """Mean of the token vectors under the attention mask.

    all-MiniLM-L6-v2 was trained with mean pooling, so it is the natural read-out.
    ``ops.expand_dims`` (not ``x[..., None]``) keeps the graph free of Flex ops.
    """

    def call(self, sequence, mask):
        weights = keras.ops.expand_dims(keras.ops.cast(mask, sequence.dtype), axis=-1)
        total = keras.ops.sum(sequence * weights, axis=1)
        count = keras.ops.maximum(keras.ops.sum(weights, axis=1), 1.0)
        return total / count


class SelectByEntity(keras.layers.Layer):
    """Per tweet: the reputation head's logits if it came with an entity, else sentiment's.

    A tweet has an entity exactly when some token is in segment 1 (``[CLS] tweet [SEP]
    entity [SEP]``), so the choice needs no extra model input and the node's contract stays
    as it is. Built from REDUCE_MAX, MINIMUM and arithmetic: LiteRT builtins only.
    """

    def call(self, reputation, sentiment, segment_ids):
        has_entity = keras.ops.minimum(keras.ops.max(segment_ids, axis=1, keepdims=True), 1)
        has_entity = keras.ops.cast(has_entity, reputation.dtype)
        return has_entity * reputation + (1.0 - has_entity) * sentiment


REPUTATION_HEAD = "reputation_logits"
# Output names of the Keras model; the exported FlatBuffer uses the same names
# (edgemodel.bundle.OUTPUT_NAME, RELATED_OUTPUT, EMBEDDING_OUTPUT).
RELATED_OUTPUT = RELATED_OUTPUT_NAME
POOLED_LAYER = "mean_pool"
RELATED_HEAD = "filter_logits"  # the layer's name since the head was trained, not exported


def build_classifier(
    backbone: keras.Model,
    num_labels: int,
    dropout: float = 0.1,
    num_filter_labels: int = 0,
    task_heads: bool = False,
) -> keras.Model:
    """Inputs (input_ids, segment_ids, attention_mask) -> logits [batch, num_labels].

    With ``task_heads`` two heads share the encoder: reputation polarity for tweets given
    with an entity (RepLab) and sentiment for tweets without one (SemEval); see
    :class:`SelectByEntity`. With ``num_filter_labels`` another head predicts RepLab
    filtering (is the tweet about the entity: unrelated/related) from the same pooled
    vector; it is exported as a second output, read by the node for tweets with an entity.
    """
    ids, segments, mask = (keras.Input((None,), dtype="int32", name=n) for n in INPUT_NAMES)
    encoded = backbone({"token_ids": ids, "segment_ids": segments, "padding_mask": mask})
    pooled = MaskedMeanPool(name=POOLED_LAYER)(encoded["sequence_output"], mask)
    pooled = keras.layers.Dropout(dropout, name="head_dropout")(pooled)
    if task_heads:
        reputation = keras.layers.Dense(num_labels, name=REPUTATION_HEAD)(pooled)
        sentiment = keras.layers.Dense(num_labels, name="sentiment_logits")(pooled)
        logits = SelectByEntity(name="logits")(reputation, sentiment, segments)
    else:
        logits = keras.layers.Dense(num_labels, name="logits")(pooled)
    outputs = {"logits": logits}
    if num_filter_labels:
        outputs[RELATED_OUTPUT] = keras.layers.Dense(num_filter_labels, name=RELATED_HEAD)(pooled)
    return keras.Model([ids, segments, mask], outputs, name="polarity_classifier")


def has_task_heads(model: keras.Model) -> bool:
    return any(layer.name == REPUTATION_HEAD for layer in model.layers)


def has_related_head(model: keras.Model) -> bool:
    return any(layer.name == RELATED_HEAD for layer in model.layers)
