"""Learning curve of `trainer adapt`: accuracy on a brand vs labelled tweets of it.

BMW and Volvo have no tweet in any training data; brands with training-period tweets
(e.g. Chrysler, Yamaha) show what current labels add on top of the protocol's training.

For each brand (default BMW and Volvo: no tweet of theirs is in any training data), its
test-period tweets are split once, seeded, into an evaluation half and a pool. For each
size n, ``--repeats`` random draws of n pool tweets (labelled as a user would label them:
related or not, and polarity where related) fit a per-entity head exactly as
`trainer adapt` does (:func:`edgemodel.adaptation.fit_entity_head`, same cross-validated L2),
which is scored on the evaluation half. n = 0 is the general model. Everything runs
through the bundle's FlatBuffer and the node's inference code.

    python benchmarks/adapt_curve.py --model models/default \
        --replab-test ../shared/data/replab2013/automotive_en.tsv --out docs/adapt_curve

Writes OUT.md, OUT.json and OUT.png, and times one end-to-end `trainer adapt` on 400
tweets (read data, run the FlatBuffer, fit, write the bundle).
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgemodel.bundle import ModelBundle  # noqa: E402
from edgemodel.data import read_replab  # noqa: E402
from edgemodel.inference import Classifier  # noqa: E402
from edgemodel.report_notes import write_markdown_keeping_notes  # noqa: E402
from trainer.adapt import AdaptConfig, BrandData, brand_outputs  # noqa: E402
from trainer.evaluate import machine_info  # noqa: E402


def subset(data: BrandData, rows: np.ndarray) -> BrandData:
    return BrandData(
        embedding=data.embedding[rows],
        logits=data.logits[rows],
        related_logits=None if data.related_logits is None else data.related_logits[rows],
        polarity=data.polarity[rows],
        related=data.related[rows],
    )


def score(data: BrandData, head) -> dict[str, float]:
    logits = data.logits + (head.polarity(data.embedding) if head else 0.0)
    related_rows = data.polarity >= 0
    out = {
        "polarity_accuracy": float(
            (logits[related_rows].argmax(1) == data.polarity[related_rows]).mean()
        )
    }
    if data.related_logits is not None:
        rel = data.related_logits + (
            head.related(data.embedding) if head and head.related is not None else 0.0
        )
        out["related_accuracy"] = float((rel.argmax(1) == data.related).mean())
    return out


def curve(
    clf: Classifier, examples, entity: str, sizes: list[int], repeats: int, seed: int
) -> dict:
    data = brand_outputs(clf, examples, entity)
    order = list(range(len(data.polarity)))
    random.Random(seed).shuffle(order)
    half = len(order) // 2
    evaluation, pool = np.asarray(order[:half]), order[half:]
    held = subset(data, evaluation)
    points = []
    for n in sizes:
        runs = []
        for r in range(repeats if n else 1):
            if n == 0:
                runs.append(score(held, None))
                continue
            rows = np.asarray(random.Random(seed * 1000 + r).sample(pool, min(n, len(pool))))
            try:
                head = subset(data, rows).fit(entity, AdaptConfig(seed=seed + r)).head
            except ValueError as exc:  # e.g. a draw without two polarity labels
                print(f"{entity} n={n} draw {r}: {exc}", flush=True)
                continue
            runs.append(score(held, head))
        point = {"n": n, "runs": runs}
        for key in runs[0]:
            values = [run[key] for run in runs]
            point[key] = {
                "mean": float(np.mean(values)),
                "min": float(np.min(values)),
                "max": float(np.max(values)),
            }
        points.append(point)
        print(entity, n, {k: v for k, v in point.items() if k not in ("runs", "n")}, flush=True)
    return {
        "entity": entity,
        "eval_tweets": len(evaluation),
        "eval_related": int((held.polarity >= 0).sum()),
        "pool": len(pool),
        "points": points,
    }


def time_cli(model: Path, examples_file: Path, n: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        sample = Path(tmp) / "brand.tsv"
        lines = examples_file.read_text(encoding="utf-8").split("\n")
        sample.write_text("\n".join(lines[: n + 1]) + "\n", encoding="utf-8")
        started = time.monotonic()
        subprocess.run(
            [sys.executable, "-m", "trainer", "adapt", "--model", str(model), "--data",
             str(sample), "--out", str(Path(tmp) / "out")],
            check=True, capture_output=True, cwd=REPO,
        )  # fmt: skip
        return time.monotonic() - started


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, title in (
        (axes[0], "polarity_accuracy", "polarity accuracy (related tweets)"),
        (axes[1], "related_accuracy", "related/unrelated accuracy (all tweets)"),
    ):
        for r in results:
            pts = [p for p in r["points"] if key in p]
            if not pts:
                continue
            xs = [p["n"] for p in pts]
            mean = [p[key]["mean"] for p in pts]
            low = [p[key]["mean"] - p[key]["min"] for p in pts]
            high = [p[key]["max"] - p[key]["mean"] for p in pts]
            ax.errorbar(xs, mean, yerr=[low, high], marker="o", capsize=3, label=r["entity"])
        ax.set_xlabel("labelled tweets of the brand")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("trainer adapt: accuracy vs labelled current tweets of a brand (mean, min-max)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def render(results: list[dict], meta: dict) -> str:
    lines = [
        "# Adapting to a new brand: learning curve",
        "",
        f"- model: {meta['model']}; machine: {json.dumps(meta['machine'])}",
        f"- command: `{meta['command']}`",
        f"- {meta['repeats']} random draws per size; the evaluation half of each brand "
        "is fixed and never drawn from",
        f"- one end-to-end `trainer adapt` on {meta['timed_n']} tweets: "
        f"**{meta['cli_seconds']:.1f} s** on this machine (2 cores), no TensorFlow involved",
        "",
        "![learning curve](adapt_curve.png)",
        "",
        "| brand | labelled tweets | polarity acc (mean [min, max]) "
        "| related acc (mean [min, max]) |",
        "|---|---|---|---|",
    ]
    for r in results:
        for p in r["points"]:
            cells = []
            for key in ("polarity_accuracy", "related_accuracy"):
                v = p.get(key)
                cells.append(f"{v['mean']:.3f} [{v['min']:.3f}, {v['max']:.3f}]" if v else "-")
            lines.append(f"| {r['entity']} | {p['n']} | {cells[0]} | {cells[1]} |")
    lines += [
        "",
        "Evaluation tweets per brand: "
        + ", ".join(
            f"{r['entity']} {r['eval_tweets']} ({r['eval_related']} related)" for r in results
        ),
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--replab-test", type=Path, required=True)
    parser.add_argument("--brands", default="BMW,Volvo")
    parser.add_argument("--sizes", default="0,50,100,200,400")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "adapt_curve")
    args = parser.parse_args()

    clf = Classifier(ModelBundle.load(args.model))
    examples = read_replab(args.replab_test)
    sizes = [int(x) for x in args.sizes.split(",")]
    results = []
    for brand in args.brands.split(","):
        mine = [e for e in examples if e.entity == brand]
        results.append(curve(clf, mine, brand, sizes, args.repeats, args.seed))

    first = args.brands.split(",")[0]
    with tempfile.TemporaryDirectory() as tmp:
        brand_file = Path(tmp) / "brand.tsv"
        lines = args.replab_test.read_text(encoding="utf-8").split("\n")
        header = lines[0]
        rows = [line for line in lines[1:] if line.split("\t")[1:2] == [first]]
        brand_file.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
        cli_seconds = time_cli(args.model, brand_file, 400)

    meta = {
        "model": f"{clf.bundle.manifest.name} {clf.bundle.manifest.version} ({args.model})",
        "machine": machine_info(),
        "command": "python benchmarks/adapt_curve.py " + " ".join(sys.argv[1:]),
        "repeats": args.repeats,
        "timed_n": 400,
        "cli_seconds": cli_seconds,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {"meta": meta, "brands": results}
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2))
    plot(results, args.out.with_suffix(".png"))
    write_markdown_keeping_notes(args.out.with_suffix(".md"), render(results, meta))
    print(args.out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
