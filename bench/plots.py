"""PNG plots for `node bench` (matplotlib, from the optional ``bench`` extra).

:func:`write_plots` returns the files it wrote, or a note saying why there are none: the
report is complete without them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# The paper's reference points: BERT-large in fp32, and the 160x smaller edge model.
BERT_LARGE_MB = 1340.0
PAPER_RATIO = 160


def write_plots(report: dict[str, Any], out_dir: Path) -> tuple[list[str], str | None]:
    """(file names written in ``out_dir``, note or None)."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, no display needed on a headless board
        import matplotlib.pyplot as plt
    except ImportError:
        return [], "plots skipped: matplotlib is not installed (pip install 'repedge[bench]')"
    rows = report["variants"]
    written = []
    for name, draw in (
        ("latency_cdf.png", _latency_cdf),
        ("size_accuracy.png", _size_accuracy),
        ("throughput_threads.png", _throughput_threads),
    ):
        fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
        if draw(ax, rows, report):
            fig.tight_layout()
            fig.savefig(out_dir / name)
            written.append(name)
        plt.close(fig)
    return written, None


def _latency_cdf(ax, rows: dict[str, Any], report: dict[str, Any]) -> bool:
    drawn = False
    for name, r in rows.items():
        samples = sorted(r.get("latency", {}).get("samples_ms", []))
        if not samples:
            continue
        fraction = [(i + 1) / len(samples) for i in range(len(samples))]
        ax.step(
            samples, fraction, where="post", label=f"{name} (p50 {r['latency']['p50_ms']:.2f} ms)"
        )
        drawn = True
    if drawn:
        threads = next(iter(rows.values()))["latency"]["threads"]
        ax.set_xscale("log")
        ax.set_xlabel("model call, batch 1 (ms, log scale)")
        ax.set_ylabel("fraction of tweets")
        ax.set_title(f"Latency CDF ({threads} thread{'s' if threads != 1 else ''})")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    return drawn


def _size_accuracy(ax, rows: dict[str, Any], report: dict[str, Any]) -> bool:
    points = [
        (r["size_bytes"] / 1e6, r["accuracy"]["accuracy"], name)
        for name, r in rows.items()
        if r.get("accuracy")
    ]
    if not points:
        return False
    for size, acc, name in points:
        ax.scatter([size], [acc], zorder=3)
        ax.annotate(name, (size, acc), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.axvline(BERT_LARGE_MB, color="grey", linestyle="-", linewidth=1)
    ax.text(BERT_LARGE_MB, 0.02, " BERT-large\n 1.34 GB", transform=ax.get_xaxis_transform(),
            fontsize=8, ha="right")  # fmt: skip
    ax.axvline(BERT_LARGE_MB / PAPER_RATIO, color="tab:red", linestyle="--", linewidth=1)
    ax.text(BERT_LARGE_MB / PAPER_RATIO, 0.02, f" {PAPER_RATIO}x smaller\n 8.4 MB",
            transform=ax.get_xaxis_transform(), fontsize=8, color="tab:red")  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("model file (MB, log scale)")
    ax.set_ylabel(f"accuracy on {report['tweets']['source']}")
    ax.set_title("Size vs accuracy")
    ax.grid(True, which="both", alpha=0.3)
    return True


def _throughput_threads(ax, rows: dict[str, Any], report: dict[str, Any]) -> bool:
    drawn = False
    for name, r in rows.items():
        per = r.get("throughput_tweets_per_s") or {}
        if not per:
            continue
        threads = sorted(per, key=int)
        ax.plot([int(t) for t in threads], [per[t]["median"] for t in threads], marker="o",
                label=name)  # fmt: skip
        drawn = True
    if drawn:
        ax.set_xlabel("interpreter threads")
        ax.set_ylabel("tweets/s at saturation (node batching)")
        ax.set_title("Throughput vs threads")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        ax.xaxis.get_major_locator().set_params(integer=True)
    return drawn
