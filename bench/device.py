"""What `node bench` says about the device: CPU, cores, governor, temperature, OS, runtimes.

Everything is read from /proc and /sys where the kernel offers it; a field the device
does not expose is ``None`` rather than a guess.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
from pathlib import Path
from typing import Any

import psutil

RUNTIME_PACKAGES = ("ai-edge-litert", "tflite-runtime", "onnxruntime", "tokenizers", "numpy")


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None


def cpu_model() -> str | None:
    """The chip's name: x86 says "model name", ARM boards "Hardware" or "Model"."""
    text = _read(Path("/proc/cpuinfo")) or ""
    found: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        found.setdefault(key.strip().lower(), value.strip())
    for key in ("model name", "model", "hardware", "cpu model"):
        if found.get(key):
            return found[key]
    return None


def governors() -> list[str]:
    """The cpufreq governors in use (one per policy; usually all the same)."""
    root = Path("/sys/devices/system/cpu/cpufreq")
    values = {_read(p / "scaling_governor") for p in sorted(root.glob("policy*"))}
    return sorted(v for v in values if v)


def temperatures_c() -> dict[str, float]:
    """Thermal zones (on a Pi: the SoC) in degrees Celsius."""
    out: dict[str, float] = {}
    for zone in sorted(Path("/sys/class/thermal").glob("thermal_zone*")):
        raw, kind = _read(zone / "temp"), _read(zone / "type") or zone.name
        try:
            out[kind] = int(raw or "") / 1000
        except ValueError:
            continue
    return out


def os_name() -> str:
    for line in (_read(Path("/etc/os-release")) or "").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip('"')
    return platform.system()


def runtime_versions() -> dict[str, str]:
    out = {}
    for name in RUNTIME_PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def device_info() -> dict[str, Any]:
    uname = platform.uname()
    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    return {
        "cpu_model": cpu_model() or platform.processor() or uname.machine,
        "machine": uname.machine,
        "cores": os.cpu_count(),
        # What this process may use: containers and taskset can allow fewer than the board has.
        "cores_available": len(affinity) if affinity is not None else None,
        "governors": governors(),
        "temperatures_c": temperatures_c(),
        "memory_total_mib": round(psutil.virtual_memory().total / 2**20),
        "os": os_name(),
        "kernel": f"{uname.system} {uname.release}",
        "hostname": uname.node,
        "python": platform.python_version(),
        "runtimes": runtime_versions(),
        # Other work on the device shows up in the latency tail: keep it on record.
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
    }
