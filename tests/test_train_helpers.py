import json
import random
from dataclasses import asdict

import numpy as np
import pytest

from edgemodel.inference import Encoded
from trainer.train import (
    EncodedSet,
    TrainConfig,
    WarmupLinearDecay,
    bucketed_batches,
    check_same_architecture,
    class_weights,
)


def test_bucketed_batches_cover_every_example_once_with_little_padding():
    rng = random.Random(0)
    lengths = [rng.randint(5, 64) for _ in range(3000)]
    batches = bucketed_batches(lengths, batch_size=32, rng=random.Random(1))
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(3000))
    padding = sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)
    random_order = list(range(3000))
    random.Random(1).shuffle(random_order)
    chunks = [random_order[i : i + 32] for i in range(0, 3000, 32)]
    unbucketed = sum(
        max(lengths[i] for i in c) * len(c) - sum(lengths[i] for i in c) for c in chunks
    )
    assert padding < unbucketed / 10


@pytest.mark.parametrize("scheme", ["sqrt", "balanced"])
def test_class_weights_favour_rare_classes_and_average_one(scheme):
    labels = np.array([0] * 10 + [1] * 60 + [2] * 30 + [-1] * 5)
    w = class_weights(labels, scheme)
    assert w[0] > w[2] > w[1]
    assert np.mean(w[labels[labels >= 0]]) == pytest.approx(1.0)
    assert (class_weights(labels, "none") == 1).all()


def test_unweighted_sources_keep_weight_one():
    from trainer.train import Trainer

    data = EncodedSet(
        inputs=[Encoded([101, 5, 102], [0, 0, 0])] * 4,
        polarity=np.array([0, 0, 2, -1]),
        related=np.array([-1, 1, 1, 0]),
        source=["semeval", "replab", "replab", "replab"],
    )
    trainer = Trainer.__new__(Trainer)
    trainer.config = TrainConfig(unweighted_sources=("replab",))
    weights = trainer._example_weights(data, np.array([3.0, 0.5, 1.0]))
    assert weights.tolist() == [3.0, 1.0, 1.0, 0.0]


def test_warmup_then_linear_decay():
    schedule = WarmupLinearDecay(peak=1e-4, warmup_steps=10, total_steps=110)
    values = [float(schedule(s)) for s in (0, 5, 10, 60, 110, 200)]
    assert values == pytest.approx([0.0, 5e-5, 1e-4, 5e-5, 0.0, 0.0])


def test_init_weights_must_come_from_the_same_architecture(tmp_path):
    checkpoints = tmp_path / "run" / "checkpoints"
    checkpoints.mkdir(parents=True)
    weights = checkpoints / "best.weights.h5"
    (checkpoints / "training.json").write_text(
        json.dumps({"config": asdict(TrainConfig(task_heads=True))})
    )
    check_same_architecture(TrainConfig(init_weights=str(weights), task_heads=True))
    with pytest.raises(ValueError, match="task_heads: True there, False here"):
        check_same_architecture(TrainConfig(init_weights=str(weights)))
    # A run from before the field existed counts as the default (one head).
    (checkpoints / "training.json").write_text(json.dumps({"config": {"base": "all-MiniLM-L6-v2"}}))
    check_same_architecture(TrainConfig(init_weights=str(weights)))
    with pytest.raises(ValueError, match="task_heads"):
        check_same_architecture(TrainConfig(init_weights=str(weights), task_heads=True))
    # Weights without a run summary beside them are not checked.
    check_same_architecture(TrainConfig(init_weights=str(tmp_path / "elsewhere.weights.h5")))


def _toy_set(n: int, seed: int) -> EncodedSet:
    rng = np.random.default_rng(seed)
    inputs = [
        Encoded([101, *rng.integers(1000, 3000, rng.integers(3, 12)).tolist(), 102], [])
        for _ in range(n)
    ]
    inputs = [Encoded(e.input_ids, [0] * len(e.input_ids)) for e in inputs]
    labels = rng.integers(0, 3, n)
    return EncodedSet(inputs, labels, np.full(n, -1), ["semeval"] * n)


@pytest.mark.slow
def test_a_resumed_run_trains_on_exactly_the_batches_of_an_uninterrupted_one(tmp_path):
    """Stopped after its first evaluation block (time budget) and started again, a run
    restores weights, optimizer, step and dropout generators from its backup and skips the
    batches it already saw: every later block's loss and dev score equal the uninterrupted
    run's."""
    from trainer.encoders import load_encoder
    from trainer.train import Trainer, make_encoder

    train, dev = _toy_set(96, 1), _toy_set(24, 2)

    def run(folder, **changes):
        config = TrainConfig(
            base="tiny-bert", batch_size=8, epochs=1, eval_every=4, patience=10, **changes
        )
        encoder = load_encoder(config.base)
        trainer = Trainer(config, encoder.backbone, make_encoder(encoder.tokenizer_file, config))
        return trainer.fit(train, dev, folder)

    straight = run(tmp_path / "straight")
    first = run(tmp_path / "resumed", time_budget_min=1e-9)
    assert first["stopped_by"] == "time budget" and len(first["history"]) == 1
    resumed = run(tmp_path / "resumed")
    assert [h["block"] for h in resumed["history"]] == [h["block"] for h in straight["history"]]
    for a, b in zip(straight["history"], resumed["history"], strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        assert a["score"] == pytest.approx(b["score"], abs=1e-4)
