"""Size/accuracy frontier of one trained run: vocabulary pruning, int4 weights, fewer layers.

Each point is a bundle made from the run's checkpoint without retraining
(:mod:`trainer.compress`; the vocabulary is pruned to the tokens of the run's *training*
split) and scored through the node's inference code (:func:`trainer.evaluate.evaluate_bundle`)
on the pipeline's held-out test splits: SemEval AvgRec, RepLab accuracy, and agreement with
the run's fp32 model. Sizes are FlatBuffer bytes; the ratio is against BERT-large fp32
(1.34 GB), the reference of arXiv 2310.03971 (8.4 MB = 1/160).

Run:  python benchmarks/size_frontier.py --run runs/v1 \\
          --semeval ../shared/data/semeval2017/train_2013-2016.tsv \\
          --replab ../shared/data/replab2013/automotive_en.tsv
Writes docs/size_frontier.json and docs/size_frontier.md; bundles go to --work and are
reused when the script is run again.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgemodel.bundle import ModelBundle  # noqa: E402
from edgemodel.data import Example  # noqa: E402
from edgemodel.metrics import (  # noqa: E402
    index_accuracy,
    index_macro_recall,
    paired_bootstrap_interval,
)
from edgemodel.report_notes import write_markdown_keeping_notes  # noqa: E402
from edgemodel.splits import SPLIT_SEED, DataSources  # noqa: E402
from trainer.compress import (  # noqa: E402
    CompressOptions,
    compress_bundle,
    load_run_model,
    requantize_bundle,
)
from trainer.evaluate import evaluate_bundle, machine_info  # noqa: E402
from trainer.int4 import Int4Recipe  # noqa: E402

BERT_LARGE_FP32_BYTES = 1.34e9
PAPER_TARGET_MB = 8.4
# A recommended point must stay within this of the fp32 parent on both tasks.
MAX_DROP = 0.01
SEED = SPLIT_SEED  # the pipeline's split seed


@dataclass(frozen=True)
class Config:
    """One bundle: the run's own (min_count None) or a compressed one."""

    name: str
    variants: tuple[str, ...]
    min_count: int | None = None
    num_layers: int | None = None
    # Explicit, not the library default: the point names below mean one scale per 128.
    int4_granularity: str = "BLOCKWISE_128"
    # Keep the tokens of every RepLab entity name: entities are model inputs that nodes are
    # configured with, but the entity-wise split leaves test brands rare in training tweets.
    keep_entities: bool = True
    # int4 rounding (trainer.int4.Int4Recipe): "octav" or "gptq", and dense layers kept int8.
    int4_algorithm: str = "octav"
    int8_scopes: tuple[str, ...] = ()

    @property
    def recipe(self) -> Int4Recipe:
        return Int4Recipe(
            granularity=self.int4_granularity,
            algorithm=self.int4_algorithm,
            int8_scopes=self.int8_scopes,
        )

    @property
    def requantized(self) -> bool:
        """int4 only: made from the vocabulary's pruned fp32 FlatBuffer, so every recipe of
        one vocabulary starts from the same file (and needs no TensorFlow export)."""
        return self.variants == ("int4",) and self.num_layers is None


CONFIGS = (
    Config("parent", ("fp32", "int8")),
    Config("vocab-all", ("int4",), min_count=0),
    Config("vocab-1", ("int8", "int4"), min_count=1),
    Config("vocab-1-b32", ("int4",), min_count=1, int4_granularity="BLOCKWISE_32"),
    Config("vocab-1-cw", ("int4",), min_count=1, int4_granularity="CHANNELWISE"),
    Config("vocab-2", ("int4",), min_count=2),
    Config("vocab-5", ("int8", "int4"), min_count=5),
    Config("vocab-5-b32", ("int4",), min_count=5, int4_granularity="BLOCKWISE_32"),
    Config("vocab-6", ("int4",), min_count=6),
    Config("vocab-8", ("int4",), min_count=8),
    Config("vocab-10", ("int8", "int4"), min_count=10),
    Config("vocab-10-noent", ("int4",), min_count=10, keep_entities=False),
    Config("vocab-20", ("int4",), min_count=20),
    Config("vocab-10-5layers", ("int4",), min_count=10, num_layers=5),
    # Issue 18: error-compensating int4 (GPTQ over corpus tweets), finer scale groups.
    Config("vocab-8-gptq", ("int4",), min_count=8, int4_algorithm="gptq"),
    Config(
        "vocab-8-gptq-b64",
        ("int4",),
        min_count=8,
        int4_algorithm="gptq",
        int4_granularity="BLOCKWISE_64",
    ),
)


@dataclass
class TestSet:
    name: str
    examples: list[Example]


def load_data(
    semeval: Path, replab: Path, limit: int | None
) -> tuple[list[Example], list[TestSet], tuple[str, ...]]:
    """The pipeline's splits: training tweets (the pruning corpus), polarity test sets, and
    the entity names (configuration, not tweets)."""
    splits = DataSources(semeval=semeval, replab=replab).load(seed=SEED)
    corpus = [e for split in splits.values() for e in split.train]
    parts = [p for split in splits.values() for p in (split.train, split.dev, split.test)]
    entities = tuple(sorted({e.entity for part in parts for e in part if e.entity}))
    tests = [
        TestSet(name, _sample([e for e in split.test if e.label is not None], limit))
        for name, split in splits.items()
    ]
    return corpus, tests, entities


def _sample(examples: list[Example], limit: int | None) -> list[Example]:
    # Test splits are ordered by class: a prefix would miss classes.
    if limit is None or limit >= len(examples):
        return examples
    return random.Random(SEED).sample(examples, limit)


def make_bundle(
    config: Config,
    run: Path,
    work: Path,
    corpus: list[Example],
    entities: tuple[str, ...],
    model_cache: dict,
) -> Path:
    """The config's bundle folder; built once, reused on later runs."""
    if config.min_count is None:
        return run / "bundle"
    folder = work / config.name
    if _already_made(folder, config, entities):
        return folder
    if config.requantized:
        # One pruned fp32 FlatBuffer per vocabulary, then each recipe from it.
        base_config = replace(
            config, name=f"vocab-{config.min_count}-fp32", variants=("fp32",),
            int4_algorithm="octav", int8_scopes=(),
        )  # fmt: skip
        base = make_bundle(base_config, run, work, corpus, entities, model_cache)
        requantize_bundle(
            ModelBundle.load(base, variant="fp32", verify=False),
            corpus, folder, config.recipe, config.name,
        )  # fmt: skip
        return folder
    if "model" not in model_cache:
        model_cache["model"], model_cache["parent"] = load_run_model(run)
    options = CompressOptions(
        min_count=config.min_count,
        num_layers=config.num_layers,
        variants=config.variants,
        version_suffix=config.name,
        int4=config.recipe,
        keep_texts=entities if config.keep_entities else (),
    )
    compress_bundle(model_cache["model"], model_cache["parent"], corpus, folder, options)
    return folder


def _already_made(folder: Path, config: Config, entities: tuple[str, ...]) -> bool:
    if not (folder / "manifest.json").is_file():
        return False
    manifest = ModelBundle.load(folder, verify=False).manifest
    made = manifest.training.get("compression", {})
    recipe = made.get("int4", {"granularity": made.get("int4_granularity")})
    same = (
        made.get("min_count") == config.min_count
        and bool(made.get("keep_texts")) == (config.keep_entities and bool(entities))
        and ("int4" not in config.variants or recipe == config.recipe.describe())
    )
    return same and all(v in manifest.variants for v in config.variants)


def score(folder: Path, variants: tuple[str, ...], tests: list[TestSet]) -> dict[str, dict]:
    """Per variant: per test set metrics, predictions and batch-1 p50 latency."""
    out: dict[str, dict] = {v: {} for v in variants}
    for test in tests:
        report = evaluate_bundle(
            folder,
            texts=[e.text for e in test.examples],
            labels=[e.label for e in test.examples],
            entities=[e.entity for e in test.examples],
            variants=list(variants),
            latency_samples=50,
            dataset=f"{test.name} held-out test",
            with_predictions=True,
        )
        for v in variants:
            r = report["variants"][v]
            out[v][test.name] = {
                "accuracy": r["accuracy"],
                "macro_recall": r["macro_recall"],
                "macro_f1": r["macro_f1"],
                "p50_ms": r["latency"]["p50_ms"],
                "size_bytes": r["size_bytes"],
                "predictions": report["predictions"][v],
            }
    return out


def cached_score(config: Config, folder: Path, tests: list[TestSet], work: Path) -> dict[str, dict]:
    """:func:`score`, reused from ``work`` when the same FlatBuffers met the same tweets."""
    manifest = ModelBundle.load(folder, verify=False).manifest
    key = {
        "variants": {v: manifest.variants[v].sha256 for v in config.variants},
        "tests": {t.name: [e.tweet_id or e.text for e in t.examples] for t in tests},
    }
    path = work / "scores" / f"{config.name}.json"
    if path.is_file():
        cached = json.loads(path.read_text())
        if cached["key"] == key:
            return cached["scores"]
    scores = score(folder, config.variants, tests)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"key": key, "scores": scores}))
    return scores


def point_row(config: Config, folder: Path, variant: str, scores: dict[str, dict]) -> dict:
    manifest = ModelBundle.load(folder, verify=False).manifest
    compression = manifest.training.get("compression", {})
    size = manifest.variants[variant].size_bytes
    return {
        "point": f"{config.name}/{variant}",
        "config": asdict(config),
        "variant": variant,
        "vocabulary": compression.get("vocabulary", {}).get("kept"),
        "num_layers": compression.get("num_layers"),
        "size_bytes": size,
        "size_mb": size / 1e6,
        "bert_large_ratio": BERT_LARGE_FP32_BYTES / size,
        "semeval_avgrec": scores["semeval"]["macro_recall"],
        "replab_accuracy": scores["replab"]["accuracy"],
        "p50_ms": scores["semeval"]["p50_ms"],
        "tests": {k: {m: v for m, v in s.items() if m != "predictions"} for k, s in scores.items()},
    }


def add_parent_deltas(
    rows: list[dict],
    predictions: dict[str, dict[str, list[int]]],
    truth: dict[str, np.ndarray],
) -> None:
    """Differences to the parent fp32 (with intervals) and argmax agreement with it."""
    ref_row = next(r for r in rows if r["point"] == "parent/fp32")
    ref = predictions["parent/fp32"]
    for row in rows:
        row["semeval_delta"] = row["semeval_avgrec"] - ref_row["semeval_avgrec"]
        row["replab_delta"] = row["replab_accuracy"] - ref_row["replab_accuracy"]
        pred = {k: np.asarray(v, np.int8) for k, v in predictions[row["point"]].items()}
        refs = {k: np.asarray(v, np.int8) for k, v in ref.items()}
        row["semeval_delta_95"] = paired_bootstrap_interval(
            pred["semeval"], refs["semeval"], truth["semeval"], index_macro_recall, seed=SEED
        )
        row["replab_delta_95"] = paired_bootstrap_interval(
            pred["replab"], refs["replab"], truth["replab"], index_accuracy, seed=SEED
        )
        pairs = [
            (a, b)
            for name in ref
            for a, b in zip(predictions[row["point"]][name], ref[name], strict=True)
            if b >= 0
        ]
        row["agreement_vs_parent_fp32"] = sum(a == b for a, b in pairs) / len(pairs)
        row["within_target"] = min(row["semeval_delta"], row["replab_delta"]) >= -MAX_DROP
        lows = (row["semeval_delta_95"][0], row["replab_delta_95"][0])
        row["within_target_95"] = min(lows) >= -MAX_DROP


def smallest(rows: list[dict], key: str) -> dict | None:
    """The smallest point with ``row[key]`` true."""
    ok = [r for r in rows if r.get(key)]
    return min(ok, key=lambda r: r["size_bytes"]) if ok else None


def render_markdown(result: dict) -> str:
    rows = sorted(result["points"], key=lambda r: -r["size_bytes"])
    pick = result["recommended"]
    lines = [
        "# Size / accuracy frontier",
        "",
        f"- run: `{result['run']}` (parent: {result['parent']['name']} "
        f"{result['parent']['version']}, {result['parent']['base_model']})",
        f"- date: {result['date']}; machine: {result['machine']['processor']}, "
        f"{result['machine']['cpu_count']} CPUs; runtime ai-edge-litert",
        f"- test sets (pipeline splits, seed {SEED}, polarity-labeled only): "
        + ", ".join(f"{k} {v}" for k, v in result["test_sizes"].items()),
        f"- vocabulary pruned to the tokens of the {result['corpus_tweets']} training-split "
        "tweets, plus all single characters and their ## forms, plus the tokens of the "
        f"{len(result['kept_entities'])} entity names (model inputs a node is configured with; "
        "`-noent`: without); position table cut to max_length",
        "- no retraining: every point is the run's checkpoint, pruned and/or quantized",
        "- int8: TFLite dynamic-range int8 (the pipeline's variant); int4: ai-edge-quantizer "
        "int4 dense weights (OCTAV clipping, one scale per 128 weights; `-b32`: per 32, "
        "`-cw`: per output channel) with float activations, plus the token table in int4 "
        "with one scale per row",
        f"- ratio: BERT-large fp32 ({BERT_LARGE_FP32_BYTES / 1e9:.2f} GB) / size; "
        f"the paper's point is {PAPER_TARGET_MB} MB (1/160)",
        "",
        "Δ: difference to parent/fp32, with its 95% paired-bootstrap interval.",
        "",
        "| point | vocab | layers | size MB | BERT-large / size | SemEval AvgRec (Δ) "
        "| RepLab acc (Δ) | agreement vs fp32 parent | p50 ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        mark = " **(recommended)**" if pick and r["point"] == pick["point"] else ""
        lines.append(
            f"| {r['point']}{mark} | {r['vocabulary'] or 'all'} | {r['num_layers'] or 'all'} "
            f"| {r['size_mb']:.2f} | {r['bert_large_ratio']:.0f} "
            f"| {r['semeval_avgrec']:.4f} ({_delta(r, 'semeval')}) "
            f"| {r['replab_accuracy']:.4f} ({_delta(r, 'replab')}) "
            f"| {r['agreement_vs_parent_fp32']:.4f} | {r['p50_ms']:.2f} |"
        )
    lines += ["", *_verdict(result), ""]
    return "\n".join(lines)


def _delta(row: dict, task: str) -> str:
    lo, hi = row[f"{task}_delta_95"]
    return f"{row[f'{task}_delta']:+.4f} [{lo:+.4f}, {hi:+.4f}]"


def _verdict(result: dict) -> list[str]:
    drop = f"{MAX_DROP * 100:.0f} point"
    lines = []
    for key, what in (
        ("recommended", f"within {drop} of the fp32 parent on both tasks at the low end of "
         "both 95% intervals (recommended)"),
        ("smallest_within_target", f"within {drop} on both tasks by point estimate"),
    ):  # fmt: skip
        r = result[key]
        lines.append(
            f"- smallest point {what}: none"
            if r is None
            else f"- smallest point {what}: **{r['point']}**, {r['size_mb']:.2f} MB "
            f"(1/{r['bert_large_ratio']:.0f} of BERT-large)"
        )
    small = [r for r in result["points"] if r["size_mb"] <= PAPER_TARGET_MB]
    if small:
        best = max(small, key=lambda r: min(r["semeval_delta"], r["replab_delta"]))
        lines.append(
            f"- best point at or under the paper's {PAPER_TARGET_MB} MB: {best['point']}, "
            f"{best['size_mb']:.2f} MB, SemEval {_delta(best, 'semeval')}, "
            f"RepLab {_delta(best, 'replab')}"
        )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="finished run folder")
    parser.add_argument("--semeval", type=Path, required=True)
    parser.add_argument("--replab", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("/tmp/size_frontier"))
    parser.add_argument("--out", type=Path, default=REPO / "docs", help="folder for the table")
    parser.add_argument("--configs", help="comma-separated config names (default: all)")
    parser.add_argument("--limit", type=int, help="at most N tweets per test set (quick checks)")
    args = parser.parse_args()

    wanted = args.configs.split(",") if args.configs else [c.name for c in CONFIGS]
    configs = [c for c in CONFIGS if c.name in wanted or c.name == "parent"]
    corpus, tests, entities = load_data(args.semeval, args.replab, args.limit)
    parent = ModelBundle.load(args.run / "bundle", verify=False).manifest
    result: dict[str, Any] = {
        "run": str(args.run),
        "parent": {"name": parent.name, "version": parent.version, "base_model": parent.base_model},
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "corpus_tweets": len(corpus),
        "kept_entities": list(entities),
        "test_sizes": {t.name: len(t.examples) for t in tests},
        "points": [],
    }
    predictions: dict[str, dict[str, list[int]]] = {}
    cache: dict = {}
    for config in configs:
        folder = make_bundle(config, args.run, args.work, corpus, entities, cache)
        for variant, scores in cached_score(config, folder, tests, args.work).items():
            row = point_row(config, folder, variant, scores)
            predictions[row["point"]] = {k: s["predictions"] for k, s in scores.items()}
            result["points"].append(row)
            print(f"{row['point']}: {row['size_mb']:.2f} MB, SemEval AvgRec "
                  f"{row['semeval_avgrec']:.4f}, RepLab acc {row['replab_accuracy']:.4f}",
                  flush=True)  # fmt: skip
    labels = ModelBundle.load(args.run / "bundle", verify=False).labels
    truth = {t.name: np.asarray([labels.index(e.label) for e in t.examples]) for t in tests}
    add_parent_deltas(result["points"], predictions, truth)
    # Shipped: within MAX_DROP even at the low end of both intervals, not by luck of the draw.
    result["recommended"] = smallest(result["points"], "within_target_95")
    result["smallest_within_target"] = smallest(result["points"], "within_target")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "size_frontier.json").write_text(json.dumps(result, indent=2) + "\n")
    write_markdown_keeping_notes(args.out / "size_frontier.md", render_markdown(result))
    print(render_markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
