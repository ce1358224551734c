"""What labelled tweets of the monitored brand buy: RepLab polarity after in-brand adaptation.

RepLab 2013 gives every entity its own labelled training tweets; issue 4 scores on brands
the model has never seen. This script measures the distance between the two settings with
the real model: it takes a share of each held-out brand's RELATED tweets (grouped by
cleaned text, so a retweet never lands on both sides), fine-tunes a finished run's best
weights on them plus the RepLab training brands (``trainer train --init-weights``), and
scores the int8 FlatBuffer of the result and of the starting bundle on the *other* tweets
of the same brands, through the node's inference code. A control run gets the same
fine-tuning without any tweet of the test brands, so that what the brand's labels add is
told apart from what the RepLab-only fine-tuning does by itself. The trainer keeps 10 % of the
adaptation tweets for its dev score (model selection) and 10 % for its own test report.

The adapted run's own test report is not used: its RepLab test split still contains the
adaptation tweets.

Run:  python benchmarks/replab_in_brand.py --run runs/v4 \\
          --replab ../shared/data/replab2013/automotive_en.tsv --shares 0.2,0.5
Writes docs/replab_in_brand.json and docs/replab_in_brand.md; runs go to --work.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgemodel.bundle import ModelBundle  # noqa: E402
from edgemodel.data import POLARITY_LABELS, Example, read_replab  # noqa: E402
from edgemodel.report_notes import write_markdown_keeping_notes  # noqa: E402
from edgemodel.splits import REPLAB_TEST_ENTITIES  # noqa: E402
from edgemodel.textclean import clean_tweet  # noqa: E402
from trainer.compare import predictions  # noqa: E402
from trainer.evaluate import machine_info  # noqa: E402

SEED = 13


def split_brand_tweets(
    examples: list[Example], share: float, seed: int = SEED
) -> tuple[set[tuple[str, str]], list[Example]]:
    """(keys of the adaptation tweets, the scoring tweets) for the held-out brands.

    Per brand, groups of identical cleaned text are shuffled and taken until ``share`` of
    the brand's tweets is reached; keys are (entity, tweet_id). A tweet filed under two
    brands is scored only if its text was not used to adapt to either.
    """
    rng = random.Random(seed)
    adapt: set[tuple[str, str]] = set()
    score: list[Example] = []
    for brand in REPLAB_TEST_ENTITIES:
        groups: dict[str, list[Example]] = defaultdict(list)
        for e in examples:
            if e.entity == brand and e.label:
                groups[clean_tweet(e.text).lower()].append(e)
        keys = sorted(groups)
        rng.shuffle(keys)
        wanted = share * sum(len(g) for g in groups.values())
        taken = 0
        for key in keys:
            if taken < wanted:
                adapt |= {(e.entity or "", e.tweet_id) for e in groups[key]}
                taken += len(groups[key])
            else:
                score += groups[key]
    adapted_texts = {
        clean_tweet(e.text).lower() for e in examples if (e.entity, e.tweet_id) in adapt
    }
    return adapt, [e for e in score if clean_tweet(e.text).lower() not in adapted_texts]


def write_adaptation_file(replab: Path, keys: set[tuple[str, str]], out: Path) -> int:
    """The RepLab rows whose (entity, tweet_id) is in ``keys``, in RepLab's own format."""
    lines = replab.read_text(encoding="utf-8").split("\n")  # rows hold U+2028: not splitlines
    header = lines[0].split("\t")
    entity, tweet_id = header.index("entity"), header.index("tweet_id")
    rows = [
        line
        for line in lines[1:]
        if line and (line.split("\t")[entity], line.split("\t")[tweet_id]) in keys
    ]
    out.write_text("\n".join([lines[0], *rows]) + "\n", encoding="utf-8")
    return len(rows)


def adapt(run: Path, replab: Path, data: Path | None, out: Path, args: argparse.Namespace) -> Path:
    """Fine-tune the run's best weights on the training brands + ``data``; the bundle path.

    Without ``data`` this is the control: the same fine-tuning, no tweets of the test brands.
    """
    bundle = out / "bundle"
    if (bundle / "manifest.json").is_file():
        return bundle  # finished earlier: reuse
    # The weights only load into the same architecture.
    config = ModelBundle.load(run / "bundle", verify=False).manifest.training["config"]
    command = [
        sys.executable, "-m", "trainer", "train",
        "--out", str(out),
        "--replab", str(replab),
        *(["--data", str(data)] if data else []),
        "--init-weights", str(run / "checkpoints" / "best.weights.h5"),
        "--epochs", str(args.epochs),
        "--learning-rate", str(args.learning_rate),
        "--replab-repeat", "1",
        "--unweighted-source", "replab",
        "--eval-every", str(args.eval_every),
        "--variants", "int8",
        *(["--task-heads"] if config.get("task_heads") else []),
    ]  # fmt: skip
    subprocess.run(command, check=True, cwd=REPO)
    return bundle


def accuracy_by_brand(bundle: Path, tweets: list[Example]) -> dict[str, Any]:
    predicted = predictions(bundle, tweets)  # the bundle's int8 serving variant
    hits: dict[str, list[bool]] = defaultdict(list)
    for e, p in zip(tweets, predicted, strict=True):
        hits[e.entity or ""].append(p >= 0 and POLARITY_LABELS[p] == e.label)
    scores = {b: sum(h) / len(h) for b, h in sorted(hits.items())}
    every = [x for h in hits.values() for x in h]
    return {"all": sum(every) / len(every), **scores, "n": len(every)}


def render(report: dict[str, Any]) -> str:
    brands = list(REPLAB_TEST_ENTITIES)
    lines = [
        "# RepLab polarity with labelled tweets of the monitored brand",
        "",
        f"Generated by `benchmarks/replab_in_brand.py` on {report['date'][:10]} "
        f"({report['machine']['processor']}, {report['machine']['cpus_available']} CPUs), "
        f"starting from `{report['run']}`. Each row scores the int8 FlatBuffer on the "
        "held-out brands' tweets that were *not* used for adaptation. *before*: the run's "
        "own bundle; *control*: fine-tuned on the RepLab training brands only; *after*: "
        "fine-tuned on those plus the adaptation tweets.",
        "",
        "| share of each brand's tweets used to adapt | adaptation tweets | scored tweets "
        "| model | all | " + " | ".join(brands) + " |",
        "|---|---|---|---|---|" + "---|" * len(brands),
    ]
    for row in report["rows"]:
        for model in ("before", "control", "after"):
            s = row[model]
            lines.append(
                f"| {row['share']:.0%} | {row['adaptation_tweets']} | {s['n']} | {model} "
                f"| {s['all']:.3f} | " + " | ".join(f"{s[b]:.3f}" for b in brands) + " |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="finished trainer run")
    parser.add_argument("--replab", type=Path, required=True)
    parser.add_argument("--shares", default="0.2,0.5")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--learning-rate", type=float, default=2e-5)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "in-brand")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "replab_in_brand")
    args = parser.parse_args()

    examples = read_replab(args.replab)
    control = adapt(args.run, args.replab, None, args.work / "control", args)
    rows = []
    for share in (float(s) for s in args.shares.split(",")):
        keys, score = split_brand_tweets(examples, share)
        work = args.work / f"share-{share:g}"
        work.mkdir(parents=True, exist_ok=True)
        data = work / "adapt.tsv"
        n_adapt = write_adaptation_file(args.replab, keys, data)
        bundle = adapt(args.run, args.replab, data, work / "run", args)
        models = {"before": args.run / "bundle", "control": control, "after": bundle}
        rows.append(
            {
                "share": share,
                "adaptation_tweets": n_adapt,
                **{model: accuracy_by_brand(path, score) for model, path in models.items()},
            }
        )
    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "run": str(args.run),
        "settings": {k: v for k, v in vars(args).items() if k in ("epochs", "learning_rate")},
        "rows": rows,
    }
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    write_markdown_keeping_notes(args.out.with_suffix(".md"), render(report))
    print(render(report))


if __name__ == "__main__":
    main()
