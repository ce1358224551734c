"""Tokenize tweets and run a bundle's FlatBuffer: the node's inference path.

The trainer evaluates exported models through this same class, so training-time
evaluation and serving cannot disagree on cleaning, tokenization or padding.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from edgemodel.bundle import (
    EMBEDDING_OUTPUT,
    INPUT_NAMES,
    OUTPUT_NAME,
    RELATED_LABELS,
    RELATED_OUTPUT,
    BundleError,
    ModelBundle,
)
from edgemodel.defaults import evaluation_threads
from edgemodel.entity_heads import EntityHead, EntityHeadsError, entity_key, load_entity_heads
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
    # The entity the tweet was encoded with (None: plain sentiment); selects the related
    # head's answer and a per-entity head.
    entity: str | None = None

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass(frozen=True)
class Prediction:
    label: str
    scores: dict[str, float]
    # Probability that the tweet is about its entity; None for tweets without an entity
    # or models without the related head.
    related_score: float | None = None
    # The FlatBuffer's pooled embedding of the tweet (models with that output): what the
    # node keeps for teaching, where the active-learning selector measures diversity.
    embedding: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def related(self) -> bool | None:
        return None if self.related_score is None else self.related_score >= 0.5

    @property
    def finite(self) -> bool:
        """False when an output overflowed (NaN or infinite scores): such a prediction is
        no answer, and the node makes it an error record rather than invalid JSON."""
        values = [*self.scores.values(), 0.0 if self.related_score is None else self.related_score]
        return bool(np.isfinite(values).all())


@dataclass(frozen=True)
class Outputs:
    """A batch's answers: polarity logits and, where the model has them, related logits
    (for tweets with an entity; NaN rows otherwise). Per-entity heads already applied."""

    logits: np.ndarray  # [batch, num_labels]
    related_logits: np.ndarray | None  # [batch, 2]
    embedding: np.ndarray | None = None  # [batch, dim], where the model has the output


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
            entity = None
        # Only [CLS] [SEP] (plus [UNK]s) left: the text carries nothing the model can read.
        content = [t for t in first_segment[1:-1] if t != self.unk_id]
        if not content:
            raise EmptyTextError("text holds no known token after cleaning")
        return Encoded(input_ids=list(enc.ids), segment_ids=list(enc.type_ids), entity=entity)


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
        if not bundle.verified:  # loaded with verify=False: nothing runs unchecked bytes
            bundle.verify()
        self.bundle = bundle
        self.labels = list(bundle.labels)
        self.encoder = TweetEncoder.from_bundle(bundle)
        self.max_length = self.encoder.max_length

        # The file the interpreter maps; adopt() may change the bundle, never this.
        self.model_file = bundle.model_path
        interpreter_cls, self.runtime = load_interpreter_class()
        threads = num_threads or evaluation_threads()
        self._interpreter = interpreter_cls(model_path=str(bundle.model_path), num_threads=threads)
        self._runner = self._interpreter.get_signature_runner()
        inputs = set(self._runner.get_input_details())
        if inputs != set(INPUT_NAMES):
            raise BundleError(
                f"{bundle.model_path} takes inputs {sorted(inputs)}, expected {list(INPUT_NAMES)}"
            )
        details = self._runner.get_output_details()
        if OUTPUT_NAME not in details:
            raise BundleError(f"{bundle.model_path} has no {OUTPUT_NAME!r} output")
        widths = {name: int(d["shape_signature"][-1]) for name, d in details.items()}
        # A label map that does not fit the logits would fail every tweet at serving time.
        if widths[OUTPUT_NAME] != len(self.labels):
            raise BundleError(
                f"{bundle.root}: labels.json names {len(self.labels)} classes, the model's "
                f"{OUTPUT_NAME!r} output has {widths[OUTPUT_NAME]}"
            )
        # Older bundles have only "logits": no related answer, no per-entity heads.
        self.has_related_head = RELATED_OUTPUT in details
        self.has_embedding = EMBEDDING_OUTPUT in details
        self.embedding_width = widths.get(EMBEDDING_OUTPUT)
        self.entity_heads = self._load_entity_heads()

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

    def adopt(self, bundle: ModelBundle) -> None:
        """Serve ``bundle`` on this interpreter: the same FlatBuffer (same sha256) with other
        per-entity heads, as an adapted bundle has. Saves loading a second interpreter."""
        if bundle.model_sha256 != self.bundle.model_sha256 or list(bundle.labels) != self.labels:
            raise BundleError(f"{bundle.root} does not share this classifier's FlatBuffer")
        previous = self.bundle
        self.bundle = bundle
        try:
            self.entity_heads = self._load_entity_heads()
        except BundleError:
            self.bundle = previous
            raise

    def _load_entity_heads(self) -> dict[str, EntityHead]:
        path = self.bundle.entity_heads_path
        if path is None:
            return {}
        if not self.has_embedding:
            raise BundleError(
                f"{self.bundle.root} has entity heads but its FlatBuffer has no "
                f"{EMBEDDING_OUTPUT!r} output to apply them to"
            )
        try:
            return load_entity_heads(
                path, len(self.labels), len(RELATED_LABELS), embedding_dim=self.embedding_width
            )
        except EntityHeadsError as exc:
            raise BundleError(str(exc)) from exc

    def run(self, batch: Sequence[Encoded]) -> dict[str, np.ndarray]:
        """The FlatBuffer's raw outputs for encoded tweets, padded to the longest."""
        out = self._runner(**pad_batch(batch, self.encoder.pad_id))
        return {name: np.asarray(value, np.float32) for name, value in out.items()}

    def predict_outputs(self, batch: Sequence[Encoded]) -> Outputs:
        """Polarity (and related) logits as served: per-entity heads applied."""
        if not batch:
            return Outputs(np.zeros((0, len(self.labels)), np.float32), None)
        out = self.run(batch)
        logits = out[OUTPUT_NAME]
        related = None
        if self.has_related_head:
            related = out[RELATED_OUTPUT]
            no_entity = np.array([e.entity is None for e in batch])
            related[no_entity] = np.nan
        embedding = out.get(EMBEDDING_OUTPUT)
        if self.entity_heads and embedding is not None:
            for row, encoded in enumerate(batch):
                head = self.entity_heads.get(entity_key(encoded.entity or ""))
                if head is None or encoded.entity is None:
                    continue
                # Row by row: an overflow stays in its row, where Prediction.finite sees it.
                with np.errstate(over="ignore", invalid="ignore"):
                    logits[row] += head.polarity(embedding[row])
                    if related is not None and head.related is not None:
                        related[row] += head.related(embedding[row])
        return Outputs(logits, related, embedding)

    def predict_logits(self, batch: Sequence[Encoded]) -> np.ndarray:
        """Polarity logits [len(batch), num_labels] as served (per-entity heads applied)."""
        return self.predict_outputs(batch).logits

    def predict(self, batch: Sequence[Encoded]) -> list[Prediction]:
        outputs = self.predict_outputs(batch)
        related = (
            outputs.related_logits
            if outputs.related_logits is not None
            else np.full((len(batch), len(RELATED_LABELS)), np.nan, np.float32)
        )
        embedding = outputs.embedding
        return [
            self._to_prediction(row, rel, None if embedding is None else embedding[n])
            for n, (row, rel) in enumerate(zip(outputs.logits, related, strict=True))
        ]

    def classify(
        self, texts: Sequence[str], entities: Sequence[str | None] | None = None
    ) -> list[Prediction]:
        """Convenience: encode and predict; raises EmptyTextError on an unreadable text."""
        entities = entities if entities is not None else [None] * len(texts)
        return self.predict([self.encode(t, e) for t, e in zip(texts, entities, strict=True)])

    def _to_prediction(
        self, logits: np.ndarray, related_logits: np.ndarray, embedding: np.ndarray | None
    ) -> Prediction:
        probs = softmax(logits)
        scores = {label: round(float(p), 6) for label, p in zip(self.labels, probs, strict=True)}
        related = None
        # NaN rows are tweets without an entity; an overflow shows as +-inf (or NaN scores).
        if not np.isnan(related_logits).all():
            related = round(float(softmax(related_logits)[RELATED_LABELS.index("related")]), 6)
        return Prediction(
            label=self.labels[int(np.argmax(logits))],
            scores=scores,
            related_score=related,
            embedding=embedding,
        )

    def describe(self) -> dict[str, Any]:
        return {
            **self.bundle.identity(),
            "runtime": self.runtime,
            "labels": self.labels,
            "related_head": self.has_related_head,
            "entity_heads": sorted(h.entity for h in self.entity_heads.values()),
        }


def softmax(logits: np.ndarray) -> np.ndarray:
    # Overflowed logits give NaN here, quietly: Prediction.finite is where they are caught.
    with np.errstate(invalid="ignore", over="ignore"):
        shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
        return shifted / shifted.sum(axis=-1, keepdims=True)
