"""One percentile for every latency figure: the node's telemetry, node bench and the
end-to-end runs report p50/p95/p99 the same way, so their numbers compare."""

from __future__ import annotations

import math
from collections.abc import Iterable


def percentile(values: Iterable[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100) of unsorted values; None when empty.

    Nearest rank: the smallest value with at least q % of the values at or below it. It
    is always one of the measured values (no interpolation between two latencies).
    """
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is outside 0..100")
    ordered = sorted(values)
    if not ordered:
        return None
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]
