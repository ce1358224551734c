"""How well the spike alerts (dashboard/alerts.py) find negative bursts in real brand streams.

The stream: the RepLab 2013 test-period tweets of each automotive brand
(../shared/data/replab2013/automotive_en.tsv), in their own time order and spacing (time
from the snowflake ids), counted per minute as a dashboard counts a node's records:
related tweets and the negative ones among them. Two label sources: what the shipped
model (models/default) publishes for each tweet (benchmarks/alert_predictions.py caches
it) and the gold labels.

Bursts: ``size`` extra gold-negative RELATED tweets of the same brand (texts drawn from the
brand's own gold negatives, fresh ids), at uniform random times inside ``span`` (2 h)
starting at a uniform random time of the evaluated period; with the model labels each
extra tweet counts as what the model says about its text. One burst per trial, many trials.

Measured per brand:
* false alarms: alerts opened on the unperturbed stream, per simulated week of the
  evaluated period (a brand's time from its 5 % time quantile to its last tweet: the first
  5 % are a sparse tail of months that would dilute the rate);
* recall: share of trials where an alert opens between the burst's first tweet and 30 min
  (event time) after its last; a burst that starts while the unperturbed stream is already
  alerting raises no new alert and counts as a miss (and is counted apart);
* time in alert: share of the evaluated period with an alert open, unperturbed stream;
* delay: alert opening minus the burst's last tweet (negative: before the burst ended).

Two methods (dashboard/alerts.py: the window test and a Bernoulli CUSUM). Parameters are
chosen on TUNE_BRANDS only (seeded split, fixed before any run): per method, the rule with
the highest 10-tweet recall (model labels) among those with at most ``--max-fa`` false
alarms per week on every tuning brand; the method with the higher of the two is reported
in detail and is the product's. The figures reported are those of the other brands, which
played no part in the choice.

Run:  python benchmarks/alert_eval.py            (about N minutes on 2 cores)
Writes docs/alerts.json, docs/alerts.md (the tables; notes kept) and docs/alerts.png.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import random
import statistics
import sys
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from alert_predictions import predict_file  # noqa: E402

from dashboard.alerts import CusumRule, Rule, SpikeRule, make_detector  # noqa: E402
from edgemodel.data import read_replab  # noqa: E402
from edgemodel.report_notes import write_markdown_keeping_notes  # noqa: E402
from edgemodel.splits import tweet_time_ms  # noqa: E402
from trainer.evaluate import machine_info  # noqa: E402

SEED = 17
ALL_BRANDS = [
    "Audi",
    "BMW",
    "Bentley",
    "Chrysler",
    "Fiat",
    "Ford",
    "Honda",
    "Mazda",
    "Nissan",
    "Porsche",
    "Suzuki",
    "Volkswagen",
    "Volvo",
    "Yamaha",
]
# Seeded and fixed before the first run: half the brands tune, the other half report.
TUNE_BRANDS = tuple(sorted(random.Random(SEED).sample(ALL_BRANDS, 7)))
REPORT_BRANDS = tuple(b for b in ALL_BRANDS if b not in TUNE_BRANDS)
SPAN_S = 2 * 3600
DELAY_LIMIT_S = 30 * 60
PERIOD_QUANTILE = 0.05
WEEK_S = 7 * 86400
GRID = {
    "window_s": (3600, 2 * 3600, 3 * 3600),
    "alpha": (1e-2, 3e-3, 1e-3, 1e-4),
    "min_negative": (3, 4, 5),
}
# What counts as a negative tweet of the model: its label (None), or a negative score at
# or above the threshold (records carry the scores; a lower bar catches more of the
# negatives the model half-sees, at a higher baseline share).
THRESHOLDS = (None, 0.1, 0.2, 0.3)


# The alternative method (dashboard.alerts.CusumDetector), tuned the same way.
CUSUM_GRID = {
    "odds_ratio": (3.0, 5.0, 8.0),
    "threshold": (3.0, 4.0, 5.0, 6.0),
    "min_negative": (3, 4),
}


def method_of(rule: Rule) -> str:
    return "cusum" if isinstance(rule, CusumRule) else "window"


@dataclass(frozen=True)
class Tweet:
    t: int  # epoch seconds
    negative: bool  # as the label source says
    related: bool


@dataclass
class Brand:
    name: str
    tweets: dict[str, list[Tweet]]  # label source -> time-ordered stream
    # label source -> how each gold negative is seen (None: unreadable, an error record)
    negatives: dict[str, list[Tweet | None]]
    period: tuple[int, int]

    def weeks(self) -> float:
        return (self.period[1] - self.period[0]) / WEEK_S


def load_brands(data: Path, predictions: Path, threshold: float | None) -> dict[str, Brand]:
    """Per brand, its streams as each label source sees them. ``threshold``: a related
    tweet counts as negative when the model's negative score reaches it (None: when the
    model's label is negative)."""
    cache = json.loads(predictions.read_text())
    model = cache["predictions"]
    rows: dict[str, dict[str, list[Tweet]]] = defaultdict(lambda: defaultdict(list))
    gold_neg: dict[str, dict[str, list[Tweet | None]]] = defaultdict(lambda: defaultdict(list))
    for e in read_replab(data):
        ms = tweet_time_ms(e.tweet_id)
        if ms is None or e.entity is None:
            continue
        t = ms // 1000
        gold = Tweet(t, bool(e.related) and e.label == "negative", bool(e.related))
        seen = model.get(f"{e.entity}\t{e.tweet_id}")
        by_model = None  # an unreadable tweet gets an error record: it counts nowhere
        if seen:
            negative = (
                seen["label"] == "negative"
                if threshold is None
                else seen["negative_score"] >= threshold
            )
            by_model = Tweet(t, bool(seen["related"]) and negative, bool(seen["related"]))
            rows[e.entity]["model"].append(by_model)
        rows[e.entity]["gold"].append(gold)
        if gold.negative:
            # Aligned lists: the same burst picks the same tweets for both sources.
            gold_neg[e.entity]["gold"].append(gold)
            gold_neg[e.entity]["model"].append(by_model)
    brands = {}
    for name, sources in rows.items():
        for stream in sources.values():
            stream.sort(key=lambda tw: tw.t)
        times = [tw.t for tw in sources["gold"]]
        period = (times[int(len(times) * PERIOD_QUANTILE)], times[-1])
        brands[name] = Brand(name, dict(sources), dict(gold_neg[name]), period)
    return brands


def per_minute(tweets: list[Tweet]) -> list[tuple[int, int, int]]:
    """(minute, negative, related), time-ordered."""
    counts: dict[int, list[int]] = {}
    for tw in tweets:
        if tw.related:
            c = counts.setdefault(tw.t - tw.t % 60, [0, 0])
            c[0] += tw.negative
            c[1] += 1
    return [(m, n, r) for m, (n, r) in sorted(counts.items())]


def alert_spans(rule: Rule, minutes: list[tuple[int, int, int]], end: int) -> list[list]:
    """[opened, closed or None] for every alert on a stream."""
    det = make_detector(rule)
    spans: list[list] = []
    for m, n, r in minutes:
        det.add("x", m, n, r)
        for ev in det.advance(m + 59):
            if ev.kind == "open":
                spans.append([ev.alert.start, None])
            else:
                spans[-1][1] = ev.alert.end
    for ev in det.advance(end + 3 * 3600):
        if ev.kind == "close" and spans:
            spans[-1][1] = ev.alert.end
    return spans


def false_alarms(rule: Rule, brand: Brand, source: str) -> tuple[int, float]:
    """(alerts opened in the period, share of the period with an alert open)."""
    spans = alert_spans(rule, per_minute(brand.tweets[source]), brand.period[1])
    start, end = brand.period
    opened = sum(start <= s[0] <= end for s in spans)
    open_s = sum(max(0, min(e if e is not None else end, end) - max(b, start)) for b, e in spans)
    return opened, open_s / (end - start)


def make_bursts(brand: Brand, size: int, trials: int, seed: int) -> list[tuple[list[int], list]]:
    """(burst times, indices of the gold negatives used) per trial; the same for both label
    sources, so model and gold see the same bursts."""
    rng = random.Random(f"{seed}-{brand.name}-{size}")
    lo, hi = brand.period[0] + 86400, brand.period[1] - SPAN_S
    n_neg = len(brand.negatives["gold"])
    out = []
    for _ in range(trials):
        start = rng.randint(lo, hi)
        times = sorted(start + rng.randint(0, SPAN_S) for _ in range(size))
        out.append((times, [rng.randrange(n_neg) for _ in range(size)]))
    return out


def run_trial(
    rule: Rule,
    minutes: list[tuple[int, int, int]],
    times: list[int],
    extra: list[Tweet | None],
) -> tuple[str, int | None]:
    """("hit" | "miss" | "already_open", opening minus the last burst tweet)."""
    first, last = times[0], times[-1]
    horizon = 2 * 3600 + rule.baseline_s  # the window (or CUSUM gap) and the baseline
    det = make_detector(rule)
    injected = per_minute(
        [Tweet(t, tw.negative, tw.related) for t, tw in zip(times, extra, strict=True) if tw]
    )
    before = [x for x in minutes if first - horizon - 60 <= x[0] < first - first % 60]
    for m, n, r in before:
        det.add("b", m, n, r)
    if any(ev.kind == "open" for ev in det.advance(first - first % 60 - 1)):
        return "already_open", None
    if det.alerts().get("b") and det.alerts()["b"].state == "open":
        return "already_open", None
    during = [x for x in minutes if first - first % 60 <= x[0] <= last + DELAY_LIMIT_S]
    merged: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for m, n, r in during + injected:
        merged[m][0] += n
        merged[m][1] += r
    for m in sorted(merged):
        det.add("b", m, *merged[m])
        for ev in det.advance(m + 59):
            if ev.kind == "open":
                return "hit", ev.alert.start - last
    for ev in det.advance(last + DELAY_LIMIT_S):
        if ev.kind == "open":
            return "hit", ev.alert.start - last
    return "miss", None


def recall(
    rule: Rule, brand: Brand, source: str, bursts: list[tuple[list[int], list]]
) -> dict[str, Any]:
    minutes = per_minute(brand.tweets[source])
    pool = brand.negatives[source]
    outcomes, delays = defaultdict(int), []
    for times, picks in bursts:
        extra = [pool[i] for i in picks]
        outcome, delay = run_trial(rule, minutes, times, extra)
        outcomes[outcome] += 1
        if delay is not None:
            delays.append(delay)
    # A burst that lands while an alert is already open raises no new alert: a miss.
    counted = outcomes["hit"] + outcomes["miss"] + outcomes["already_open"]
    return {
        "recall": outcomes["hit"] / counted if counted else None,
        "trials": counted,
        "already_open": outcomes["already_open"],
        "delays_s": delays,
    }


def evaluate(
    rule: Rule, brands: list[Brand], source: str, bursts: dict[tuple[str, int], list]
) -> dict[str, Any]:
    per_brand = {}
    for brand in brands:
        fa, open_share = false_alarms(rule, brand, source)
        seen = brand.negatives[source]
        row: dict[str, Any] = {
            # How many of the brand's gold negatives the source counts as negative.
            "negatives_seen": round(sum(bool(x and x.negative) for x in seen) / len(seen), 3),
            "false_alarms": fa,
            "weeks": round(brand.weeks(), 2),
            "fa_per_week": round(fa / brand.weeks(), 3),
            "open_share": round(open_share, 4),
            "related_per_day": round(
                sum(tw.related for tw in brand.tweets[source] if tw.t >= brand.period[0])
                / (brand.weeks() * 7),
                1,
            ),
        }
        for (name, size), trial_bursts in bursts.items():
            if name == brand.name:
                row[f"burst{size}"] = recall(rule, brand, source, trial_bursts)
        per_brand[brand.name] = row
    return per_brand


def summary(per_brand: dict[str, Any], sizes: list[int]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "fa_per_week_max": max(r["fa_per_week"] for r in per_brand.values()),
        "open_share_max": max(r["open_share"] for r in per_brand.values()),
        "fa_per_week_all": round(
            sum(r["false_alarms"] for r in per_brand.values())
            / sum(r["weeks"] for r in per_brand.values()),
            3,
        ),
    }
    for size in sizes:
        rows = [r[f"burst{size}"] for r in per_brand.values()]
        hits = sum(round(r["recall"] * r["trials"]) for r in rows if r["recall"] is not None)
        trials = sum(r["trials"] for r in rows)
        delays = [d for r in rows for d in r["delays_s"]]
        out[f"burst{size}"] = {
            "recall": round(hits / trials, 3) if trials else None,
            "recall_min_brand": min(
                (r["recall"] for r in rows if r["recall"] is not None), default=None
            ),
            "trials": trials,
            "already_open": sum(r["already_open"] for r in rows),
            "delay_median_min": round(statistics.median(delays) / 60, 1) if delays else None,
            "delay_p90_min": round(_quantile(delays, 0.9) / 60, 1) if delays else None,
        }
    return out


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def tune(
    by_threshold: dict[float | None, dict[str, Brand]], trials: int, max_fa: float, seed: int
) -> tuple[dict[str, tuple[float | None, Rule]], list[dict[str, Any]]]:
    """Per method, the best (negative threshold, rule) on the tuning brands (model
    labels), and every row tried. Best: highest 10-tweet recall among the rules with at
    most ``max_fa`` false alarms per week on every tuning brand."""
    table = []
    grids = [("window", SpikeRule, GRID), ("cusum", CusumRule, CUSUM_GRID)]
    for threshold, brands in by_threshold.items():
        tuning = [brands[b] for b in TUNE_BRANDS]
        bursts = {(b.name, 10): make_bursts(b, 10, trials, seed) for b in tuning}
        for method, cls, grid in grids:
            for values in itertools.product(*grid.values()):
                rule = cls(**dict(zip(grid, values, strict=True)))
                got = summary(evaluate(rule, tuning, "model", bursts), [10])
                row = {"method": method, "negative_threshold": threshold, "rule": asdict(rule)}
                table.append({**row, **got})
                print(method, threshold, values, got["fa_per_week_max"],
                      got["burst10"]["recall"], flush=True)  # fmt: skip
    best: dict[str, tuple[float | None, Rule]] = {}
    for method, cls, _ in grids:
        rows = [r for r in table if r["method"] == method]
        pool = [r for r in rows if r["fa_per_week_max"] <= max_fa] or rows
        top = max(pool, key=lambda r: (r["burst10"]["recall"] or 0, -r["fa_per_week_all"]))
        best[method] = (top["negative_threshold"], cls(**top["rule"]))
    return best, table


def tuning_row(table: list[dict[str, Any]], threshold: float | None, rule: Rule) -> dict:
    return next(
        r
        for r in table
        if r["method"] == method_of(rule)
        and r["rule"] == asdict(rule)
        and r["negative_threshold"] == threshold
    )


def strip_delays(result: dict[str, Any]) -> dict[str, Any]:
    """The per-trial delay lists are long: keep them out of the JSON."""
    return {
        brand: {k: ({**v, "delays_s": None} if isinstance(v, dict) else v) for k, v in row.items()}
        for brand, row in result.items()
    }


def plot(path: Path, report: dict[str, Any], example: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 8.5))
    t0 = example["t"][0]
    hours = [(t - t0) / 3600 for t in example["t"]]
    top.bar(hours, example["related"], width=1.0, color="#cfd8e3", label="related tweets / h")
    top.bar(hours, example["negative"], width=1.0, color="#c0392b", label="negative / h (model)")
    for start, end in example["alerts"]:
        top.axvspan(
            (start - t0) / 3600, ((end or example["t"][-1]) - t0) / 3600, color="#f39c12", alpha=0.3
        )
    for t in example["burst"]:
        top.axvline((t - t0) / 3600, color="black", lw=0.6, alpha=0.6)
    top.set_title(
        f"{example['brand']}: a 10-tweet negative burst (black lines) injected into a week of "
        "real tweets; alerts shaded",
        fontsize=10,
    )
    top.set_xlabel("hours (event time)")
    top.legend(loc="upper left", fontsize=8)

    brands = list(report["model"]["per_brand"])
    x = range(len(brands))
    w = 0.2
    for i, (source, size, colour) in enumerate(
        [
            ("model", 10, "#2c3e50"),
            ("gold", 10, "#7f8c8d"),
            ("model", 5, "#2980b9"),
            ("gold", 5, "#aed6f1"),
        ]
    ):
        values = [report[source]["per_brand"][b][f"burst{size}"]["recall"] or 0 for b in brands]
        bottom.bar(
            [p + (i - 1.5) * w for p in x],
            values,
            w,
            color=colour,
            label=f"{size}-tweet burst, {source} labels",
        )
    bottom.axhline(0.9, color="#c0392b", lw=0.8, ls="--", label="target 0.9 (10 tweets)")
    bottom.set_xticks(list(x))
    bottom.set_xticklabels(
        [f"{b}\n{report['model']['per_brand'][b]['related_per_day']:.0f}/day" for b in brands],
        fontsize=8,
    )
    bottom.set_ylabel(f"recall (alert by last tweet + {DELAY_LIMIT_S // 60} min)")
    bottom.set_ylim(0, 1.3)
    bottom.set_title("Reported brands (not used for tuning)", fontsize=10)
    bottom.legend(fontsize=7, ncols=3, loc="upper center")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def example_timeline(rule: Rule, brand: Brand, seed: int) -> dict[str, Any]:
    """Hourly counts of one week around one injected burst, with the alerts on it."""
    times, picks = make_bursts(brand, 10, 1, seed + 1)[0]
    pool = brand.negatives["model"]
    extra = [
        Tweet(t, seen.negative, seen.related)
        for t, seen in zip(times, (pool[i] for i in picks), strict=True)
        if seen
    ]
    stream = sorted(brand.tweets["model"] + extra, key=lambda tw: tw.t)
    start = times[0] - 4 * 86400
    end = times[0] + 3 * 86400
    spans = alert_spans(rule, per_minute(stream), end)
    axis = list(range(start - start % 3600, end, 3600))
    related, negative = [0] * len(axis), [0] * len(axis)
    for tw in stream:
        if start <= tw.t < end and tw.related:
            i = (tw.t - axis[0]) // 3600
            related[i] += 1
            negative[i] += tw.negative
    return {
        "brand": brand.name,
        "t": axis,
        "related": related,
        "negative": negative,
        "burst": times,
        "alerts": [s for s in spans if start <= s[0] <= end],
    }


def at_least(k: int, n: int, p: float) -> float:
    """P(Binomial(n, p) >= k): how often a burst of n gives the detector k to count."""
    return sum(math.comb(n, j) * p**j * (1 - p) ** (n - j) for j in range(k, n + 1))


def describe(method: str, rule: dict[str, Any], threshold: float | None) -> str:
    """One sentence for a rule."""
    negative = (
        "negative: the model's label"
        if threshold is None
        else f"negative: a negative score of at least {threshold}"
    )
    if method == "cusum":
        return (
            f"Bernoulli CUSUM, odds ratio {rule['odds_ratio']:g}, threshold "
            f"{rule['threshold']:g} with at least {rule['min_negative']} negative tweets in "
            f"the last {rule['window_s'] // 60} min, baseline {rule['baseline_s'] // 86400} "
            f"days; {negative}."
        )
    return (
        f"window {rule['window_s'] // 60} min against a baseline of "
        f"{rule['baseline_s'] // 86400} days, open at p < {rule['alpha']:g} with at least "
        f"{rule['min_negative']} negative tweets, close at p > {rule['close_alpha']:g}, prior "
        f"share {rule['prior_share']} weighing {rule['prior_weight']:g} tweets; {negative}."
    )


def write_markdown(path: Path, report: dict[str, Any]) -> None:
    rule, ident = report["rule"], report["model_identity"]
    lines = [
        "# Spike alerts: how well they find negative bursts",
        "",
        "Generated by `python benchmarks/alert_eval.py` (the method and how it was chosen are "
        "described below the results). Plot: [alerts.png](alerts.png).",
        "",
        "![recall per brand and an injected burst](alerts.png)",
        "",
        "## Results",
        "",
        f"Chosen on the tuning brands ({', '.join(report['tune_brands'])}): "
        + describe(report["method"], rule, report["negative_threshold"]),
        "",
        "Both methods, each with its best rule on the tuning brands (10-tweet recall with model "
        "labels there: "
        + ", ".join(
            f"{name} {m['tuning']['burst10']['recall']:.3f}"
            for name, m in report["methods"].items()
        )
        + "; the higher one is the product's), on the reported brands:",
        "",
        "| method | rule | labels | false alarms / brand-week (worst brand) | time in alert, "
        "worst brand | recall 10 (worst brand) | delay 10, median | recall 5 |",
        "|---|---|---|---|---|---|---|---|",
        *(
            f"| {name} | {describe(name, m['rule'], m['negative_threshold'])} | {source} | "
            f"{m[source]['summary']['fa_per_week_all']:.2f} "
            f"({m[source]['summary']['fa_per_week_max']:.2f}) | "
            f"{m[source]['summary']['open_share_max']:.1%} | "
            f"{m[source]['summary']['burst10']['recall']:.3f} "
            f"({m[source]['summary']['burst10']['recall_min_brand']:.2f}) | "
            f"{m[source]['summary']['burst10']['delay_median_min']} min | "
            f"{m[source]['summary']['burst5']['recall']:.3f} |"
            for name, m in report["methods"].items()
            for source in ("model", "gold")
        ),
        "",
        "The chosen method in detail. "
        f"Reported brands ({', '.join(report['report_brands'])}), {report['trials']} bursts "
        f"per brand and size, bursts spread over {SPAN_S // 3600} h; recall counts an alert "
        f"opened by {DELAY_LIMIT_S // 60} min after the burst's last tweet:",
        "",
        "| labels | false alarms / brand / week (all; worst brand) | recall, 10 tweets "
        "(worst brand) | delay after last tweet, median; p90 | recall, 5 tweets (worst brand) "
        "| delay, 5 tweets, median |",
        "|---|---|---|---|---|---|",
    ]
    for source in ("model", "gold"):
        s = report[source]["summary"]
        b10, b5 = s["burst10"], s["burst5"]
        lines.append(
            f"| {source} | {s['fa_per_week_all']:.2f}; {s['fa_per_week_max']:.2f} | "
            f"{b10['recall']:.3f} ({b10['recall_min_brand']:.2f}) | "
            f"{b10['delay_median_min']} min; {b10['delay_p90_min']} min | "
            f"{b5['recall']:.3f} ({b5['recall_min_brand']:.2f}) | {b5['delay_median_min']} min |"
        )
    lines += [
        "",
        "Per reported brand (model labels; gold in brackets):",
        "",
        "| brand | related / day | weeks | gold negatives counted negative | chance that "
        "the minimum of a 10-tweet burst is counted | false alarms (gold) | recall 10 (gold) | "
        "recall 5 (gold) | bursts during an open alert |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for brand, row in report["model"]["per_brand"].items():
        g = report["gold"]["per_brand"][brand]
        lines.append(
            f"| {brand} | {row['related_per_day']} | {row['weeks']} | "
            f"{row['negatives_seen']:.0%} | "
            f"{at_least(rule['min_negative'], 10, row['negatives_seen']):.2f} | "
            f"{row['false_alarms']} "
            f"({g['false_alarms']}) | {row['burst10']['recall']:.2f} "
            f"({g['burst10']['recall']:.2f}) | {row['burst5']['recall']:.2f} "
            f"({g['burst5']['recall']:.2f}) | {row['burst10']['already_open']} |"
        )
    t = report["tuning_choice"]
    lines += [
        "",
        f"On the tuning brands the chosen rule had {t['burst10']['recall']:.3f} recall "
        f"(10 tweets, model labels) and {t['fa_per_week_max']:.2f} false alarms per week on "
        f"its worst brand; {report['grid_size']} rules were tried (docs/alerts.json has them all).",
        "",
        f"Machine: {report['machine']['processor']} ({report['machine']['cpu_count']} cores), "
        f"shared with other jobs; took {report['seconds']:.0f} s. Model: "
        f"{ident['name']} {ident['version']} ({ident['variant']}, sha256 {ident['sha256'][:12]}).",
    ]
    write_markdown_keeping_notes(path, "\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--data", type=Path, default=REPO.parent / "shared/data/replab2013/automotive_en.tsv"
    )
    ap.add_argument("--model", type=Path, default=REPO / "models" / "default")
    ap.add_argument("--trials", type=int, default=200, help="bursts per brand and size")
    ap.add_argument("--tune-trials", type=int, default=60)
    ap.add_argument(
        "--max-fa", type=float, default=1.0, help="false alarms / week, worst tuning brand"
    )
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--out", type=Path, default=REPO / "docs")
    args = ap.parse_args()
    started = time.perf_counter()
    predictions = predict_file(args.model, args.data, REPO / "runs" / "alert_eval")
    by_threshold = {t: load_brands(args.data, predictions, t) for t in THRESHOLDS}
    best, table = tune(by_threshold, args.tune_trials, args.max_fa, args.seed)
    # The method for the product: the better of the two on the tuning brands.
    method = max(best, key=lambda m: tuning_row(table, *best[m])["burst10"]["recall"] or 0)
    threshold, rule = best[method]
    print("chosen:", method, threshold, rule, flush=True)
    report: dict[str, Any] = {
        "method": method,
        "negative_threshold": threshold,
        "rule": asdict(rule),
        "tune_brands": TUNE_BRANDS,
        "report_brands": REPORT_BRANDS,
        "trials": args.trials,
        "tune_trials": args.tune_trials,
        "grid_size": len(table),
        "tuning_choice": tuning_row(table, threshold, rule),
        "tuning_table": table,
        "model_identity": json.loads(predictions.read_text())["model"],
        "methods": {},
    }
    for name, (method_threshold, method_rule) in best.items():
        brands = by_threshold[method_threshold]
        reported = [brands[b] for b in REPORT_BRANDS]
        bursts = {
            (b.name, size): make_bursts(b, size, args.trials, args.seed + 1000)
            for b in reported
            for size in (10, 5)
        }
        results = {}
        for source in ("model", "gold"):
            per_brand = evaluate(method_rule, reported, source, bursts)
            results[source] = {
                "summary": summary(per_brand, [10, 5]),
                "per_brand": strip_delays(per_brand),
            }
            print(name, source, json.dumps(results[source]["summary"]), flush=True)
        report["methods"][name] = {
            "negative_threshold": method_threshold,
            "rule": asdict(method_rule),
            "tuning": tuning_row(table, method_threshold, method_rule),
            **results,
        }
    report["model"] = report["methods"][method]["model"]
    report["gold"] = report["methods"][method]["gold"]
    brands = by_threshold[threshold]
    report["seconds"] = time.perf_counter() - started
    report["machine"] = machine_info()
    report["date"] = datetime.now(UTC).isoformat(timespec="seconds")
    example = example_timeline(rule, brands[REPORT_BRANDS[0]], args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "alerts.json").write_text(json.dumps(report, indent=1) + "\n")
    write_markdown(args.out / "alerts.md", report)
    plot(args.out / "alerts.png", report, example)
    print(f"wrote {args.out / 'alerts.md'}, alerts.json, alerts.png")


if __name__ == "__main__":
    main()
