"""What the machine was doing while it was measured: CPU frequency policy, cores, memory (stdlib only: this runs on
devices that have numpy and one runtime, no psutil)."""

from __future__ import annotations

import os
import platform
import resource
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.isa import host_cpu

CPUFREQ = Path("/sys/devices/system/cpu/cpu0/cpufreq")
UNAVAILABLE = "unavailable"


def cpu_frequency(folder: Path = CPUFREQ) -> dict[str, str | float]:
    """cpu0's frequency governor and its current and maximum MHz, as the kernel's cpufreq reports them; each one the
    kernel does not expose (no cpufreq folder: most VMs and containers) is 'unavailable'."""
    governor = _read(folder / "scaling_governor")
    return {"governor": governor or UNAVAILABLE, "cur_mhz": _mhz(folder / "scaling_cur_freq"),
            "max_mhz": _mhz(folder / "cpuinfo_max_freq")}


def _mhz(path: Path) -> float | str:
    khz = _read(path)
    return int(khz) / 1000 if khz.isdigit() else UNAVAILABLE


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def usable_cores() -> int:
    """The logical cores this process may run on (its affinity where the OS has one)."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity else os.cpu_count() or 1


def rss_mb() -> float:
    """This process's resident memory now (Linux, Android: /proc); elsewhere its peak so far."""
    try:
        resident_pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return peak_rss_mb()
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    """This process's peak resident memory (getrusage: kB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if platform.system() == "Darwin" else peak / 1024


def run_conditions(threads: int | None, batch: int, runs: int, warmup: int,
                   feeds: dict[str, np.ndarray]) -> dict[str, Any]:
    """What every measurement here names beside its figures: threads, batch, runs, input shapes and the CPU."""
    cpu = host_cpu()
    return {"threads": threads if threads else f"runtime default ({os.cpu_count()} logical cores)",
            "usable_cores": usable_cores(), "batch": batch, "runs": runs, "warmup": warmup,
            "input_shapes": {name: list(value.shape) for name, value in feeds.items()},
            "cpu": cpu.model, "machine": platform.machine(), "isa": cpu.isa.name, "cpu_flags": list(cpu.flags),
            "cpu_frequency": cpu_frequency(), "python": platform.python_version()}
