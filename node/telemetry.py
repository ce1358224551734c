"""What the node reports about itself every few seconds."""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import psutil

from common.stats import percentile

LATENCY_WINDOW = 2048
_THERMAL_ROOT = Path("/sys/class/thermal")


def cpu_temperature() -> float | None:
    """Hottest CPU sensor in °C where the OS exposes one (Raspberry Pi: thermal_zone0)."""
    try:
        sensors = psutil.sensors_temperatures()  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        sensors = {}
    readings = [t.current for entries in sensors.values() for t in entries if t.current]
    if readings:
        return round(max(readings), 1)
    for zone in sorted(_THERMAL_ROOT.glob("thermal_zone*/temp")):
        try:
            return round(int(zone.read_text().strip()) / 1000, 1)
        except (OSError, ValueError):
            continue
    return None


class Stats:
    """Counters shared by the inference thread (writes) and the telemetry thread (reads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.started = time.monotonic()
        self.processed = 0
        self.errors = 0
        self.duplicates = 0
        self.id_reused = 0  # ids seen again with other content, labelled afresh
        self.retried_batches = 0  # batches that raised and were redone tweet by tweet
        self.batches = 0
        self._latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self._last_processed = 0
        self._last_time = self.started
        self._process = psutil.Process(os.getpid())
        self._process.cpu_percent()  # first call primes the measurement

    def add_batch(
        self,
        labelled: int,
        errors: int,
        duplicates: int,
        latencies: list[float],
        id_reused: int = 0,
        retried: bool = False,
    ) -> None:
        with self._lock:
            self.processed += labelled
            self.errors += errors
            self.duplicates += duplicates
            self.id_reused += id_reused
            self.retried_batches += int(retried)
            self.batches += 1
            self._latencies.extend(latencies)

    def snapshot(self) -> dict[str, Any]:
        """Counters, throughput since the previous snapshot and the latency window."""
        now = time.monotonic()
        with self._lock:
            latencies = list(self._latencies)
            processed, errors, duplicates = self.processed, self.errors, self.duplicates
            id_reused, retried = self.id_reused, self.retried_batches
            batches = self.batches
            elapsed = now - self._last_time
            throughput = (processed - self._last_processed) / elapsed if elapsed > 0 else 0.0
            self._last_processed, self._last_time = processed, now

        def ms(q: float) -> float | None:
            value = percentile(latencies, q)
            return None if value is None else round(value, 3)

        p50, p95, p99 = ms(50), ms(95), ms(99)
        rss = self._process.memory_info().rss
        return {
            "uptime_s": round(now - self.started, 1),
            "processed": processed,
            "errors": errors,
            "duplicates": duplicates,
            "id_reused": id_reused,
            "batches": batches,
            "retried_batches": retried,
            "throughput_per_s": round(throughput, 2),
            "latency_ms": {"p50": p50, "p95": p95, "p99": p99, "window": len(latencies)},
            # Flat copies: Grafana's MQTT data source and Home Assistant's value_template
            # read top-level numbers most easily (null while the window is empty).
            "latency_p50_ms": p50,
            "latency_p95_ms": p95,
            "latency_p99_ms": p99,
            "cpu_percent": self._process.cpu_percent(),
            "rss_bytes": rss,
            "rss_mib": round(rss / 2**20, 1),
            "cpu_temperature_c": cpu_temperature(),
        }
