"""The size frontier of a run trained in RepLab's protocol, scored on every 2.0 target.

Bundles come from the run's checkpoint without retraining (:mod:`trainer.compress`, the
same points as ``size_frontier.py``: vocabulary pruned to the tokens of the run's
*training* split plus every entity name, int4 weights); each is scored with
``trainer replab-protocol`` (:mod:`trainer.replab_protocol`) against the run's fp32
FlatBuffer on the same tweets: polarity on known and unseen brands, related/unrelated,
SemEval AvgRec, with paired-bootstrap intervals of every difference.

    python benchmarks/size_frontier_protocol.py --run runs/r9 \\
        --semeval ../shared/data/semeval2017/train_2013-2016.tsv \\
        --replab-train ../shared/data/replab2013/training_en.tsv \\
        --replab-test ../shared/data/replab2013/automotive_en.tsv

Writes docs/size_frontier_protocol.{md,json}; bundles go to --work and are reused.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from size_frontier import BERT_LARGE_FP32_BYTES, CONFIGS, PAPER_TARGET_MB, make_bundle  # noqa: E402

from edgemodel.report_notes import write_markdown_keeping_notes  # noqa: E402
from edgemodel.splits import SPLIT_SEED, DataSources  # noqa: E402
from trainer.replab_protocol import load_protocol_data, render_markdown, score_models  # noqa: E402

MAX_DROP = 0.01  # a shipped point stays within 1 point of its fp32 parent on every target
DEFAULT_POINTS = "vocab-1,vocab-5,vocab-8,vocab-10"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--semeval", type=Path, required=True)
    parser.add_argument("--replab-train", type=Path, required=True)
    parser.add_argument("--replab-test", type=Path, required=True)
    parser.add_argument("--points", default=DEFAULT_POINTS)
    parser.add_argument(
        "--extra", action="append", default=[], help="more bundles to score, e.g. models/default"
    )
    parser.add_argument("--work", type=Path, default=Path("/tmp/size_frontier_protocol"))
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "size_frontier_protocol")
    args = parser.parse_args()

    splits = DataSources(
        semeval=args.semeval, replab_train=args.replab_train, replab_test=args.replab_test
    ).load(seed=SPLIT_SEED)
    corpus = [e for split in splits.values() for e in split.train]
    entities = tuple(
        sorted({e.entity for s in splits.values() for e in s.train + s.test if e.entity})
    )
    specs = [f"{args.run / 'bundle'}:fp32", f"{args.run / 'bundle'}:int8"]
    cache: dict = {}
    wanted = args.points.split(",")
    for config in (c for c in CONFIGS if c.name in wanted):
        folder = make_bundle(config, args.run, args.work, corpus, entities, cache)
        specs += [f"{folder}:{variant}" for variant in config.variants]
        print(f"built {config.name}", flush=True)
    specs += args.extra

    data = load_protocol_data(args.replab_train, args.replab_test, args.semeval)
    results = score_models(specs, data)
    ref = specs[0]
    verdicts = {}
    for spec, ident in results["models"].items():
        deltas = {
            name: block[spec].get("delta", 0.0)
            for name, block in results["targets"].items()
            if spec in block and ref in block
        }
        size_mb = ident["size_bytes"] / 1e6
        verdicts[spec] = {
            "size_mb": size_mb,
            "bert_large_ratio": BERT_LARGE_FP32_BYTES / ident["size_bytes"],
            "within_1pt_every_target": all(d >= -MAX_DROP for d in deltas.values()),
            "worst_delta": min(deltas.values()) if deltas else 0.0,
        }
    results["verdicts"] = verdicts
    fitting = [(v["size_mb"], s) for s, v in verdicts.items() if v["within_1pt_every_target"]]
    under = [(mb, s) for mb, s in fitting if mb <= PAPER_TARGET_MB]
    results["smallest_within_1pt"] = min(fitting)[1] if fitting else None
    results["best_under_paper_target"] = min(under)[1] if under else None

    command = shlex.join(["python", "benchmarks/size_frontier_protocol.py", *sys.argv[1:]])
    lines = [render_markdown(results, command), "## Size verdicts", ""]
    lines += [
        "| model | size MB | BERT-large / size | worst Δ vs fp32 (pt) "
        "| within 1 pt on every target |",
        "|---|---|---|---|---|",
    ]
    for spec, v in verdicts.items():
        ident = results["models"][spec]
        lines.append(
            f"| {ident['version']} {ident['variant']} | {v['size_mb']:.2f} | "
            f"{v['bert_large_ratio']:.0f} | {100 * v['worst_delta']:+.1f} | "
            f"{'yes' if v['within_1pt_every_target'] else 'no'} |"
        )
    lines += [
        "",
        f"- smallest within 1 point of fp32 on every target: `{results['smallest_within_1pt']}`",
        f"- the same at or under the paper's {PAPER_TARGET_MB} MB: "
        f"`{results['best_under_paper_target']}`",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=2))
    write_markdown_keeping_notes(args.out.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
