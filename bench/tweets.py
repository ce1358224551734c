"""Tweets to time the model on: a labelled file, a file of plain tweets, or a built-in
generator of tweet-like sentences (so `node bench` needs no data set to run)."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from edgemodel.splits import SPLIT_SEED

_ENTITIES = ["BMW", "Toyota", "Apple", "Samsung", "Ryanair", "Nestle", "Barclays", "Shakira"]
_OPENERS = [
    "just tried the new {e} {p} and",
    "can't believe {e} would",
    "@{u} did you see that {e}",
    "Breaking: {e} announces that its {p}",
    "so {e} customer service",
    "honestly the {e} {p}",
    "RT @{u}: {e} says the {p}",
]
_MIDDLES = [
    "it is sooooo good",
    "totally failed again",
    "was delayed for three hours",
    "is the best thing that happened this year",
    "made me wait on hold forever",
    "drives really well but the dealer was slow",
    "raised prices again",
    "won an award",
    "recalls 100k units after a fault",
    "opened a new plant and hired 2,000 people",
    "just works, no complaints",
    "lost my luggage",
    "is trending for all the wrong reasons",
]
_TAILS = [
    "",
    "",
    "#fail",
    "#love",
    "http://t.co/xYz12",
    "😍😍",
    "😡",
    "!!!",
    "lol",
    "and I will never buy from them again, never ever, tell your friends",
    "thanks @support for the quick reply, really appreciated it after such a long day",
]
_PRODUCTS = ["phone", "car", "app", "flight", "coffee", "account", "update", "album"]


@dataclass(frozen=True)
class BenchTweets:
    """Texts to time on, with entities, and true labels where the source has them."""

    texts: list[str]
    entities: list[str | None]
    labels: list[str] | None
    source: str

    def __len__(self) -> int:
        return len(self.texts)

    def to_json(self) -> dict:
        return {
            "texts": self.texts,
            "entities": self.entities,
            "labels": self.labels,
            "source": self.source,
        }

    @classmethod
    def from_json(cls, data: dict) -> BenchTweets:
        return cls(data["texts"], data["entities"], data["labels"], data["source"])


def synthetic_tweets(n: int, seed: int = 0) -> BenchTweets:
    """Tweet-like (text, entity) pairs, varied in length (about 8 to 60 tokens)."""
    rng = random.Random(seed)
    texts, entities = [], []
    for _ in range(n):
        entity = rng.choice(_ENTITIES)
        parts = [rng.choice(_OPENERS), rng.choice(_MIDDLES)]
        for _ in range(rng.choice([0, 0, 1, 2])):
            parts.append(rng.choice(_MIDDLES))
        parts.append(rng.choice(_TAILS))
        text = " ".join(p for p in parts if p).format(
            e=entity, p=rng.choice(_PRODUCTS), u=f"user{rng.randint(1, 999)}"
        )
        texts.append(text)
        entities.append(entity)
    return BenchTweets(texts, entities, None, f"built-in synthetic tweets ({n})")


def plain_tweets(path: Path) -> BenchTweets:
    """One tweet per line, or JSON lines with "text" (and optional "entity")."""
    texts: list[str] = []
    entities: list[str | None] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        if line.lstrip().startswith("{"):
            try:
                data = json.loads(line)
                texts.append(str(data["text"]))
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise ValueError(f"{path}:{number}: not a JSON tweet with a text: {exc}") from exc
            entities.append(data.get("entity"))
        else:
            texts.append(line)
            entities.append(None)
    if not texts:
        raise ValueError(f"{path}: no tweets in it")
    return BenchTweets(texts, entities, None, path.name)


def labelled_tweets(
    path: Path,
    fmt: str = "auto",
    sample: int | None = None,
    split: str = "all",
    seed: int = SPLIT_SEED,
) -> BenchTweets:
    """A labelled file through the trainer's readers (plain Python, no TensorFlow), keeping
    the polarity-labelled tweets, as `trainer evaluate` does: ``split`` (train, dev, test)
    keeps that part of the split `trainer train` makes; ``sample`` keeps a seeded random
    subset of that size."""
    from edgemodel.data import read_labeled
    from edgemodel.splits import split_like_training

    if split not in ("all", "train", "dev", "test"):
        raise ValueError(f"{split!r} is not one of all, train, dev, test")
    examples = read_labeled(path, fmt)
    name = path.name
    if split != "all":
        examples = getattr(split_like_training(examples, seed), split)
        name = f"{path.name} ({split} split, seed {seed})"
    examples = [e for e in examples if e.label is not None]
    if not examples:
        raise ValueError(f"{path}: no polarity-labelled tweets in it")
    if sample is not None and sample < len(examples):
        picked = sorted(random.Random(0).sample(range(len(examples)), sample))
        examples = [examples[i] for i in picked]
        name = f"{name}, seeded sample of {sample}"
    return BenchTweets(
        [e.text for e in examples],
        [e.entity for e in examples],
        [str(e.label) for e in examples],
        name,
    )
