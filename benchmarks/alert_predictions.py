"""The shipped model's label for every tweet of a RepLab TSV, computed once and cached.

What a node would publish for each (entity, tweet): polarity label, the related answer and
their scores,
through edgemodel's Classifier (entity heads applied), exactly as node/core.py calls it.
benchmarks/alert_eval.py feeds these to the alert detector.

Run:  python benchmarks/alert_predictions.py --data ../shared/data/replab2013/automotive_en.tsv
Writes runs/alert_eval/predictions-<model sha256[:12]>-<data name>.json (runs/ is ignored).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgemodel.bundle import ModelBundle  # noqa: E402
from edgemodel.data import read_replab  # noqa: E402
from edgemodel.inference import Classifier, EmptyTextError  # noqa: E402

BATCH = 32


def cache_path(model: Path, data: Path, out_dir: Path) -> Path:
    sha = ModelBundle.load(model, verify=False).identity()["sha256"][:12]
    return out_dir / f"predictions-v2-{sha}-{data.stem}.json"


def predict_file(model: Path, data: Path, out_dir: Path) -> Path:
    """Cache path; computes the predictions only if the cache is absent."""
    path = cache_path(model, data, out_dir)
    if path.exists():
        return path
    clf = Classifier(ModelBundle.load(model, verify=False))
    examples = read_replab(data)
    encoded, keys, unreadable = [], [], []
    for e in examples:
        key = f"{e.entity}\t{e.tweet_id}"
        try:
            encoded.append(clf.encode(e.text, e.entity))
            keys.append(key)
        except EmptyTextError:
            unreadable.append(key)  # a node publishes an error record for these
    # Length-ordered batches, as the node's batcher does: little padding.
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    result: dict[str, dict[str, object]] = {}
    start = time.perf_counter()
    for n in range(0, len(order), BATCH):
        rows = order[n : n + BATCH]
        for i, p in zip(rows, clf.predict([encoded[i] for i in rows]), strict=True):
            result[keys[i]] = {
                "label": p.label,
                "related": p.related,
                "negative_score": p.scores.get("negative"),
                "related_score": p.related_score,
            }
        if n % (BATCH * 50) == 0:
            print(f"{n}/{len(order)} tweets, {time.perf_counter() - start:.0f} s", flush=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {
        "model": clf.bundle.identity(),
        "data": data.name,
        "predictions": result,
        "unreadable": unreadable,
    }
    path.write_text(json.dumps(payload))
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=REPO / "models" / "default")
    ap.add_argument(
        "--data", type=Path, default=REPO.parent / "shared/data/replab2013/automotive_en.tsv"
    )
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "alert_eval")
    args = ap.parse_args()
    print(predict_file(args.model, args.data, args.out))


if __name__ == "__main__":
    main()
