"""Tokenize tweets and run a bundle's FlatBuffer: the node's inference path.

The trainer evaluates exported models through this same class, so training-time
evaluation and serving cannot disagree on cleaning, tokenization or padding.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from edgemodel.bundle import INPUT_NAMES, OUTPUT_NAME, BundleError, ModelBundle
from edgemodel.textclean import CleaningConfig, clean_tweet, mask_entity


def load_interpreter_class() -> tuple[type, str]:
    """The LiteRT interpreter, or tflite-runtime's where only that is installed."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, "ai-edge-litert"
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter  # type: ignore[import-not-found]

        return Interpreter, "tflite-runtime"
    except ImportError as exc:
        raise RuntimeError(
            "no TFLite interpreter: pip install ai-edge-litert (or tflite-runtime)"
        ) from exc


class EmptyTextError(ValueError):
    """The text holds no token the model knows (after cleaning)."""


@dataclass(frozen=True)
class Encoded:
    """One tweet as model input (unpadded)."""

    input_ids: list[int]
    segment_ids: list[int]

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass(frozen=True)
class Prediction:
    label: str
    scores: dict[str, float]


class TweetEncoder:
    """Cleaning + tokenization as a bundle prescribes; shared by node and trainer."""

    def __init__(
        self,
        tokenizer_file: str | os.PathLike[str],
        max_length: int,
        cleaning: CleaningConfig,
        entity_input: bool,
    ) -> None:
        self.max_length = max_length
        self.cleaning = cleaning
        self.entity_input = entity_input
        self._tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(max_length=self.max_length)
        vocab = self._tokenizer.get_vocab()
        self.unk_id = vocab.get("[UNK]")
        self.pad_id = vocab.get("[PAD]", 0)

    @classmethod
    def from_bundle(cls, bundle: ModelBundle) -> TweetEncoder:
        m = bundle.manifest
        return cls(bundle.tokenizer_path, m.max_length, m.cleaning, m.entity_input)

    def encode(self, text: str, entity: str | None = None) -> Encoded:
        """Clean and tokenize one tweet; raise :class:`EmptyTextError` if nothing is left."""
        cleaned = clean_tweet(text, self.cleaning)
        if self.entity_input and entity:
            if self.cleaning.mask_entity:
                cleaned = mask_entity(cleaned, clean_tweet(entity, self.cleaning))
            enc = self._tokenizer.encode(cleaned, clean_tweet(entity, self.cleaning))
            first_segment = [t for t, s in zip(enc.ids, enc.type_ids, strict=True) if s == 0]
        else:
            enc = self._tokenizer.encode(cleaned)
            first_segment = enc.ids
        # Only [CLS] [SEP] (plus [UNK]s) left: the text carries nothing the model can read.
        content = [t for t in first_segment[1:-1] if t != self.unk_id]
        if not content:
            raise EmptyTextError("text holds no known token after cleaning")
        return Encoded(input_ids=list(enc.ids), segment_ids=list(enc.type_ids))


def pad_batch(batch: Sequence[Encoded], pad_id: int = 0) -> dict[str, np.ndarray]:
    """Right-pad encoded tweets to the longest one: the model's three int32 inputs."""
    length = max(len(e) for e in batch)
    ids = np.full((len(batch), length), pad_id, np.int32)
    segments = np.zeros((len(batch), length), np.int32)
    mask = np.zeros((len(batch), length), np.int32)
    for row, e in enumerate(batch):
        n = len(e)
        ids[row, :n] = e.input_ids
        segments[row, :n] = e.segment_ids
        mask[row, :n] = 1
    return {"input_ids": ids, "segment_ids": segments, "attention_mask": mask}


class Classifier:
    """A loaded bundle: ``classify(["text", ...])`` -> predictions.

    Not thread-safe: one interpreter, used by one thread at a time.
    """

    def __init__(self, bundle: ModelBundle, num_threads: int | None = None) -> None:
        self.bundle = bundle
        self.labels = list(bundle.labels)
        self.encoder = TweetEncoder.from_bundle(bundle)
        self.max_length = self.encoder.max_length

        interpreter_cls, self.runtime = load_interpreter_class()
        threads = num_threads or min(4, os.cpu_count() or 1)
        self._interpreter = interpreter_cls(model_path=str(bundle.model_path), num_threads=threads)
        self._runner = self._interpreter.get_signature_runner()
        inputs = set(self._runner.get_input_details())
        if inputs != set(INPUT_NAMES):
            raise BundleError(
                f"{bundle.model_path} takes inputs {sorted(inputs)}, expected {list(INPUT_NAMES)}"
            )

    @classmethod
    def from_path(
        cls,
        path: str | os.PathLike[str],
        variant: str | None = None,
        num_threads: int | None = None,
    ) -> Classifier:
        return cls(ModelBundle.load(path, variant=variant), num_threads=num_threads)

    def encode(self, text: str, entity: str | None = None) -> Encoded:
        """Clean and tokenize one tweet; raise :class:`EmptyTextError` if nothing is left."""
        return self.encoder.encode(text, entity)

    def predict_logits(self, batch: Sequence[Encoded]) -> np.ndarray:
        """Logits [len(batch), num_labels] for encoded tweets, padded to the longest."""
        if not batch:
            return np.zeros((0, len(self.labels)), np.float32)
        out = self._runner(**pad_batch(batch, self.encoder.pad_id))
        return np.asarray(out[OUTPUT_NAME], np.float32)

    def predict(self, batch: Sequence[Encoded]) -> list[Prediction]:
        return [self._to_prediction(row) for row in self.predict_logits(batch)]

    def classify(
        self, texts: Sequence[str], entities: Sequence[str | None] | None = None
    ) -> list[Prediction]:
        """Convenience: encode and predict; raises EmptyTextError on an unreadable text."""
        entities = entities if entities is not None else [None] * len(texts)
        return self.predict([self.encode(t, e) for t, e in zip(texts, entities, strict=True)])

    def _to_prediction(self, logits: np.ndarray) -> Prediction:
        shifted = np.exp(logits - logits.max())
        probs = shifted / shifted.sum()
        scores = {label: round(float(p), 6) for label, p in zip(self.labels, probs, strict=True)}
        return Prediction(label=self.labels[int(np.argmax(logits))], scores=scores)

    def describe(self) -> dict[str, Any]:
        return {**self.bundle.identity(), "runtime": self.runtime, "labels": self.labels}
