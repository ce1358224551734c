"""report.md for `node bench`: the paper's table, the peer ratios, the end-to-end row."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bench.plots import BERT_LARGE_MB

PLOT_TITLES = {
    "latency_cdf.png": "Batch-1 latency CDF per model file",
    "size_accuracy.png": "Size vs accuracy (BERT-large 1.34 GB and the 160x line marked)",
    "throughput_threads.png": "Saturation throughput vs interpreter threads",
}


def _num(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _device_lines(d: dict[str, Any]) -> list[str]:
    temps = ", ".join(f"{k} {v:.0f} °C" for k, v in d["temperatures_c"].items()) or "not readable"
    runtimes = ", ".join(f"{k} {v}" for k, v in d["runtimes"].items())
    return [
        f"- CPU: {d['cpu_model']} ({d['machine']}), {d['cores']} cores "
        f"({d['cores_available']} available to this process), "
        f"{d['memory_total_mib']} MiB memory",
        f"- governor: {', '.join(d['governors']) or 'not readable'}; temperature: {temps}",
        f"- OS: {d['os']}, {d['kernel']}; Python {d['python']}",
        f"- runtimes: {runtimes}",
        f"- load average (1/5/15 min) at the end: "
        f"{' / '.join(str(x) for x in d['load_average_1_5_15'])}",
    ]


def _variant_rows(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    threads = [str(t) for t in report["settings"]["threads"]]
    timed = not report["settings"]["accuracy_only"]
    header = ["model file", "runtime", "size MB", "BERT-large / size"]
    if timed:
        header += ["load s", "RSS idle / peak MiB", "p50 / p95 / p99 ms"]
        header += [f"tweets/s, {t} thr" for t in threads]
    labelled = report["tweets"]["labelled"]
    if labelled:
        header += ["accuracy", "macro-F1", "AvgRec"]
    rows = []
    for name, r in report["variants"].items():
        size_mb = r["size_bytes"] / 1e6
        row = [
            name,
            r["runtime_version"] or r["runtime"],
            _num(size_mb),
            f"{BERT_LARGE_MB / size_mb:.0f}x",
        ]
        if timed:
            lat = r["latency"]
            row += [
                _num(r["load_s"], 3),
                f"{_num(r['rss_idle_mib'], 1)} / {_num(r.get('rss_peak_mib'), 1)}",
                f"{_num(lat['p50_ms'])} / {_num(lat['p95_ms'])} / {_num(lat['p99_ms'])}",
            ]
            per = r["throughput_tweets_per_s"]
            row += [_num(per[t]["median"], 1) if t in per else "n/a" for t in threads]
        if labelled:
            acc = r.get("accuracy") or {}
            row += [_num(acc.get(k), 4) for k in ("accuracy", "macro_f1", "macro_recall")]
        rows.append(row)
    return header, rows


def _peer_lines(report: dict[str, Any]) -> list[str]:
    peers = report["peers"]
    if not peers:
        return []
    threads = [str(t) for t in report["settings"]["threads"]]
    header = ["LiteRT", "ONNX Runtime", "p50 speed-up", "p99 speed-up"]
    header += [f"throughput speed-up, {t} thr" for t in threads]
    header += ["same label"]
    rows = []
    for p in peers:
        agree = p.get("label_agreement")
        rows.append(
            [p["litert"], p["onnxruntime"], f"{p['latency_p50_speedup']:.2f}x",
             f"{p['latency_p99_speedup']:.2f}x"]
            + [f"{p['throughput_speedup'][t]:.2f}x" if t in p["throughput_speedup"] else "n/a"
               for t in threads]
            + ["n/a" if agree is None else f"{agree:.4f}"]
        )  # fmt: skip
    return [
        "",
        "## LiteRT vs ONNX Runtime (same weights, same tweets, same threads)",
        "",
        "Speed-up = ONNX Runtime time / LiteRT time (above 1: LiteRT is faster). "
        '"same label": fraction of the labelled tweets where both give the same class.',
        "",
        *_table(header, rows),
    ]


def _broker_lines(b: dict[str, Any], label: str = "") -> list[str]:
    s, ok = b["settings"], b["meets_targets"]

    def mark(key: str, target: str) -> str:
        return f"{'met' if ok[key] else 'MISSED'} ({target})"

    bare, e2e = b["bare_tweets_per_s"]["median"], b["e2e_saturation_tweets_per_s"]["median"]
    rows = [
        ["model call alone, node batching (tweets/s)", _num(bare, 1), ""],
        ["end-to-end at saturation (tweets/s)", _num(e2e, 1), ""],
        ["end-to-end / model call", _num(b["saturation_ratio"]),
         mark("saturation_ratio", ">= 0.8")],
        [f"p50 / p95 publish-to-label at {s['rate_per_s']:g}/s (ms)",
         f"{_num(b['fixed_rate']['p50_ms'])} / {_num(b['fixed_rate']['p95_ms'])}", ""],
        [f"p99 publish-to-label at {s['rate_per_s']:g}/s (ms)", _num(b["fixed_rate"]["p99_ms"]),
         mark("p99_ms", "<= 30")],
        ["node RSS idle (MiB)", _num(b["node_idle_rss_mib"], 1), ""],
        ["node RSS peak (MiB)", _num(b["node_peak_rss_mib"], 1), mark("rss_mib", "<= 100")],
    ]  # fmt: skip
    m = b["model"]
    return [
        "",
        f"## End to end through the broker{label}",
        "",
        f"`node start` serving {m['name']} {m['version']} {m['variant']} through "
        f"{b['broker']}; {s['threads']} interpreter thread(s), max batch {s['max_batch']}, "
        f"{s['max_batch_tokens']} tokens per call; {s['tweets_per_saturation_run']} tweets per "
        f"saturation run, {s['seconds']:g} s at {s['rate_per_s']:g}/s; medians of "
        f"{s['repeats']} repeats.",
        "",
        *_table(["metric", "value", "target (2-core x86)"], rows),
    ]


def _value(x: float | None) -> str:
    if x is None:
        return "n/a"
    return f"{x:.4f}" if abs(x) < 1 else f"{x:.3g}" if abs(x) < 100 else f"{x:.0f}"


def _pairs_table(pairs: list[dict[str, Any]]) -> list[str]:
    """Rows: metrics; columns: each pair's "new / old = ratio"."""
    header = ["metric", "better", *[f"{p['target']} vs {p['baseline']}" for p in pairs]]
    keys: dict[str, tuple[str, str]] = {}
    for p in pairs:
        for m in p["metrics"]:
            keys.setdefault(m["metric"], (m["label"], m["better"]))
    rows = []
    for key, (label, better) in keys.items():
        cells = []
        for p in pairs:
            m = next((m for m in p["metrics"] if m["metric"] == key), None)
            cells.append(
                "n/a" if m is None else f"{_value(m['value'])} vs {_value(m['baseline'])}: "
                + ("n/a" if m["ratio"] is None else f"**{m['ratio']:.3f}x**")
                + (f" ({m['difference_points']:+.2f} pt)" if "difference_points" in m else "")
            )  # fmt: skip
        rows.append([label, f"ratio {'< 1' if better == 'lower' else '> 1'}", *cells])
    return _table(header, rows)


def _comparison_lines(report: dict[str, Any]) -> list[str]:
    c, s = report["comparison"], report["settings"]
    rounds = s["rounds"]
    lines = [
        "",
        f"## Side by side: against the baseline {c['baseline']}",
        "",
        "Each cell: this file's figure vs the baseline's matching file's (the same variant, "
        "else the file the baseline's node serves): **ratio new / old**; \"better\" says which "
        "side of 1 is the improvement. "
        + (f"Timed figures: medians over {rounds} alternating rounds; ratio: the median of the "
           "rounds' own ratios (a round measures every file close together in time, so load "
           "that drifts over the run cancels out). "
           if rounds > 1 else "One round (--rounds N alternates N passes over all files). ")
        + "Size and accuracy do not vary between rounds.",
        "",
    ]  # fmt: skip
    if not c["pairs"]:
        return [*lines, "No file of the --model bundles has a match in the baseline."]
    lines += _pairs_table(c["pairs"])
    if report.get("broker_comparison"):
        lines += [
            "",
            "End to end through the broker (each bundle's served file; one bundle after the "
            "other, not alternating: ratios of medians):",
            "",
            *_pairs_table(report["broker_comparison"]),
        ]
    return lines


def render_markdown(report: dict[str, Any]) -> str:
    m, s, t = report["model"], report["settings"], report["tweets"]
    if "models" in report:  # side by side: every bundle, its role and label
        lines = [
            f"# node bench: {m['name']} {m['version']} against {report['models'][0]['label']}",
            "",
            f"- date: {report['date']}",
            *[
                f"- {x['role']} {x['label']}: {x['name']} {x['version']}, `{x['path']}` "
                f"(base {x['base_model']}, built {x['created']})"
                for x in report["models"]
            ],
        ]
    else:
        lines = [
            f"# node bench: {m['name']} {m['version']}",
            "",
            f"- date: {report['date']}; model: `{m['path']}` (base {m['base_model']}, "
            f"built {m['created']})",
        ]
    lines += [
        f"- tweets: {t['count']} from {t['source']}"
        + ("; accuracy on all of them" if t["labelled"] else "; no labels: no accuracy"),
        *_device_lines(report["device"]),
    ]
    if not s["accuracy_only"]:
        lines += [
            f"- latency: model call at batch 1 with {s['latency_threads']} thread(s), "
            f"{s['latency_samples']} seeded tweets after 10 warm-up calls"
            + (f", {s['rounds']} rounds pooled" if s["rounds"] > 1 else ""),
            f"- throughput: the model call on a backlog of {s['saturation_tweets']} tweets with "
            f"the node's batching (chunks of {s['max_batch']}, split by length within "
            f"{s['max_batch_tokens']} tokens); median of {s['saturation_repeats']} runs"
            + (f" x {s['rounds']} rounds" if s["rounds"] > 1 else ""),
            "- RSS: each model file in a fresh process; idle after loading, peak after the "
            "latency and throughput runs at the latency's thread count",
        ]
    if t["labelled"]:
        lines.append(
            f"- accuracy: as `trainer evaluate` computes it (length-sorted batches of 32, "
            f"{s['eval_threads']} thread(s)); unreadable tweets count as wrong"
        )
    header, rows = _variant_rows(report)
    lines += ["", "## Model files", "", *_table(header, rows)]
    if "comparison" in report:
        lines += _comparison_lines(report)
    lines += _peer_lines(report)
    if "brokers" in report:
        for label, row in report["brokers"].items():
            lines += _broker_lines(row, f" ({label})")
    elif "broker" in report:
        lines += _broker_lines(report["broker"])
    if report["plots"]:
        lines += ["", "## Plots", ""]
        for name in report["plots"]:
            lines += [f"![{PLOT_TITLES.get(name, name)}]({name})", ""]
    if report["notes"]:
        lines += ["", "## Notes", "", *[f"- {n}" for n in report["notes"]]]
    return "\n".join(lines).rstrip() + "\n"
