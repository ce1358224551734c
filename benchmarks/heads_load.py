"""What validating per-entity heads at the caps costs: file size, load time, peak memory.

Writes a heads file at MAX_ENTITY_HEADS entities, both heads (polarity and related), for
the embedding widths repedge's encoders have, in the current number format and in the
longer one save_entity_heads wrote before (float32 values printed as float64). Each file is
loaded REPEAT times by edgemodel.entity_heads.load_entity_heads, the one validation every
node, trainer and packager runs; the peak of Python allocations during a load comes from
tracemalloc (the process's RSS rises by about as much while the JSON is parsed).

    python benchmarks/heads_load.py [--repeat 5] [--out docs/heads_load.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from edgemodel.entity_heads import (  # noqa: E402
    ENTITY_HEADS_FORMAT,
    MAX_ENTITY_HEADS,
    MAX_HEADS_FILE_BYTES,
    Correction,
    EntityHead,
    entity_key,
    load_entity_heads,
    save_entity_heads,
)

WIDTHS = (128, 384, 512)  # MobileBERT's bottleneck, MiniLM (the shipped model), MobileBERT


def heads_at_cap(width: int) -> dict[str, EntityHead]:
    rng = np.random.default_rng(width)

    def correction(classes: int) -> Correction:
        weight = (rng.standard_normal((width, classes)) * 0.3).astype(np.float32)
        return Correction(weight, (rng.standard_normal(classes) * 0.1).astype(np.float32))

    return {
        f"brand {i}": EntityHead(f"brand {i}", correction(3), correction(2))
        for i in range(MAX_ENTITY_HEADS)
    }


def write_old_format(path: Path, heads: dict[str, EntityHead], width: int) -> None:
    """The number format of save_entity_heads before it rounded in float64."""

    def old(c: Correction) -> dict:
        return {"weight": np.round(c.weight, 7).tolist(), "bias": np.round(c.bias, 7).tolist()}

    data = {
        "format": ENTITY_HEADS_FORMAT,
        "embedding_dim": width,
        "heads": {
            entity_key(h.entity): {
                "entity": h.entity,
                "polarity": old(h.polarity),
                "related": old(h.related) if h.related else None,
                "info": {},
            }
            for h in heads.values()
        },
    }
    path.write_text(json.dumps(data, separators=(",", ":")) + "\n", encoding="utf-8")


def measure(path: Path, width: int, repeat: int) -> dict[str, float]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        load_entity_heads(path, 3, 2, embedding_dim=width)
        times.append(time.perf_counter() - started)
    tracemalloc.start()
    load_entity_heads(path, 3, 2, embedding_dim=width)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "bytes": path.stat().st_size,
        "load_s_median": statistics.median(times),
        "peak_mib": peak / 2**20,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "heads_load.md")
    parser.add_argument(
        "--machine",
        default=f"{os.cpu_count()}-core {platform.machine()} machine",
        help="What ran it, for the report (say if it was shared with other jobs).",
    )
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for width in WIDTHS:
            heads = heads_at_cap(width)
            for fmt in ("current", "before"):
                path = Path(tmp) / f"{width}-{fmt}.json"
                if fmt == "current":
                    save_entity_heads(path, heads, width)
                else:
                    write_old_format(path, heads, width)
                rows.append({"width": width, "format": fmt, **measure(path, width, args.repeat)})

    lines = [
        "# Per-entity heads at the caps: size, load time, memory",
        "",
        f"`python benchmarks/heads_load.py --repeat {args.repeat}` on {args.machine}, "
        f"Python {platform.python_version()}: {MAX_ENTITY_HEADS} entities (MAX_ENTITY_HEADS), "
        "polarity and related heads, loaded and validated by "
        "`edgemodel.entity_heads.load_entity_heads`. Median of the loads; peak of Python "
        f"allocations during one load (tracemalloc). Byte cap: {MAX_HEADS_FILE_BYTES} bytes "
        "(MAX_HEADS_FILE_BYTES). `before`: numbers as `save_entity_heads` wrote them before "
        "it rounded in float64.",
        "",
        "| width | format | bytes | of the cap | load (s) | peak (MiB) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['width']} | {r['format']} | {r['bytes']:,} | "
            f"{r['bytes'] / MAX_HEADS_FILE_BYTES:.0%} | {r['load_s_median']:.3f} | "
            f"{r['peak_mib']:.1f} |"
        )
    text = "\n".join(lines) + "\n"
    args.out.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
