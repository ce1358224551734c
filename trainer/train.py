"""Fine-tuning: tweets in, a Keras polarity classifier out (best dev checkpoint).

Batches are length-bucketed (tweets do not pay for padding to max_length), classes are
re-weighted, the learning rate warms up then decays linearly, dev is scored every
``eval_every`` steps with early stopping, and a run resumes from its backup folder.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from edgemodel.batching import outputs_in_length_order
from edgemodel.data import FILTER_LABELS, POLARITY_LABELS, Example
from edgemodel.inference import EmptyTextError, Encoded, TweetEncoder, pad_batch
from edgemodel.metrics import classification_report
from edgemodel.textclean import CleaningConfig
from trainer.model import RELATED_OUTPUT, build_classifier
from trainer.settings import TrainConfig


@dataclass
class EncodedSet:
    inputs: list[Encoded]
    polarity: np.ndarray  # label index, -1 where the example has no polarity
    related: np.ndarray  # 1/0, -1 where the source has no filtering label
    source: list[str]


def encode_examples(encoder: TweetEncoder, examples: Sequence[Example]) -> EncodedSet:
    """Encode with the node's own encoder; tweets that tokenize to nothing are dropped."""
    inputs, polarity, related, source = [], [], [], []
    for e in examples:
        try:
            inputs.append(encoder.encode(e.text, e.entity))
        except EmptyTextError:
            continue
        polarity.append(POLARITY_LABELS.index(e.label) if e.label else -1)
        related.append(-1 if e.related is None else int(e.related))
        source.append(e.source)
    return EncodedSet(inputs, np.asarray(polarity), np.asarray(related), source)


def class_weights(labels: np.ndarray, scheme: str) -> np.ndarray:
    counts = np.bincount(labels[labels >= 0], minlength=len(POLARITY_LABELS)).astype(float)
    if scheme == "none":
        return np.ones(len(POLARITY_LABELS))
    power = {"sqrt": 0.5, "balanced": 1.0}[scheme]
    weights = (counts.sum() / np.maximum(counts, 1)) ** power
    return weights / (weights * counts).sum() * counts.sum()  # mean weight 1 per example


def bucketed_batches(
    lengths: Sequence[int], batch_size: int, rng: random.Random, window: int = 50
) -> list[list[int]]:
    """Shuffle, sort by length within windows of ``window`` batches, shuffle the batches."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    batches = []
    span = batch_size * window
    for start in range(0, len(order), span):
        chunk = sorted(order[start : start + span], key=lambda i: lengths[i])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


class WarmupLinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    def __init__(self, peak: float, warmup_steps: int, total_steps: int) -> None:
        self.peak, self.warmup_steps, self.total_steps = peak, warmup_steps, total_steps

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        warm = step / max(1, self.warmup_steps)
        decay = (self.total_steps - step) / max(1, self.total_steps - self.warmup_steps)
        return self.peak * keras.ops.maximum(0.0, keras.ops.minimum(warm, decay))

    def get_config(self):
        return {
            "peak": self.peak,
            "warmup_steps": self.warmup_steps,
            "total_steps": self.total_steps,
        }


# Config fields that change the network's weights (not just how it is trained).
ARCHITECTURE_FIELDS = ("base", "num_layers", "task_heads", "filter_head")


def check_same_architecture(config: TrainConfig) -> None:
    """Refuse ``init_weights`` from a run with another architecture.

    Keras matches a .weights.h5 file to a model by layer order and class, not by name: a
    two-headed checkpoint loads into a one-headed model without a word, with the
    reputation head's weights in the only head. The run's ``training.json`` next to its
    checkpoint says how it was built; weights from elsewhere are the caller's to vouch for.
    """
    summary = Path(config.init_weights or "").parent / "training.json"
    if not summary.is_file():
        return
    theirs = json.loads(summary.read_text())["config"]
    defaults = asdict(TrainConfig())
    ours = asdict(config)
    differ = {
        name: (theirs.get(name, defaults[name]), ours[name])
        for name in ARCHITECTURE_FIELDS
        if theirs.get(name, defaults[name]) != ours[name]
    }
    if differ:
        details = ", ".join(f"{k}: {a!r} there, {b!r} here" for k, (a, b) in differ.items())
        raise ValueError(
            f"--init-weights {config.init_weights} comes from a different architecture "
            f"({details}); train with the same options as that run"
        )


class Trainer:
    def __init__(self, config: TrainConfig, backbone: keras.Model, encoder: TweetEncoder) -> None:
        self.config = config
        self.encoder = encoder
        keras.utils.set_random_seed(config.seed)
        self.model = build_classifier(
            backbone,
            num_labels=len(POLARITY_LABELS),
            dropout=config.dropout,
            num_filter_labels=len(FILTER_LABELS) if config.filter_head else 0,
            task_heads=config.task_heads,
        )
        if config.init_weights:
            check_same_architecture(config)
            self.model.load_weights(config.init_weights)

    def _example_weights(self, data: EncodedSet, weights: np.ndarray) -> np.ndarray:
        """Loss weight per example: its class weight, 1 for unweighted sources, 0 unlabeled."""
        per_class = weights[np.maximum(data.polarity, 0)]
        unweighted = np.isin(np.asarray(data.source), self.config.unweighted_sources)
        return np.where(data.polarity >= 0, np.where(unweighted, 1.0, per_class), 0.0)

    def _training_stream(
        self, data: EncodedSet, weights: np.ndarray, skip: int = 0
    ) -> Iterator[tuple]:
        """Batches forever, in a seeded order; the first ``skip`` are drawn and dropped, so
        a resumed run sees exactly the batches an uninterrupted one would have."""
        rng = random.Random(self.config.seed)
        example_weights = self._example_weights(data, weights)
        index = [
            i
            for i, s in enumerate(data.source)
            for _ in range(self.config.replab_repeat if s == "replab" else 1)
        ]
        while True:
            lengths = [len(data.inputs[i]) for i in index]
            for batch in bucketed_batches(lengths, self.config.batch_size, rng):
                if skip:
                    skip -= 1
                    continue
                rows = [index[b] for b in batch]
                x = pad_batch([data.inputs[r] for r in rows], self.encoder.pad_id)
                pol = data.polarity[rows]
                y = {"logits": np.maximum(pol, 0)}
                sw = {"logits": example_weights[rows]}
                if self.config.filter_head:
                    rel = data.related[rows]
                    y[RELATED_OUTPUT] = np.maximum(rel, 0)
                    sw[RELATED_OUTPUT] = (rel >= 0).astype("float64")
                yield (x["input_ids"], x["segment_ids"], x["attention_mask"]), y, sw

    def _dataset(self, data: EncodedSet, weights: np.ndarray, skip: int = 0) -> tf.data.Dataset:
        seq = tf.TensorSpec((None, None), tf.int32)
        outputs = ["logits"] + ([RELATED_OUTPUT] if self.config.filter_head else [])
        signature = (
            (seq, seq, seq),
            {k: tf.TensorSpec((None,), tf.int64) for k in outputs},
            {k: tf.TensorSpec((None,), tf.float64) for k in outputs},
        )
        return tf.data.Dataset.from_generator(
            lambda: self._training_stream(data, weights, skip), output_signature=signature
        ).prefetch(4)

    def predict_outputs(
        self, inputs: Sequence[Encoded], batch_size: int = 128
    ) -> dict[str, np.ndarray]:
        """The Keras model's outputs (dev scoring), same batching as the evaluation."""

        def predict(batch: Sequence[Encoded]) -> dict[str, np.ndarray]:
            x = pad_batch(batch, self.encoder.pad_id)
            pred = self.model(
                [x["input_ids"], x["segment_ids"], x["attention_mask"]], training=False
            )
            return {name: keras.ops.convert_to_numpy(value) for name, value in pred.items()}

        return outputs_in_length_order(predict, inputs, batch_size)

    def fit(self, train: EncodedSet, dev: EncodedSet, run_dir: Path) -> dict:
        cfg = self.config
        run_dir.mkdir(parents=True, exist_ok=True)
        weighted = ~np.isin(np.asarray(train.source), cfg.unweighted_sources)
        weights = class_weights(train.polarity[weighted], cfg.class_weighting)
        per_epoch = sum(cfg.replab_repeat if s == "replab" else 1 for s in train.source)
        steps_per_epoch = math.ceil(per_epoch / cfg.batch_size)
        total = max(1, int(steps_per_epoch * cfg.epochs))
        eval_every = min(cfg.eval_every, total)
        schedule = WarmupLinearDecay(cfg.learning_rate, int(total * cfg.warmup_ratio), total)
        optimizer = keras.optimizers.AdamW(
            learning_rate=schedule, weight_decay=cfg.weight_decay, clipnorm=1.0
        )
        optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta", "layer_norm"])
        losses = {"logits": keras.losses.SparseCategoricalCrossentropy(from_logits=True)}
        if cfg.filter_head:
            losses[RELATED_OUTPUT] = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        self.model.compile(optimizer=optimizer, loss=losses)

        dev_eval = DevEvaluation(self, dev, run_dir, cfg.patience, cfg.time_budget_min)
        backup = run_dir / "backup"
        callbacks = [
            keras.callbacks.BackupAndRestore(str(backup), delete_checkpoint=False),
            RandomStateBackup(backup),
            dev_eval,
        ]
        # Keras restores weights, optimizer and epoch from the backup; the data stream
        # skips the batches those epochs consumed (each epoch is eval_every steps).
        done = resumed_blocks(backup)
        if done:
            print(f"resuming after block {done} ({done * eval_every} steps)", flush=True)
        self.model.fit(
            self._dataset(train, weights, skip=done * eval_every),
            epochs=math.ceil(total / eval_every),
            steps_per_epoch=eval_every,
            callbacks=callbacks,
            verbose="auto",  # a progress bar per block of eval_every steps
        )
        self.model.load_weights(dev_eval.best_path)
        summary = {
            "config": asdict(cfg),
            "class_weights": dict(zip(POLARITY_LABELS, weights.round(4).tolist(), strict=True)),
            "steps_total_planned": total,
            "train_examples_per_epoch": per_epoch,
            "history": dev_eval.history,
            "best": dev_eval.best,
            "stopped_by": dev_eval.stopped_by,
        }
        (run_dir / "training.json").write_text(json.dumps(summary, indent=2))
        return summary


class RandomStateBackup(keras.callbacks.Callback):
    """Saves and restores the dropout random generators' states next to Keras' backup.

    Keras' BackupAndRestore keeps weights, optimizer and epoch, but not the seed
    generators' states (they are not weights), so a resumed run would draw other dropout
    masks than an uninterrupted one. Saved after the backup of the same epoch, and used
    only when both name the same epoch.
    """

    def __init__(self, backup_dir: Path) -> None:
        super().__init__()
        self.path = backup_dir / "random_state.npz"

    def _states(self) -> list:
        # In model order: their names carry a process-wide counter, their order does not.
        return [v for v in self.model.variables if "seed_generator_state" in v.path]

    def on_train_begin(self, logs=None):
        done = resumed_blocks(self.path.parent)
        if not done or not self.path.is_file():
            return
        saved = np.load(self.path)
        states = self._states()
        if int(saved["epoch"]) != done or len(saved["states"]) != len(states):
            print("random state backup does not match the run; dropout masks will differ")
            return
        for variable, value in zip(states, saved["states"], strict=True):
            variable.assign(value)

    def on_epoch_end(self, epoch, logs=None):
        states = np.stack([keras.ops.convert_to_numpy(v) for v in self._states()])
        tmp = self.path.with_suffix(".tmp.npz")
        np.savez(tmp, epoch=epoch + 1, states=states)
        tmp.replace(self.path)


def resumed_blocks(backup_dir: Path) -> int:
    """Evaluation blocks (Keras epochs) a run's backup has finished; 0 for a fresh run."""
    metadata = backup_dir / "training_metadata.json"
    if not metadata.is_file():
        return 0
    return int(json.loads(metadata.read_text()).get("epoch", 0))


def dev_score(metrics_by_source: dict[str, dict], related_accuracy: float | None = None) -> float:
    """Model selection: mean of SemEval AvgRec (stratified dev and, where given, the
    temporal dev: the tweets just before the temporal test), RepLab accuracy and, with the
    related head, RepLab related/unrelated accuracy (the targets of issues 4, 9 and 18)."""
    parts = [] if related_accuracy is None else [related_accuracy]
    for source in ("semeval", "semeval_temporal"):
        if source in metrics_by_source:
            parts.append(metrics_by_source[source]["macro_recall"])
    if "replab" in metrics_by_source:
        parts.append(metrics_by_source["replab"]["accuracy"])
    if not parts:  # other sources: macro recall over everything
        parts = [m["macro_recall"] for m in metrics_by_source.values()]
    return float(np.mean(parts))


class DevEvaluation(keras.callbacks.Callback):
    """Scores dev after every block of steps, keeps the best weights, stops early."""

    def __init__(
        self,
        trainer: Trainer,
        dev: EncodedSet,
        run_dir: Path,
        patience: int,
        time_budget_min: float | None,
    ) -> None:
        super().__init__()
        self.trainer, self.dev, self.patience = trainer, dev, patience
        self.best_path = str(run_dir / "best.weights.h5")
        self.history_path = run_dir / "dev_history.json"
        self.history: list[dict] = (
            json.loads(self.history_path.read_text()) if self.history_path.exists() else []
        )
        self.best = max(self.history, key=lambda h: h["score"]) if self.history else None
        self.deadline = time.monotonic() + time_budget_min * 60 if time_budget_min else None
        self.stopped_by = "schedule"

    def on_epoch_end(self, epoch, logs=None):
        # Polarity is scored on tweets that have one; unrelated RepLab tweets (in dev only
        # with the related head) count for the related/unrelated accuracy.
        outputs = self.trainer.predict_outputs(self.dev.inputs)
        pred = outputs["logits"].argmax(axis=1)
        gold = self.dev.polarity
        labelled = gold >= 0
        sources = np.asarray(self.dev.source)
        names = np.asarray(POLARITY_LABELS)
        by_source = {
            s: classification_report(
                names[gold[labelled & (sources == s)]].tolist(),
                names[pred[labelled & (sources == s)]].tolist(),
                POLARITY_LABELS,
            )
            for s in sorted(set(sources[labelled]))
        }
        related_accuracy = None
        if self.trainer.config.filter_head and (self.dev.related >= 0).any():
            has = self.dev.related >= 0
            rel = outputs[RELATED_OUTPUT][has].argmax(axis=1)
            related_accuracy = float((rel == self.dev.related[has]).mean())
        score = dev_score(by_source, related_accuracy)
        entry = {
            "block": epoch + 1,
            "loss": float((logs or {}).get("loss", float("nan"))),
            "score": round(score, 4),
            **{f"{s}_{k}": round(m[k], 4) for s, m in by_source.items() for k in _SHOWN},
        }
        if related_accuracy is not None:
            entry["related_accuracy"] = round(related_accuracy, 4)
        self.history.append(entry)
        self.history_path.write_text(json.dumps(self.history, indent=2))
        print(f"dev {json.dumps(entry)}", flush=True)
        if self.best is None or score > self.best["score"]:
            self.best = entry
            self.model.save_weights(self.best_path)
        elif entry["block"] - self.best["block"] >= self.patience:
            self.stopped_by = f"early stopping (no dev gain in {self.patience} evaluations)"
            self.model.stop_training = True
        if self.deadline and time.monotonic() > self.deadline:
            self.stopped_by = "time budget"
            self.model.stop_training = True


_SHOWN = ("accuracy", "macro_recall", "macro_f1")


def make_encoder(tokenizer_file: Path, config: TrainConfig) -> TweetEncoder:
    return TweetEncoder(
        tokenizer_file,
        config.max_length,
        CleaningConfig(mask_entity=config.mask_entity),
        config.entity_input,
    )
