"""The polarity classifier: an encoder, masked mean pooling, a softmax head."""

from __future__ import annotations

import keras

from node.bundle import INPUT_NAMES


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


def build_classifier(
    backbone: keras.Model,
    num_labels: int,
    dropout: float = 0.1,
    num_filter_labels: int = 0,
) -> keras.Model:
    """Inputs (input_ids, segment_ids, attention_mask) -> logits [batch, num_labels].

    With ``num_filter_labels`` a second head predicts RepLab filtering
    (related/unrelated) from the same pooled vector; it is trained but not exported.
    """
    ids, segments, mask = (keras.Input((None,), dtype="int32", name=n) for n in INPUT_NAMES)
    encoded = backbone({"token_ids": ids, "segment_ids": segments, "padding_mask": mask})
    pooled = MaskedMeanPool(name="mean_pool")(encoded["sequence_output"], mask)
    pooled = keras.layers.Dropout(dropout, name="head_dropout")(pooled)
    outputs = {"logits": keras.layers.Dense(num_labels, name="logits")(pooled)}
    if num_filter_labels:
        outputs["filter_logits"] = keras.layers.Dense(num_filter_labels, name="filter_logits")(
            pooled
        )
    return keras.Model([ids, segments, mask], outputs, name="polarity_classifier")
