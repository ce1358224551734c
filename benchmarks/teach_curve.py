"""Teach a brand with a simulated annotator: active learning against random, per brand.

For each brand of a RepLab TSV (default automotive_en.tsv), its tweets are split once,
seeded, into a fixed held-out half (scored, never labelled) and a pool. A simulated
annotator answers from the gold labels (related or not, and polarity where related).
Per draw, the pool is a seeded random 90 % of the brand's pool half (the tweets a node
happened to keep), shared by every strategy:

- ``random``: a uniform sample of the pool, head fitted on the labels only (what
  ``trainer adapt`` did before issue 16);
- ``random+pool``: the same labels, head fitted with the unlabelled pool too
  (centring, self-training: :func:`edgemodel.adaptation.fit_entity_head`);
- ``active``: rounds up to each size; each round fits the head (with the pool) and asks
  :func:`edgemodel.selection.select` for the next tweets on the adapted outputs, as
  ``trainer select --labelled`` and the node's Teach view do.

Everything runs on the shipped model's raw outputs for every tweet, computed once through
the node's inference code and cached (benchmarks/teach_outputs.py), so the whole run takes
minutes. Writes OUT.md (keeping its notes), OUT.json and OUT.png; also times
``trainer select`` on a pool of 5,000 tweets.

    python benchmarks/teach_curve.py --model models/default \\
        --data ../shared/data/replab2013/automotive_en.tsv --out docs/teach_curve
"""

from __future__ import annotations

import os

# One BLAS thread: the fits are small; threads only fight over 2 shared cores.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from teach_outputs import CorpusOutputs, corpus_outputs  # noqa: E402

from edgemodel.adaptation import AdaptationError, fit_entity_head  # noqa: E402
from edgemodel.bundle import ModelBundle  # noqa: E402
from edgemodel.report_notes import write_markdown_keeping_notes  # noqa: E402
from edgemodel.selection import PoolOutputs, select  # noqa: E402
from trainer.evaluate import machine_info  # noqa: E402

STRATEGIES = ("random", "random+pool", "active")
UNSEEN = ("BMW", "Volvo")  # no tweet of theirs in any training data


def outputs(c: CorpusOutputs, rows: np.ndarray) -> PoolOutputs:
    return PoolOutputs(c.logits[rows], c.embedding[rows], c.related_logits[rows])


def fit(c: CorpusOutputs, entity: str, labelled: np.ndarray, unlabelled: np.ndarray | None):
    try:
        return fit_entity_head(
            entity,
            c.embedding[labelled],
            c.logits[labelled],
            c.related_logits[labelled],
            c.polarity[labelled],
            c.related[labelled],
            unlabelled=None if unlabelled is None else outputs(c, unlabelled),
        ).head
    except AdaptationError:
        return None  # e.g. fewer than 2 related tweets among the first labels


def served(c: CorpusOutputs, rows: np.ndarray, head) -> tuple[np.ndarray, np.ndarray]:
    logits, related = c.logits[rows], c.related_logits[rows]
    if head is not None:
        logits = logits + head.polarity(c.embedding[rows])
        if head.related is not None:
            related = related + head.related(c.embedding[rows])
    return logits, related


def score(c: CorpusOutputs, held: np.ndarray, head) -> dict[str, float]:
    logits, related = served(c, held, head)
    about = c.polarity[held] >= 0
    return {
        "polarity": float((logits[about].argmax(1) == c.polarity[held][about]).mean()),
        "related": float((related.argmax(1) == c.related[held]).mean()),
    }


def draw_curve(
    c: CorpusOutputs, entity: str, held: np.ndarray, pool: np.ndarray, sizes, strategy, seed
) -> dict[int, dict[str, float]]:
    rng = np.random.default_rng(seed)
    labelled = np.zeros(0, np.int64)
    head = None
    out = {}
    for n in sizes:
        rest = np.setdiff1d(pool, labelled)
        need = min(n - len(labelled), len(rest))
        if strategy == "active":
            logits, related = served(c, rest, head)
            picked = select(
                PoolOutputs(logits, c.embedding[rest], related),
                need,
                "active",
                labelled_embedding=c.embedding[labelled] if len(labelled) else None,
            )
            new = rest[np.asarray(picked, np.int64)]
        else:
            new = rng.choice(rest, need, replace=False)
        labelled = np.concatenate([labelled, new])
        unlabelled = None if strategy == "random" else np.setdiff1d(pool, labelled)
        head = fit(c, entity, labelled, unlabelled)
        out[n] = score(c, held, head)
    return out


def brand_split(c: CorpusOutputs, entity: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rows = c.rows_of(entity)
    order = np.random.default_rng(seed).permutation(len(rows))
    half = len(rows) // 2
    return np.sort(rows[order[:half]]), np.sort(rows[order[half:]])


def run_brand(c: CorpusOutputs, entity: str, sizes, draws: int, seed: int, strategies) -> dict:
    held, pool = brand_split(c, entity, seed)
    result: dict = {
        "entity": entity,
        "held_out": len(held),
        "held_out_related": int((c.polarity[held] >= 0).sum()),
        "pool": len(pool),
        "general": score(c, held, None),
        "all_pool_labels": score(c, held, fit(c, entity, pool, None)),
        "curves": {},
    }
    for strategy in strategies:
        runs = []
        for d in range(draws):
            rng = np.random.default_rng(seed * 1000 + d)
            kept = np.sort(rng.choice(pool, round(0.9 * len(pool)), replace=False))
            runs.append(draw_curve(c, entity, held, kept, sizes, strategy, seed * 1000 + d))
        result["curves"][strategy] = {
            str(n): {task: [r[n][task] for r in runs] for task in ("polarity", "related")}
            for n in sizes
        }
    return result


def mean_over(results: list[dict], strategy: str, n: int, task: str) -> tuple[float, float, float]:
    """Mean over brands of the per-brand mean over draws; min / max over draws of the
    brand mean (each draw averaged over brands)."""
    per_draw = np.mean([r["curves"][strategy][str(n)][task] for r in results], axis=0)
    return float(per_draw.mean()), float(per_draw.min()), float(per_draw.max())


def time_select(model: Path, data: Path, c: CorpusOutputs, entity: str) -> dict[str, float]:
    """``trainer select`` end to end on 5,000 tweets, and its parts on cached outputs."""
    lines = data.read_text(encoding="utf-8").split("\n")
    header, body = lines[0], [line for line in lines[1:] if line.strip()][:5000]
    cols = header.split("\t")
    entity_col, filt, pol = cols.index("entity"), cols.index("filtering"), cols.index("polarity")
    rows = []
    for line in body:
        parts = line.split("\t")
        parts[entity_col], parts[filt], parts[pol] = entity, "", ""
        rows.append("\t".join(parts))
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        pool = Path(tmp) / "pool.tsv"
        pool.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
        cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.monotonic()
        subprocess.run(
            [sys.executable, "-m", "trainer", "select", "--model", str(model), "--pool",
             str(pool), "--n", "25", "--out", str(Path(tmp) / "next.tsv")],
            check=True, capture_output=True, cwd=REPO,
        )  # fmt: skip
        timings["cli_seconds"] = time.monotonic() - started
        cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
        # CPU time says what the command costs without the other jobs on the machine.
        timings["cli_cpu_seconds"] = (cpu.ru_utime - cpu_before.ru_utime) + (
            cpu.ru_stime - cpu_before.ru_stime
        )
    big = np.arange(min(5000, len(c.entity)))
    secs = []
    for _ in range(5):
        started = time.monotonic()
        select(outputs(c, big), 25, "active")
        secs.append(time.monotonic() - started)
    timings["select_seconds"] = statistics.median(secs)
    _, pool = brand_split(c, entity, 13)
    secs = []
    for r in range(5):
        labelled = np.random.default_rng(r).choice(pool, 100, replace=False)
        started = time.monotonic()
        fit(c, entity, labelled, np.setdiff1d(pool, labelled))
        secs.append(time.monotonic() - started)
    timings["fit_100_seconds"] = statistics.median(secs)
    return timings


def plot(results: list[dict], sizes, strategies, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [
        ("all brands", results),
        ("BMW, Volvo (unseen)", [r for r in results if r["entity"] in UNSEEN]),
    ]
    fig, axes = plt.subplots(2, 2, figsize=(11, 8), sharex=True)
    targets = {"polarity": 0.75, "related": 0.95}
    for row, (title, group) in enumerate(groups):
        if not group:
            continue
        for col, task in enumerate(("polarity", "related")):
            ax = axes[row][col]
            for strategy in strategies:
                stats = [mean_over(group, strategy, n, task) for n in sizes]
                mean = [s[0] for s in stats]
                ax.plot(sizes, mean, marker="o", label=strategy)
                ax.fill_between(sizes, [s[1] for s in stats], [s[2] for s in stats], alpha=0.15)
            general = float(np.mean([r["general"][task] for r in group]))
            ceiling = float(np.mean([r["all_pool_labels"][task] for r in group]))
            ax.axhline(general, color="grey", linestyle=":", label="general model (0 labels)")
            ax.axhline(ceiling, color="black", linestyle="--", alpha=0.6,
                       label="head on all pool labels")  # fmt: skip
            ax.axhline(targets[task], color="red", linestyle="-.", alpha=0.5, label="target")
            ax.set_xscale("log")
            ax.minorticks_off()
            ax.set_xticks(sizes, [str(n) for n in sizes])
            ax.set_title(f"{task} accuracy, {title}")
            ax.grid(alpha=0.3)
            if row == 1:
                ax.set_xlabel("labelled tweets of the brand")
    axes[0][0].legend(fontsize=8)
    fig.suptitle("Teaching a brand: held-out accuracy vs labels (mean over brands; band: draws)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render(results: list[dict], sizes, strategies, meta: dict) -> str:
    def cell(group, strategy, n, task):
        m, lo, hi = mean_over(group, strategy, n, task)
        return f"{m:.3f} [{lo:.3f}, {hi:.3f}]"

    seen = [r for r in results if r["entity"] not in UNSEEN]
    unseen = [r for r in results if r["entity"] in UNSEEN]
    t = meta["timings"]
    lines = [
        "# Teaching a brand: active learning vs random labels",
        "",
        f"- model: {meta['model']}; data: {meta['data']}",
        f"- machine: {meta['machine_words']} ({json.dumps(meta['machine'])})",
        f"- command: `{meta['command']}` ({meta['seconds']:.0f} s)",
        f"- {meta['draws']} draws per size; each brand's held-out half is fixed and never "
        "labelled; a draw's pool is a seeded 90 % of the other half",
        f"- `trainer select` on a pool of 5,000 tweets, end to end (load, run the FlatBuffer "
        f"on all 5,000, select 25): **{t['cli_seconds']:.0f} s** wall on the shared machine"
        + (f", {t['cli_cpu_seconds']:.0f} s of CPU" if "cli_cpu_seconds" in t else "")
        + "; the selection itself on "
        f"the model's outputs: {t['select_seconds']:.2f} s; fitting a head on 100 labels and "
        f"the brand's unlabelled pool: {t['fit_100_seconds']:.2f} s (medians of 5)",
        "",
        "![teach curve](teach_curve.png)",
        "",
        "Mean over brands of held-out accuracy (polarity: on related tweets; related: on "
        "all), [min, max] over draws:",
        "",
    ]
    for title, group in (
        (f"all {len(results)} brands", results),
        (f"the {len(seen)} brands with training-period tweets", seen),
        ("BMW and Volvo (no training tweets)", unseen),
    ):
        if not group:
            continue
        general = {
            k: float(np.mean([r["general"][k] for r in group])) for k in ("polarity", "related")
        }
        ceiling = {
            k: float(np.mean([r["all_pool_labels"][k] for r in group]))
            for k in ("polarity", "related")
        }
        lines += [
            f"**{title}** (general model: polarity {general['polarity']:.3f}, related "
            f"{general['related']:.3f}; head on all pool labels: {ceiling['polarity']:.3f} / "
            f"{ceiling['related']:.3f})",
            "",
            "| labels | "
            + " | ".join(f"polarity, {s}" for s in strategies)
            + " | "
            + " | ".join(f"related, {s}" for s in strategies)
            + " |",
            "|---|" + "---|" * (2 * len(strategies)),
        ]
        for n in sizes:
            cells = [cell(group, s, n, "polarity") for s in strategies]
            cells += [cell(group, s, n, "related") for s in strategies]
            lines.append(f"| {n} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += [
        "Per brand, mean over draws (polarity / related):",
        "",
        "| brand | held-out (related) | general | "
        + " | ".join(f"{s} @100" for s in strategies)
        + " | all pool labels |",
        "|---|---|---|" + "---|" * len(strategies) + "---|",
    ]
    for r in results:
        cells = []
        for s in strategies:
            c = r["curves"][s].get("100")
            cells.append(
                f"{np.mean(c['polarity']):.3f} / {np.mean(c['related']):.3f}" if c else "-"
            )
        g, a = r["general"], r["all_pool_labels"]
        lines.append(
            f"| {r['entity']} | {r['held_out']} ({r['held_out_related']}) | "
            f"{g['polarity']:.3f} / {g['related']:.3f} | "
            + " | ".join(cells)
            + f" | {a['polarity']:.3f} / {a['related']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=REPO / "models" / "default")
    parser.add_argument(
        "--data", type=Path, default=REPO.parent / "shared/data/replab2013/automotive_en.tsv"
    )
    parser.add_argument("--brands", default="", help="comma-separated; default: all")
    parser.add_argument("--sizes", default="25,50,100,200")
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--cache", type=Path, default=REPO / "runs" / "teach_cache")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "teach_curve")
    parser.add_argument("--machine", default="2-core x86_64 dev machine, shared with other jobs")
    parser.add_argument("--no-timing", action="store_true")
    parser.add_argument(
        "--retime", action="store_true", help="re-measure the timings into OUT.json, redraw"
    )
    parser.add_argument(
        "--replot", action="store_true", help="redraw OUT.md / OUT.png from OUT.json only"
    )
    args = parser.parse_args()
    if args.retime:
        # Re-measure the timings only; keep the accuracy figures of OUT.json.
        saved = json.loads(args.out.with_suffix(".json").read_text())
        c = corpus_outputs(args.model, args.data, args.cache)
        entity = saved["brands"][0]["entity"]
        saved["meta"]["timings"] = time_select(args.model, args.data, c, entity)
        saved["meta"]["machine"] = machine_info()
        args.out.with_suffix(".json").write_text(json.dumps(saved, indent=1))
        args.replot = True
    if args.replot:
        saved = json.loads(args.out.with_suffix(".json").read_text())
        results, meta = saved["brands"], saved["meta"]
        sizes = [int(n) for n in next(iter(results[0]["curves"].values()))]
        strategies = list(results[0]["curves"])
        plot(results, sizes, strategies, args.out.with_suffix(".png"))
        write_markdown_keeping_notes(
            args.out.with_suffix(".md"), render(results, sizes, strategies, meta)
        )
        return

    started = time.monotonic()
    c = corpus_outputs(args.model, args.data, args.cache)
    sizes = [int(x) for x in args.sizes.split(",")]
    strategies = args.strategies.split(",")
    brands = args.brands.split(",") if args.brands else sorted(set(c.entity.tolist()))
    results = []
    for brand in brands:
        results.append(run_brand(c, brand, sizes, args.draws, args.seed, strategies))
        r = results[-1]
        at100 = {s: r["curves"][s].get("100") for s in strategies}
        summary = {s: {k: round(float(np.mean(v[k])), 3) for k in v} for s, v in at100.items() if v}
        print(brand, f"{time.monotonic() - started:.0f}s", summary, flush=True)
    timings = (
        {
            "cli_seconds": float("nan"),
            "select_seconds": float("nan"),
            "fit_100_seconds": float("nan"),
        }
        if args.no_timing
        else time_select(args.model, args.data, c, brands[0])
    )
    bundle = ModelBundle.load(args.model)
    meta = {
        "model": f"{bundle.manifest.name} {bundle.manifest.version} ({args.model})",
        "data": str(args.data.name),
        "machine": machine_info(),
        "machine_words": args.machine,
        "command": "python benchmarks/teach_curve.py " + " ".join(sys.argv[1:]),
        "draws": args.draws,
        "timings": timings,
        "seconds": time.monotonic() - started,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(
        json.dumps({"meta": meta, "brands": results}, indent=1)
    )
    plot(results, sizes, strategies, args.out.with_suffix(".png"))
    write_markdown_keeping_notes(
        args.out.with_suffix(".md"), render(results, sizes, strategies, meta)
    )
    print(args.out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
