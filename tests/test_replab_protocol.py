"""`trainer replab-protocol` scores bundles on RepLab's test period, SemEval's stratified
hold-out and SemEval's temporal hold-out (the latest tweets by time), through the node's
inference code."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from edgemodel.splits import tweet_time_ms
from trainer.replab_protocol import load_protocol_data, render_markdown, score_models

WORDS = [
    "car",
    "drive",
    "new",
    "dealer",
    "recall",
    "great",
    "awful",
    "engine",
    "price",
    "service",
    "love",
    "hate",
    "slow",
]


def _text(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 10)))


def _replab(path: Path, entities: list[str], rng: random.Random, with_domain: bool) -> Path:
    header = ["entity_id", "entity", *(["domain"] if with_domain else []), "tweet_id"]
    lines = ["\t".join([*header, "filtering", "polarity", "text"])]
    for i in range(60):
        entity = entities[i % len(entities)]
        related = rng.random() < 0.8
        polarity = rng.choice(["POSITIVE", "NEUTRAL", "NEGATIVE"]) if related else ""
        row = [f"RL{i % len(entities)}", entity, *(["automotive"] if with_domain else [])]
        row += [str(1000 + i), "RELATED" if related else "UNRELATED", polarity, _text(rng)]
        lines.append("\t".join(row))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _semeval(path: Path, rng: random.Random) -> Path:
    lines = ["tweet_id\tlabel\ttext"]
    for i in range(200):
        tweet_id = (1_400_000_000_000 + i * 3_600_000 - 1288834974657) << 22
        lines.append(f"{tweet_id}\t{['negative', 'neutral', 'positive'][i % 3]}\t{_text(rng)}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def protocol_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("protocol")
    rng = random.Random(3)
    return (
        _replab(root / "training.tsv", ["Kia", "Audi"], rng, with_domain=True),
        _replab(root / "test.tsv", ["Kia", "Audi", "BMW"], rng, with_domain=False),
        _semeval(root / "semeval.tsv", rng),
    )


def test_protocol_scores_the_temporal_hold_out_next_to_the_stratified_one(
    protocol_files, tiny_bundle
):
    training, test, semeval = protocol_files
    data = load_protocol_data(training, test, semeval)
    assert data.known == {"Kia", "Audi"}
    assert len(data.semeval_temporal) == 20  # 10 % of 200
    assert 19 <= len(data.semeval) <= 21  # 10 % per label, rounded
    latest = sorted(tweet_time_ms(e.tweet_id) for e in data.semeval_temporal)
    stratified_times = [tweet_time_ms(e.tweet_id) for e in data.semeval]
    # The temporal hold-out is the latest 10 %: nothing in it is older than 180 of 200.
    assert latest[0] == 1_400_000_000_000 + 180 * 3_600_000
    assert min(stratified_times) < latest[0]

    bundle = str(tiny_bundle.root)
    results = score_models([bundle, f"{bundle}:int8"], data, threads=1)
    names = list(results["targets"])
    assert "SemEval AvgRec" in names and "SemEval AvgRec, temporal" in names
    temporal = results["targets"]["SemEval AvgRec, temporal"]
    assert temporal[bundle]["n"] == 20
    assert 0.0 <= temporal[bundle]["value"] <= 1.0
    # Same file twice: the paired difference is exactly zero.
    assert temporal[f"{bundle}:int8"]["delta"] == 0.0
    assert "SemEval AvgRec, temporal" in render_markdown(results, "trainer replab-protocol ...")
