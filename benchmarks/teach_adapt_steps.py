"""Where `node adapt`'s time and memory go, step by step, in one process.

Loads the model, runs the latest ``--labels`` gold-labelled tweets of ``--brand``
(RepLab 2013 automotive test set) through it as the node does (node/teach_adapt.py's
``raw_outputs``), fits the brand's head (edgemodel/adaptation.py) and writes the adapted
bundle, printing seconds and RSS after each step. Run it twice to see what numpy's BLAS
threads cost (the node pins them to one, node/serve.py):

    python benchmarks/teach_adapt_steps.py
    OPENBLAS_NUM_THREADS=1 python benchmarks/teach_adapt_steps.py
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgemodel.adaptation import fit_entity_head, write_adapted_bundle  # noqa: E402
from edgemodel.bundle import (  # noqa: E402
    EMBEDDING_OUTPUT,
    OUTPUT_NAME,
    RELATED_OUTPUT,
    ModelBundle,
)
from edgemodel.defaults import serving_threads  # noqa: E402
from edgemodel.inference import Classifier  # noqa: E402
from node.teach_adapt import raw_outputs  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "replab2013" / "automotive_en.tsv"


def rss_mib() -> float:
    for line in Path(f"/proc/{os.getpid()}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=REPO / "models" / "default")
    parser.add_argument("--brand", default="BMW")
    parser.add_argument("--labels", type=int, default=200)
    args = parser.parse_args()
    with DATA.open(encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
                if r["entity"] == args.brand][-args.labels :]  # fmt: skip
    print(f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}")
    started = time.monotonic()

    def step(name: str) -> None:
        nonlocal started
        now = time.monotonic()
        print(f"{name:<28} {now - started:6.2f} s   RSS {rss_mib():6.1f} MiB", flush=True)
        started = now

    bundle = ModelBundle.load(args.model)
    classifier = Classifier(bundle, num_threads=serving_threads())
    step("load model")
    encoded = [classifier.encode(r["text"], args.brand) for r in rows]
    raw = raw_outputs(classifier, encoded)
    step(f"run {len(rows)} labelled tweets")
    labels = list(classifier.labels)
    polarity = np.asarray([
        labels.index(r["polarity"].lower())
        if r["filtering"] == "RELATED" and r["polarity"].lower() in labels else -1
        for r in rows
    ])  # fmt: skip
    related = np.asarray([int(r["filtering"] == "RELATED") for r in rows])
    fitted = fit_entity_head(args.brand, raw[EMBEDDING_OUTPUT], raw[OUTPUT_NAME],
                             raw.get(RELATED_OUTPUT), polarity, related)  # fmt: skip
    step("fit the heads (5-fold CV)")
    with tempfile.TemporaryDirectory() as tmp:
        write_adapted_bundle(bundle, [fitted.head], Path(tmp) / "bundle")
        step("write the adapted bundle")
    print(fitted.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
