"""Seeded train/dev/test splits.

SemEval is split stratified by label. RepLab is split by entity, so that a score says how
the model does on brands it has never seen; a tweet filed under several entities is
removed from train when it appears in dev or test.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from edgemodel.data import Example, read_labeled, read_replab, read_semeval
from edgemodel.textclean import clean_tweet

# The seed of every seeded split: `trainer train --seed`, `trainer evaluate --split`,
# `node bench --split` and the benchmarks default to it, so they cut the same parts.
SPLIT_SEED = 13

# Fixed before any training run, chosen to mix label profiles (Honda and Volkswagen are
# mostly neutral, BMW and Suzuki mostly positive, Volvo balanced); never tuned on results.
REPLAB_TEST_ENTITIES = ("BMW", "Honda", "Volvo")
REPLAB_DEV_ENTITIES = ("Suzuki", "Volkswagen")


@dataclass
class Split:
    train: list[Example] = field(default_factory=list)
    dev: list[Example] = field(default_factory=list)
    test: list[Example] = field(default_factory=list)

    def __add__(self, other: Split) -> Split:
        return Split(self.train + other.train, self.dev + other.dev, self.test + other.test)

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "dev": len(self.dev), "test": len(self.test)}


def stratified_split(
    examples: Sequence[Example], dev: float = 0.1, test: float = 0.1, seed: int = SPLIT_SEED
) -> Split:
    """Per-label seeded shuffle, then the first ``test`` share to test, the next to dev."""
    by_label: dict[str | None, list[Example]] = defaultdict(list)
    for e in examples:
        by_label[e.label].append(e)
    rng = random.Random(seed)
    split = Split()
    for label in sorted(by_label, key=str):
        group = by_label[label][:]
        rng.shuffle(group)
        n_test, n_dev = round(len(group) * test), round(len(group) * dev)
        split.test += group[:n_test]
        split.dev += group[n_test : n_test + n_dev]
        split.train += group[n_test + n_dev :]
    return _drop_leaks(split)


def entity_split(
    examples: Sequence[Example],
    dev_entities: Sequence[str] = REPLAB_DEV_ENTITIES,
    test_entities: Sequence[str] = REPLAB_TEST_ENTITIES,
) -> Split:
    known = {e.entity for e in examples}
    unknown = (set(dev_entities) | set(test_entities)) - known
    if unknown:
        raise ValueError(f"entities {sorted(unknown)} are not in the data ({sorted(known)})")
    split = Split()
    for e in examples:
        if e.entity in test_entities:
            split.test.append(e)
        elif e.entity in dev_entities:
            split.dev.append(e)
        else:
            split.train.append(e)
    return _drop_leaks(split)


def period_split(
    training_period: Sequence[Example],
    test_period: Sequence[Example],
    dev: float = 0.15,
    seed: int = SPLIT_SEED,
) -> Split:
    """RepLab 2013's own protocol: learn on each entity's earlier tweets, score on its later.

    Train and dev come from the training period: per entity and label (unrelated tweets
    count as one more label), a seeded ``dev`` share goes to dev, so that selection sees
    every brand and a dev part of thousands of tweets rather than two brands. Test is the
    whole test period. Test-period tweets repeated in the training period are dropped from
    train and dev (retweets recur across periods).
    """
    by_group: dict[tuple[str | None, str | None], list[Example]] = defaultdict(list)
    for e in training_period:
        by_group[(e.entity, e.label)].append(e)
    rng = random.Random(seed)
    split = Split(test=list(test_period))
    for key in sorted(by_group, key=str):
        group = by_group[key][:]
        rng.shuffle(group)
        n_dev = round(len(group) * dev)
        split.dev += group[:n_dev]
        split.train += group[n_dev:]
    return _drop_leaks(split)


# Twitter snowflake ids carry their creation time: (id >> 22) + this epoch, in ms.
TWITTER_EPOCH_MS = 1288834974657
# SemEval's temporal hold-out: the latest share of tweets by time is the temporal test,
# the share just before it the temporal dev (model selection); both are kept out of train.
TEMPORAL_TEST_SHARE = 0.10
TEMPORAL_DEV_SHARE = 0.05
TEMPORAL_SOURCE = "semeval_temporal"


def tweet_time_ms(tweet_id: str) -> int | None:
    """Creation time (Unix ms) of a tweet from its snowflake id; None for other ids."""
    if not tweet_id.isdigit() or int(tweet_id) < 1 << 22:
        return None
    return (int(tweet_id) >> 22) + TWITTER_EPOCH_MS


def temporal_split(
    examples: Sequence[Example],
    dev: float = TEMPORAL_DEV_SHARE,
    test: float = TEMPORAL_TEST_SHARE,
) -> Split:
    """Latest ``test`` share of the timed tweets to test, the ``dev`` share before it to dev.

    A stratified hold-out draws its tweets from the same weeks as training and hides what
    a later period does to the model; this one asks the question a deployment asks. Ties
    in time are broken by id, so the split is the same on every machine.
    """
    timed = sorted(
        (e for e in examples if tweet_time_ms(e.tweet_id) is not None),
        key=lambda e: (tweet_time_ms(e.tweet_id), e.tweet_id),
    )
    n_test, n_dev = round(len(timed) * test), round(len(timed) * dev)
    cut_test = len(timed) - n_test
    return Split(
        train=timed[: cut_test - n_dev],
        dev=timed[cut_test - n_dev : cut_test],
        test=timed[cut_test:],
    )


def semeval_splits(examples: Sequence[Example], seed: int = SPLIT_SEED) -> dict[str, Split]:
    """SemEval's stratified split (unchanged test, comparable across models) and its
    temporal hold-out, with every temporal tweet taken out of the stratified train and
    the temporal test tweets out of the stratified dev too."""
    stratified = stratified_split(examples, seed=seed)
    timed = temporal_split(examples)
    temporal = Split(
        dev=[replace(e, source=TEMPORAL_SOURCE) for e in timed.dev],
        test=[replace(e, source=TEMPORAL_SOURCE) for e in timed.test],
    )
    held = {e.tweet_id for e in timed.dev + timed.test}
    test_ids = {e.tweet_id for e in timed.test}
    kept = Split(
        train=[e for e in stratified.train if e.tweet_id not in held],
        dev=[e for e in stratified.dev if e.tweet_id not in test_ids],
        test=stratified.test,
    )
    # Same text in a held-out part: out of train (retweets recur).
    return {"semeval": _drop_leaks_against(kept, temporal), TEMPORAL_SOURCE: temporal}


def _drop_leaks_against(split: Split, other: Split) -> Split:
    held_out = {clean_tweet(e.text).lower() for e in other.dev + other.test}
    train = [e for e in split.train if clean_tweet(e.text).lower() not in held_out]
    return Split(train=train, dev=split.dev, test=split.test)


def split_like_training(examples: Sequence[Example], seed: int = SPLIT_SEED) -> Split:
    """The split ``trainer train --semeval/--replab`` makes: RepLab by entity, else stratified."""
    if examples and all(e.source == "replab" for e in examples):
        return entity_split(examples)
    return stratified_split(examples, seed=seed)


def _drop_leaks(split: Split) -> Split:
    """Remove from train (and dev) any tweet whose cleaned text is in a later split."""
    held_out = {clean_tweet(e.text).lower() for e in split.test}
    dev = [e for e in split.dev if clean_tweet(e.text).lower() not in held_out]
    held_out |= {clean_tweet(e.text).lower() for e in dev}
    train = [e for e in split.train if clean_tweet(e.text).lower() not in held_out]
    return Split(train=train, dev=dev, test=split.test)


@dataclass
class DataSources:
    semeval: Path | None = None
    replab: Path | None = None
    # RepLab's protocol: the training period (split into train and dev) and the test
    # period of the same entities (all test); see period_split.
    replab_train: Path | None = None
    replab_test: Path | None = None
    tables: list[Path] = field(default_factory=list)
    # Keep at most this many examples per source and split (smoke runs, tests).
    limit: int | None = None

    def load(self, seed: int) -> dict[str, Split]:
        splits: dict[str, Split] = {}
        if self.semeval:
            splits.update(semeval_splits(read_semeval(self.semeval), seed))
        if self.replab:
            splits["replab"] = split_like_training(read_replab(self.replab), seed)
        if self.replab_train or self.replab_test:
            if not (self.replab_train and self.replab_test):
                raise ValueError("--replab-train and --replab-test go together")
            if self.replab:
                raise ValueError("give --replab or --replab-train/--replab-test, not both")
            splits["replab"] = period_split(
                read_replab(self.replab_train), read_replab(self.replab_test), seed=seed
            )
        for table in self.tables:
            splits[table.stem] = stratified_split(read_labeled(table), seed=seed)
        if not splits:
            raise ValueError("no training data: give --semeval, --replab or --data")
        if self.limit:
            splits = {k: _truncate(v, self.limit) for k, v in splits.items()}
        return splits


def _truncate(split: Split, limit: int) -> Split:
    return Split(split.train[:limit], split.dev[:limit], split.test[:limit])
