"""Exploratory: which head-fitting and selection variants could lift teach_curve's figures.

A faster, simplified twin of ``teach_curve.py`` (heads fitted with 100 Adam steps, one
seeded held-out half per brand, the pool's other half) that tries ideas before they go into
``edgemodel``: centring, extra features, bag-of-words, wider L2 grid, self-training, EM
class priors, and selection variants. Tuning brands by default; prints one line per variant
(mean polarity / related accuracy over brands and draws at each size). The table in
docs/teach_curve.md ("What else was tried") comes from:

    python benchmarks/teach_variants.py --draws 2 --sizes 100
    python benchmarks/teach_variants.py --draws 2 --sizes 25,50,100 --active
    python benchmarks/teach_variants.py --picks Honda
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import re
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from teach_outputs import corpus_outputs  # noqa: E402

from edgemodel.selection import PoolOutputs, _entropy, _softmax, _unit, select  # noqa: E402
from edgemodel.selection import uncertainty as both_uncertainty  # noqa: E402

TUNE = ("Audi", "Chrysler", "Ford", "Honda", "Nissan", "Suzuki", "Yamaha")
GRID = (1e-3, 1e-2, 1e-1, 1.0)
C = None  # the corpus outputs, loaded in main()


def softmax(a: np.ndarray) -> np.ndarray:
    e = np.exp(a - a.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def fit_batched(x, base, y, weights, l2, steps=100, lr=0.1):
    """M weighted, L2-penalised corrections at once (Adam, full batch)."""
    m_count, n = weights.shape
    d, c = x.shape[1], base.shape[1]
    onehot = np.eye(c, dtype=np.float32)[y]
    w = np.zeros((d, m_count * c), np.float32)
    b = np.zeros((m_count, c), np.float32)
    mw, vw, mb, vb = np.zeros_like(w), np.zeros_like(w), np.zeros_like(b), np.zeros_like(b)
    share = (weights / weights.sum(1, keepdims=True)).T[:, :, None]
    pen = 2 * np.repeat(l2, c)[None]
    x = x.astype(np.float32)
    for t in range(1, steps + 1):
        z = base[:, None] + (x @ w).reshape(n, m_count, c) + b[None]
        g = (softmax(z) - onehot[:, None]) * share
        grads = ((x.T @ g.reshape(n, m_count * c)) + pen * w, g.sum(0))
        for p, grad, m_, v_ in ((w, grads[0], mw, vw), (b, grads[1], mb, vb)):
            m_ *= 0.9
            m_ += 0.1 * grad
            v_ *= 0.999
            v_ += 0.001 * grad * grad
            p -= lr * (m_ / (1 - 0.9**t)) / (np.sqrt(v_ / (1 - 0.999**t)) + 1e-8)
    return w.reshape(d, m_count, c).transpose(1, 0, 2), b


def cv_fit(x, base, y, grid=GRID, folds=5, seed=13):
    """(W, b) of the L2 strength cross-validation prefers, or None (the general model)."""
    n = len(y)
    if n < 2 or len(set(y.tolist())) < 2:
        return None
    k = min(folds, n)
    fold = np.empty(n, int)
    fold[np.random.default_rng(seed).permutation(n)] = np.arange(n) % k
    weights = np.ones((k * len(grid), n), np.float32)
    l2 = np.repeat(np.asarray(grid, np.float32), k)
    for gi in range(len(grid)):
        for f in range(k):
            weights[gi * k + f, fold == f] = 0
    w, b = fit_batched(x, base, y, weights, l2)
    z = base[None] + np.einsum("nd,mdc->mnc", x, w) + b[:, None]
    right = ((z.argmax(-1) == y[None]) & (weights == 0)).sum(1)
    scores = {"0": int((base.argmax(1) == y).sum())}
    scores |= {str(g): int(right[gi * k : (gi + 1) * k].sum()) for gi, g in enumerate(grid)}
    best = max(scores, key=lambda key: (scores[key], key == "0", float(key)))
    if best == "0":
        return None
    w, b = fit_batched(x, base, y, np.ones((1, n), np.float32), np.float32([float(best)]))
    return w[0], b[0]


def words(row: int) -> set[str]:
    return set(re.findall(r"[a-z0-9#@']+", str(C.text[row]).lower()))


class Head:
    """A polarity and a related correction fitted with one variant's options."""

    def __init__(self, center=True, feats=False, grid=GRID, prior_em=False, self_train=0.0,
                 bow=0.0):  # fmt: skip
        self.center, self.feats, self.grid = center, feats, grid
        self.prior_em, self.self_train, self.bow = prior_em, self_train, bow
        self.shift_pol = self.shift_rel = 0.0

    def x(self, rows, head="pol"):
        x = C.embedding[rows] - (self.mu if self.center else 0)
        if self.feats:
            x = np.concatenate([x, C.logits[rows] * 0.3, C.related_logits[rows] * 0.3], 1)
        if self.bow:
            m = np.zeros((len(rows), len(self.vocab)), np.float32)
            for i, r in enumerate(rows):
                for w in words(r) & self.vocab.keys():
                    m[i, self.vocab[w]] = self.bow
            x = np.concatenate([x, m], 1)
        return x

    def fit(self, lab, pool):
        self.mu = C.embedding[pool].mean(0)
        if self.bow:
            df = Counter(w for r in pool for w in words(r))
            self.vocab = {w: i for i, w in enumerate(sorted(w for w, k in df.items() if k >= 2))}
        pr = lab[C.polarity[lab] >= 0]
        self.rel = cv_fit(self.x(lab, "rel"), C.related_logits[lab], C.related[lab], self.grid)
        self.pol = cv_fit(self.x(pr), C.logits[pr], C.polarity[pr], self.grid)
        if self.prior_em:
            _, rl = self.predict(pool)
            self.shift_rel = em_shift(rl, C.related[lab])
            lg, rl = self.predict(pool)
            self.shift_pol = em_shift(lg[rl.argmax(1) == 1], C.polarity[pr])
        if self.self_train:
            unl = np.setdiff1d(pool, lab)
            lg, rl = self.predict(unl)
            p_rel, p_pol = softmax(rl), softmax(lg)
            sure_r = p_rel.max(1) > 0.9
            sure_p = (p_pol.max(1) > self.self_train) & (p_rel[:, 1] > 0.9)
            rows = np.concatenate([lab, unl[sure_r]])
            y = np.concatenate([C.related[lab], p_rel.argmax(1)[sure_r]])
            self.rel = cv_fit(self.x(rows, "rel"), C.related_logits[rows], y, self.grid)
            rows = np.concatenate([pr, unl[sure_p]])
            y = np.concatenate([C.polarity[pr], p_pol.argmax(1)[sure_p]])
            self.pol = cv_fit(self.x(rows), C.logits[rows], y, self.grid)
        return self

    def predict(self, rows):
        lg, rl = C.logits[rows], C.related_logits[rows]
        if self.pol is not None:
            lg = lg + self.x(rows) @ self.pol[0] + self.pol[1]
        if self.rel is not None:
            rl = rl + self.x(rows, "rel") @ self.rel[0] + self.rel[1]
        return lg + self.shift_pol, rl + self.shift_rel


def em_shift(logits, labels) -> np.ndarray:
    """Saerens et al. (2002): log prior ratio of the pool against the labelled tweets."""
    p = softmax(logits)
    train = (np.bincount(labels, minlength=p.shape[1]) + 1) / (len(labels) + p.shape[1])
    prior = train.copy()
    for _ in range(50):
        q = p * (prior / train)
        prior = (q / q.sum(1, keepdims=True)).mean(0)
    return np.log(prior / train)


def make_select(unc="both", div=True, beta=0.0, random_share=0.0):
    def pick(po: PoolOutputs, n: int, labelled_embedding, rng) -> list[int]:
        m = len(po)
        p_rel = _softmax(po.related_logits)[:, 1]
        if unc == "both":
            u = both_uncertainty(po)
        elif unc == "pol":
            u = _entropy(_softmax(po.logits)) * p_rel
        elif unc == "margin":
            p = np.sort(_softmax(po.logits), 1)
            u = 0.5 * ((1 - (p[:, -1] - p[:, -2])) * p_rel + (1 - abs(2 * p_rel - 1)))
        else:
            u = np.ones(m)
        emb = _unit(po.embedding)
        if beta:
            k = min(10, m - 1)
            u = u * np.clip(np.sort(emb @ emb.T, 1)[:, -k - 1 : -1].mean(1), 1e-3, None) ** beta
        near = np.ones(m, np.float32)
        if div and labelled_embedding is not None:
            near = np.clip(1 - (emb @ _unit(labelled_embedding).T).max(1), 0, None)
        n_random = round(n * random_share)
        picked, free = [], np.ones(m, bool)
        for _ in range(n - n_random):
            i = int(np.argmax(np.where(free, u * near, -np.inf)))
            picked.append(i)
            free[i] = False
            if div:
                near = np.minimum(near, np.clip(1 - emb @ emb[i], 0, None))
        rest = np.flatnonzero(free)
        return picked + [int(i) for i in rng.choice(rest, n_random, replace=False)]

    return pick


HEADS: dict[str, Callable[[], Head]] = {
    "plain": lambda: Head(center=False),
    "centred": lambda: Head(),
    "centred+logit features": lambda: Head(feats=True),
    "centred+bag-of-words": lambda: Head(bow=1.0),
    "centred, 7 L2 strengths": lambda: Head(grid=(1e-3, 1e-2, 3e-2, 1e-1, 0.3, 1.0, 3.0)),
    "centred+self-training 0.9": lambda: Head(self_train=0.9),
    "centred+EM priors": lambda: Head(prior_em=True),
}
SELECTORS = {
    "both x diversity": (make_select("both"), Head),
    "polarity x diversity": (make_select("pol"), Head),
    "margin x diversity": (make_select("margin"), Head),
    "both, no diversity": (make_select("both", div=False), Head),
    "both x diversity x density": (make_select("both", beta=1.0), Head),
    "diversity only": (make_select("none"), Head),
    "half random": (make_select("both", random_share=0.5), Head),
    "both x diversity + EM priors": (make_select("both"), lambda: Head(prior_em=True)),
}


def split(brand: str, seed: int = 13):
    rows = C.rows_of(brand)
    order = np.random.default_rng(seed).permutation(len(rows))
    return rows[order[: len(rows) // 2]], rows[order[len(rows) // 2 :]]


def score(head: Head, held) -> tuple[float, float]:
    lg, rl = head.predict(held)
    r = C.polarity[held] >= 0
    return (lg[r].argmax(1) == C.polarity[held][r]).mean(), (rl.argmax(1) == C.related[held]).mean()


def curve(brand, sizes, draw, make_head, picker=None):
    held, pool = split(brand)
    rng = np.random.default_rng(1000 + draw)
    lab = np.zeros(0, int)
    head, out = None, {}
    for n in sizes:
        avail = np.setdiff1d(pool, lab)
        need = n - len(lab)
        if picker is None:
            new = rng.choice(avail, need, replace=False)
        else:
            lg, rl = (
                (C.logits[avail], C.related_logits[avail]) if head is None else head.predict(avail)
            )
            po = PoolOutputs(lg, C.embedding[avail], rl)
            if len(lab) == 0:  # cold start varies per draw: one random tweet, then the picker
                first = int(rng.integers(len(avail)))
                rest = picker(po, need, C.embedding[avail[[first]]], rng)
                idx = [first, *[i for i in rest if i != first][: need - 1]]
            else:
                idx = picker(po, need, C.embedding[lab], rng)
            new = avail[np.asarray(idx)]
        lab = np.concatenate([lab, new])
        head = make_head().fit(lab, pool)
        out[n] = score(head, held)
    return out


def main() -> None:
    global C
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=REPO / "models" / "default")
    parser.add_argument(
        "--data", type=Path, default=REPO.parent / "shared/data/replab2013/automotive_en.tsv"
    )
    parser.add_argument("--cache", type=Path, default=REPO / "runs" / "teach_cache")
    parser.add_argument("--brands", default=",".join(TUNE))
    parser.add_argument("--sizes", default="100")
    parser.add_argument("--draws", type=int, default=2)
    parser.add_argument("--active", action="store_true", help="selection variants instead")
    parser.add_argument("--only", default="", help="comma-separated variant names")
    parser.add_argument("--picks", default="", help="BRAND: what 100 active picks hold")
    args = parser.parse_args()
    C = corpus_outputs(args.model, args.data, args.cache)
    if args.picks:
        _, pool = split(args.picks)
        picked = pool[
            select(PoolOutputs(C.logits[pool], C.embedding[pool], C.related_logits[pool]), 100)
        ]
        for name, rows in (("first 100 active picks", picked), ("pool", pool)):
            pol = C.polarity[rows][C.polarity[rows] >= 0]
            shares = np.bincount(pol, minlength=3) / len(pol)
            unrelated = np.mean(C.related[rows] == 0)
            print(f"{name}: unrelated {unrelated:.2f}, negative/neutral/positive of related "
                  f"{np.round(shares, 2).tolist()}")  # fmt: skip
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    variants = (
        {k: (picker, head) for k, (picker, head) in SELECTORS.items()}
        if args.active
        else {k: (None, head) for k, head in HEADS.items()}
    )
    if args.only:
        variants = {k: v for k, v in variants.items() if k in args.only.split(",")}
    started = time.monotonic()
    for name, (picker, make_head) in variants.items():
        res = {n: [] for n in sizes}
        for brand in args.brands.split(","):
            for d in range(args.draws):
                for n, s in curve(brand, sizes, d, make_head, picker).items():
                    res[n].append(s)
        cells = " ".join(
            f"{n}: {np.mean([r[0] for r in res[n]]):.3f} / {np.mean([r[1] for r in res[n]]):.3f}"
            for n in sizes
        )
        print(f"{name:32s} {cells}  ({time.monotonic() - started:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
