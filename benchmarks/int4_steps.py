"""What each int4 step buys, on dev tweets: from int8 to the 8.4 MB point one step at a time.

All points come from one pruned fp32 FlatBuffer (``trainer compress --variants fp32``) and
are compared with it on *dev* tweets (never the test tweets the shipped point is scored
on): polarity and related argmax agreement and the mean KL divergence of the polarity
distribution. Steps:

1. int8 dense layers, int8 token table (the shipped 2.0.0 recipe, for scale);
2. int4 token table, one scale per row set by the row's largest value;
3. int4 token table, each row's clipping range chosen for least squared error;
4. int4 dense layers too, OCTAV clipping per block of 128 (the 2.0.0 frontier's int4);
5. GPTQ instead of OCTAV (error compensation over 512 training tweets);
6. GPTQ with one scale per 64 weights instead of 128.

    python benchmarks/int4_steps.py --bundle /tmp/size_frontier_protocol/vocab-8-fp32 \\
        --semeval ../shared/data/semeval2017/train_2013-2016.tsv \\
        --replab-train ../shared/data/replab2013/training_en.tsv \\
        --replab-test ../shared/data/replab2013/automotive_en.tsv

Writes docs/int4_steps.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from int4_sensitivity import add_arguments, load_dev_setup  # noqa: E402

import trainer.int4 as int4  # noqa: E402
from trainer.evaluate import machine_info  # noqa: E402
from trainer.int4 import Int4Recipe, quantize_int4  # noqa: E402

DENSE = ("transformer_layer",)
STEPS = (
    ("int8 dense, int8 table", Int4Recipe(int8_scopes=DENSE, embedding_bits=8), False),
    ("int8 dense, int4 table (row max)", Int4Recipe(int8_scopes=DENSE), True),
    ("int8 dense, int4 table (least-error clip)", Int4Recipe(int8_scopes=DENSE), False),
    ("int4 dense OCTAV b128, int4 table", Int4Recipe(granularity="BLOCKWISE_128"), False),
    ("int4 dense GPTQ b128, int4 table", Int4Recipe("BLOCKWISE_128", "gptq"), False),
    ("int4 dense GPTQ b64, int4 table", Int4Recipe("BLOCKWISE_64", "gptq"), False),
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser, dev_tweets=800)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "int4_steps")
    args = parser.parse_args()
    setup = load_dev_setup(args)
    encoded, fp32 = setup.encoded, setup.fp32

    rows = []
    for name, recipe, row_max in STEPS:
        started = time.perf_counter()
        saved = int4.TABLE_CLIP_RATIOS
        int4.TABLE_CLIP_RATIOS = (1.0,) if row_max else saved
        try:
            model = quantize_int4(fp32, recipe, setup.calibration)
        finally:
            int4.TABLE_CLIP_RATIOS = saved
        row = {
            "step": name,
            "size_bytes": len(model),
            **setup.answers(model),
            "seconds": round(time.perf_counter() - started, 1),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)

    command = shlex.join(["python", "benchmarks/int4_steps.py", *sys.argv[1:]])
    lines = [
        "# int4, one step at a time (dev tweets, against the pruned fp32 FlatBuffer)",
        "",
        f"- command: `{command}`",
        f"- machine: {json.dumps(machine_info())}",
        f"- {len(encoded)} dev tweets (RepLab training-period dev + SemEval dev); fp32 "
        f"FlatBuffer {len(fp32) / 1e6:.2f} MB",
        "",
        "| step | size MB | polarity agreement | polarity KL | related agreement |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['step']} | {r['size_bytes'] / 1e6:.2f} | {r['polarity_agreement']:.3f} | "
            f"{r['polarity_kl']:.4f} | {r.get('related_agreement', float('nan')):.3f} |"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {"bundle": str(args.bundle), "dev_tweets": len(encoded), "rows": rows}
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
