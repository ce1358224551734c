"""`trainer train`'s settings: the one place its defaults and ranges are written.

No TensorFlow here: `trainer train --help` and the CLI's option defaults read this module.
"""

from __future__ import annotations

from dataclasses import dataclass

from common.settings import setting, validate
from edgemodel.splits import SPLIT_SEED

CLASS_WEIGHTINGS = ("none", "sqrt", "balanced")
# What `trainer train` exports and how it names the bundle, unless told otherwise.
ALL_VARIANTS = ("fp32", "fp16", "int8", "int8-full")
MODEL_NAME = "repedge-polarity"
FIRST_VERSION = "1.0.0"


@dataclass
class TrainConfig:
    base: str = setting("all-MiniLM-L6-v2", max_len=4096)
    num_layers: int | None = setting(None, min=1, max=64)
    max_length: int = setting(64, min=8, max=512)
    batch_size: int = setting(32, min=1, max=4096)
    epochs: float = setting(3.0, min=0.0, min_exclusive=True, max=1000.0)
    learning_rate: float = setting(6e-5, min=0.0, min_exclusive=True, max=1.0)
    warmup_ratio: float = setting(0.06, min=0.0, max=1.0)
    weight_decay: float = setting(0.01, min=0.0, max=1.0)
    dropout: float = setting(0.1, min=0.0, max=0.9)
    # "none", "sqrt" (inverse square-root frequency) or "balanced" (inverse frequency).
    class_weighting: str = setting("sqrt", choices=CLASS_WEIGHTINGS)
    # Sources whose tweets keep weight 1: RepLab is scored by accuracy, where up-weighting
    # its rare negative class costs more than it gains (SemEval's AvgRec rewards it).
    unweighted_sources: tuple[str, ...] = setting((), option="unweighted-source")
    entity_input: bool = True
    # Replace the entity's name in the tweet by "brand" (see CleaningConfig.mask_entity).
    mask_entity: bool = False
    filter_head: bool = False
    # Separate reputation (with entity) and sentiment (without) heads on one encoder.
    task_heads: bool = False
    # How many times each RepLab tweet is repeated per epoch (RepLab is ~1/5 of SemEval).
    replab_repeat: int = setting(2, min=1, max=100)
    eval_every: int = setting(500, min=1)
    patience: int = setting(4, min=1)
    time_budget_min: float | None = setting(None, min=0.0, min_exclusive=True)
    # Start from a previous run's weights (OUT/checkpoints/best.weights.h5), e.g. a second,
    # RepLab-heavy stage after a first run on everything.
    init_weights: str | None = None
    seed: int = SPLIT_SEED  # also seeds the data split (trainer train --seed)

    def __post_init__(self) -> None:
        validate(self)
