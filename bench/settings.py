"""`node bench`'s settings: the one place their defaults and ranges are written.

The CLI's options, ``BenchOptions``, ``MeasureSpec`` and ``BrokerBenchConfig`` take their
defaults from here; the batch shape is the node's own (edgemodel/defaults.py) and the
split seed training's (edgemodel/splits.py), so a benchmark measures what the node runs on
the split the model was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass

from common.settings import setting, validate
from edgemodel.defaults import MAX_BATCH, MAX_BATCH_TOKENS
from edgemodel.splits import SPLIT_SEED

SPLITS = ("all", "train", "dev", "test")


@dataclass(frozen=True)
class BenchSettings:
    sample: int | None = setting(None, min=1)
    split: str = setting("all", choices=SPLITS)
    seed: int = SPLIT_SEED
    latency_samples: int = setting(200, min=1, max=1_000_000)
    saturation_tweets: int = setting(1000, min=1, max=10_000_000)
    repeats: int = setting(3, min=1, max=1000)
    rounds: int = setting(1, min=1, max=1000)
    rate: float = setting(50.0, min=0.0, min_exclusive=True, max=1_000_000.0)
    seconds: float = setting(20.0, min=0.0, min_exclusive=True, max=86_400.0)
    broker_tweets: int = setting(2000, min=1, max=10_000_000)
    broker_repeats: int = setting(3, min=1, max=1000)
    max_batch: int = setting(MAX_BATCH, min=1, max=4096)
    max_batch_tokens: int = setting(MAX_BATCH_TOKENS, min=1, max=1_048_576)

    def __post_init__(self) -> None:
        validate(self)
