"""BERT-family encoders through KerasHub (MiniLM, BERT): no hand-written layers."""

from __future__ import annotations

from pathlib import Path

import keras
import keras_hub

from trainer.encoders.hf_folder import safetensors_view


def load_bert(folder: Path, num_layers: int | None = None) -> keras.Model:
    """KerasHub's BertBackbone with a Hugging Face folder's weights.

    With ``num_layers`` the first N layers are kept (a pruned, faster encoder). A folder
    with only ``pytorch_model.bin`` is converted to safetensors on the fly (without torch).
    """
    with safetensors_view(Path(folder)) as source:  # KerasHub reads safetensors only
        full = keras_hub.models.BertBackbone.from_preset(str(source))
    if num_layers is None or num_layers >= full.num_layers:
        return full
    config = full.get_config() | {"num_layers": num_layers}
    pruned = keras_hub.models.BertBackbone.from_config(config)
    by_path = {w.path: w for w in full.weights}
    for w in pruned.weights:
        w.assign(by_path[w.path])
    return pruned


def tiny_bert(vocabulary_size: int, seed: int = 0) -> keras.Model:
    """A randomly initialised two-layer BERT for tests and smoke runs."""
    keras.utils.set_random_seed(seed)
    return keras_hub.models.BertBackbone(
        vocabulary_size=vocabulary_size,
        num_layers=2,
        num_heads=2,
        hidden_dim=32,
        intermediate_dim=64,
        max_sequence_length=128,
    )
