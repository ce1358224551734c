"""Which parts of the encoder can live with 4-bit weights: one part at a time.

Every dense layer of a pruned fp32 FlatBuffer is quantized to int8 except one group (one
transformer layer's attention, its feed-forward input or output matrix, or the token
table), which goes to int4; the cost of that group is how far the model's answers move
from fp32 on *dev* tweets (never the test tweets the shipped point is scored on): the
polarity and related argmax agreement and the mean KL divergence of the polarity
distribution. The groups that cost most are the ones a mixed-precision recipe keeps at
int8 (``trainer compress --int8-layer``).

    python benchmarks/int4_sensitivity.py --bundle /tmp/size_frontier_protocol/vocab-8-fp32 \\
        --semeval ../shared/data/semeval2017/train_2013-2016.tsv \\
        --replab-train ../shared/data/replab2013/training_en.tsv \\
        --replab-test ../shared/data/replab2013/automotive_en.tsv

Writes docs/int4_sensitivity.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import random
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgemodel.batching import outputs_in_length_order  # noqa: E402
from edgemodel.bundle import OUTPUT_NAME, RELATED_OUTPUT, ModelBundle  # noqa: E402
from edgemodel.inference import EmptyTextError, TweetEncoder, load_interpreter_class, pad_batch  # noqa: E402
from edgemodel.splits import SPLIT_SEED, DataSources  # noqa: E402
from trainer.compress import gptq_calibration  # noqa: E402
from trainer.evaluate import machine_info  # noqa: E402
from trainer.int4 import Int4Recipe, quantize_int4  # noqa: E402

ATTENTION = "self_attention_layer"
FFN_IN = "feedforward_intermediate_dense"
FFN_OUT = "feedforward_output_dense"
KINDS = (ATTENTION, FFN_IN, FFN_OUT)


def layer_scope(layer: int, kind: str) -> str:
    """Regex over FlatBuffer tensor names for one kind of dense weights of one layer."""
    return rf"transformer_layer_{layer}_\d*/{kind}"


def groups(num_layers: int) -> list[tuple[str, tuple[str, ...], int]]:
    """(name, scopes kept int8 when this group is the int4 one, embedding bits)."""
    every = [layer_scope(i, k) for i in range(num_layers) for k in KINDS]
    out = [("token table", tuple(every), 4)]
    for i in range(num_layers):
        for k in KINDS:
            mine = layer_scope(i, k)
            out.append((f"layer {i} {k}", tuple(s for s in every if s != mine), 8))
    return out


def run_model(model: bytes, encoded, pad_id: int) -> dict[str, np.ndarray]:
    interpreter_cls, _ = load_interpreter_class()
    runner = interpreter_cls(model_content=model, num_threads=2).get_signature_runner()
    wanted = (OUTPUT_NAME, RELATED_OUTPUT)

    def run(batch):
        out = runner(**pad_batch(batch, pad_id))
        return {k: np.asarray(v, np.float32) for k, v in out.items() if k in wanted}

    return outputs_in_length_order(run, encoded, 32)


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


def compare(reference: dict[str, np.ndarray], other: dict[str, np.ndarray], has_entity) -> dict:
    p, q = log_softmax(reference[OUTPUT_NAME]), log_softmax(other[OUTPUT_NAME])
    out = {
        "polarity_agreement": float((p.argmax(1) == q.argmax(1)).mean()),
        "polarity_kl": float((np.exp(p) * (p - q)).sum(1).mean()),
    }
    if RELATED_OUTPUT in reference:
        a = reference[RELATED_OUTPUT][has_entity].argmax(1)
        b = other[RELATED_OUTPUT][has_entity].argmax(1)
        out["related_agreement"] = float((a == b).mean())
    return out


def add_arguments(parser: argparse.ArgumentParser, dev_tweets: int) -> None:
    """The options both int4 analyses take (bundle with fp32, the data, dev tweets)."""
    parser.add_argument("--bundle", type=Path, required=True, help="bundle with fp32")
    parser.add_argument("--semeval", type=Path, required=True)
    parser.add_argument("--replab-train", type=Path, required=True)
    parser.add_argument("--replab-test", type=Path, required=True)
    parser.add_argument("--dev-tweets", type=int, default=dev_tweets)


@dataclass
class DevSetup:
    """The pruned fp32 FlatBuffer, seeded dev tweets, its answers and GPTQ's calibration."""

    bundle: ModelBundle
    encoder: TweetEncoder
    encoded: list
    has_entity: np.ndarray
    calibration: list
    fp32: bytes
    reference: dict[str, np.ndarray]

    def answers(self, model: bytes) -> dict[str, float]:
        return compare(self.reference, run_model(model, self.encoded, self.encoder.pad_id),
                       self.has_entity)  # fmt: skip


def load_dev_setup(args: argparse.Namespace) -> DevSetup:
    bundle = ModelBundle.load(args.bundle, variant="fp32", verify=False)
    encoder = TweetEncoder.from_bundle(bundle)
    splits = DataSources(
        semeval=args.semeval, replab_train=args.replab_train, replab_test=args.replab_test
    ).load(seed=SPLIT_SEED)
    corpus = [e for split in splits.values() for e in split.train]
    dev = [e for split in splits.values() for e in split.dev]
    encoded = []
    for e in random.Random(SPLIT_SEED).sample(dev, min(args.dev_tweets, len(dev))):
        try:
            encoded.append(encoder.encode(e.text, e.entity))
        except EmptyTextError:
            continue
    fp32 = bundle.model_path.read_bytes()
    return DevSetup(
        bundle=bundle,
        encoder=encoder,
        encoded=encoded,
        has_entity=np.array([e.entity is not None for e in encoded]),
        calibration=gptq_calibration(encoder, corpus, 512),
        fp32=fp32,
        reference=run_model(fp32, encoded, encoder.pad_id),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser, dev_tweets=600)
    parser.add_argument("--granularity", default="BLOCKWISE_128")
    parser.add_argument("--algorithms", default="gptq", help="comma-separated: octav,gptq")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "int4_sensitivity")
    args = parser.parse_args()
    setup = load_dev_setup(args)
    bundle, encoded, calibration, fp32_bytes = (
        setup.bundle, setup.encoded, setup.calibration, setup.fp32
    )  # fmt: skip
    num_layers = bundle.manifest.training.get("compression", {}).get("num_layers", 6)

    rows = []
    for name, int8_scopes, embedding_bits in groups(num_layers):
        # A lookup table has no inputs to compensate over: one row for it.
        for algorithm in ["octav"] if name == "token table" else args.algorithms.split(","):
            started = time.perf_counter()
            recipe = Int4Recipe(
                granularity=args.granularity,
                algorithm=algorithm,
                int8_scopes=int8_scopes,
                embedding_bits=embedding_bits,
            )
            model = quantize_int4(fp32_bytes, recipe, calibration)
            row = {
                "group": name,
                "algorithm": algorithm,
                "size_bytes": len(model),
                **setup.answers(model),
                "seconds": round(time.perf_counter() - started, 1),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)

    every = tuple(layer_scope(i, k) for i in range(num_layers) for k in KINDS)
    baseline = quantize_int4(fp32_bytes, Int4Recipe(int8_scopes=every, embedding_bits=8))
    base = setup.answers(baseline)
    result = {
        "bundle": str(args.bundle),
        "dev_tweets": len(encoded),
        "machine": machine_info(),
        "all_int8": {"size_bytes": len(baseline), **base},
        "rows": rows,
    }
    command = shlex.join(["python", "benchmarks/int4_sensitivity.py", *sys.argv[1:]])
    lines = [
        "# int4 sensitivity: one group at int4, every other dense layer int8",
        "",
        f"- command: `{command}`",
        f"- machine: {json.dumps(machine_info())}",
        f"- {len(encoded)} dev tweets (RepLab training-period dev + SemEval dev), answers "
        f"compared with the fp32 FlatBuffer; all-int8 baseline: polarity agreement "
        f"{base['polarity_agreement']:.3f}, KL {base['polarity_kl']:.4f}",
        "",
        "| int4 group | algorithm | polarity agreement | polarity KL | related agreement |",
        "|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: -r["polarity_kl"]):
        lines.append(
            f"| {r['group']} | {r['algorithm']} | {r['polarity_agreement']:.3f} | "
            f"{r['polarity_kl']:.4f} | {r.get('related_agreement', float('nan')):.3f} |"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
