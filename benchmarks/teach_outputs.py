"""The shipped model's raw outputs for every tweet of a RepLab TSV, computed once and cached.

``teach_curve.py`` simulates thousands of adapt / select rounds; each needs the
FlatBuffer's ``logits``, ``related_logits`` and ``embedding`` of a brand's tweets, which
never change for a given model and data file. They are computed through the node's own
inference code (:class:`edgemodel.inference.Classifier`, heads not applied) and kept in
``CACHE/<model sha>-<data sha>.npz``.
"""

from __future__ import annotations

import hashlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgemodel.batching import encode_readable, outputs_in_length_order  # noqa: E402
from edgemodel.bundle import EMBEDDING_OUTPUT, OUTPUT_NAME, RELATED_OUTPUT, ModelBundle  # noqa: E402
from edgemodel.data import read_replab  # noqa: E402
from edgemodel.inference import Classifier  # noqa: E402


@dataclass
class CorpusOutputs:
    """One row per readable tweet of the file."""

    entity: np.ndarray  # str
    text: np.ndarray  # str
    polarity: np.ndarray  # label index, -1 unrelated
    related: np.ndarray  # 1 / 0
    logits: np.ndarray
    related_logits: np.ndarray
    embedding: np.ndarray
    labels: list[str]

    def rows_of(self, entity: str) -> np.ndarray:
        return np.flatnonzero(self.entity == entity)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def corpus_outputs(model: Path, data: Path, cache_dir: Path) -> CorpusOutputs:
    bundle = ModelBundle.load(model)
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = f"{_sha(bundle.model_path)}-{_sha(data)}"
    cached = cache_dir / f"{key}.npz"
    labels = list(bundle.labels)
    if not cached.exists():
        started = time.monotonic()
        clf = Classifier(bundle)
        examples = read_replab(data)
        encoded, readable = encode_readable(clf, [(e.text, e.entity) for e in examples])
        kept = [examples[i] for i in readable]
        out = outputs_in_length_order(clf.run, encoded, 64)
        tmp = cached.with_suffix(".tmp.npz")
        np.savez_compressed(
            tmp,
            entity=np.asarray([e.entity for e in kept]),
            text=np.asarray([e.text for e in kept]),
            polarity=np.asarray([labels.index(e.label) if e.label else -1 for e in kept]),
            related=np.asarray([int(bool(e.related)) for e in kept]),
            logits=out[OUTPUT_NAME],
            related_logits=out[RELATED_OUTPUT],
            embedding=out[EMBEDDING_OUTPUT],
        )
        tmp.rename(cached)
        print(f"cached {len(kept)} tweets in {time.monotonic() - started:.0f} s: {cached}")
    z = np.load(cached)
    return CorpusOutputs(**{k: z[k] for k in z.files}, labels=labels)


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=REPO / "models" / "default")
    p.add_argument(
        "--data", type=Path, default=REPO.parent / "shared/data/replab2013/automotive_en.tsv"
    )
    p.add_argument("--cache", type=Path, default=REPO / "runs" / "teach_cache")
    a = p.parse_args()
    c = corpus_outputs(a.model, a.data, a.cache)
    print(len(c.entity), c.embedding.shape)
