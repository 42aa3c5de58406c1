"""Measure one package in this process: load time, first run, latency percentiles, throughput, memory."""

from __future__ import annotations

import os
import platform
import resource
import statistics
import time
from pathlib import Path

import numpy as np

from edgekit.package import read_package
from edgekit.spec import TensorSpec


def bench_feeds(manifest: dict, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs shaped like the compile's data (symbolic dims from its sample shapes, batch dim = `batch`)."""
    stats = (manifest.get("data") or {}).get("calibration") or (manifest.get("data") or {}).get("evaluation") or {}
    rng = np.random.default_rng(seed)
    feeds = {}
    for raw in manifest["inputs"]:
        spec = TensorSpec.from_dict(raw)
        known = stats.get(spec.name, {})
        sample_shape = known.get("sample_shape") or []
        shape = []
        for axis, dim in enumerate(spec.shape):
            if axis == 0 and isinstance(dim, str):
                shape.append(batch)
            elif isinstance(dim, str):
                shape.append(sample_shape[axis] if axis < len(sample_shape) else 1)
            else:
                shape.append(dim)
        dtype = np.dtype(spec.dtype)
        if dtype.kind == "f":
            values = rng.normal(known.get("mean", 0.0), known.get("std", 1.0) or 1.0, shape)
        else:
            low, high = int(known.get("min", 0)), int(known.get("max", 1))
            values = rng.integers(low, high + 1, shape)
        feeds[spec.name] = values.astype(dtype)
    return feeds


def _rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return _peak_rss_mb()


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if platform.system() == "Darwin" else peak / 1024


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def measure(path: str | Path, threads: int | None = None, batch: int = 1, runs: int = 100,
            warmup: int = 10) -> dict:
    """All figures for one package, with the conditions they were measured under."""
    from edgekit.runtime import load

    package = read_package(path)
    manifest = package.manifest
    feeds = bench_feeds(manifest, batch)
    rss_before = _rss_mb()
    started = time.perf_counter()
    session = load(path, threads=threads, verify=False)
    load_ms = (time.perf_counter() - started) * 1e3
    started = time.perf_counter()
    session.run(feeds)
    first_ms = (time.perf_counter() - started) * 1e3
    for _ in range(warmup):
        session.run(feeds)
    latencies = []
    for _ in range(runs):
        started = time.perf_counter()
        session.run(feeds)
        latencies.append((time.perf_counter() - started) * 1e3)
    ordered = sorted(latencies)
    mean = statistics.fmean(latencies)
    return {
        "package": str(path),
        "target": manifest["target"]["name"],
        "runtime": manifest["runtime"],
        "precision": manifest.get("precision", ""),
        "file_bytes": sum(entry["bytes"] for entry in manifest["files"]),
        "load_ms": load_ms,
        "first_run_ms": first_ms,
        "latency_ms": {
            "p50": _percentile(ordered, 50), "p90": _percentile(ordered, 90), "p99": _percentile(ordered, 99),
            "mean": mean, "min": ordered[0], "std": statistics.pstdev(latencies),
        },
        "throughput_per_s": batch * 1e3 / mean,
        "peak_rss_mb": _peak_rss_mb(),
        "rss_growth_mb": max(_peak_rss_mb() - rss_before, 0.0),
        "conditions": {
            "threads": threads if threads else f"runtime default ({os.cpu_count()} logical cores)",
            "batch": batch, "runs": runs, "warmup": warmup,
            "input_shapes": {name: list(value.shape) for name, value in feeds.items()},
            "cpu": cpu_name(), "machine": platform.machine(), "python": platform.python_version(),
            "runtime_version": _runtime_version(manifest["runtime"]),
        },
    }


def _percentile(ordered: list[float], pct: float) -> float:
    index = (len(ordered) - 1) * pct / 100
    low = int(index)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (index - low)


def _runtime_version(runtime: str) -> str:
    """The runtime package's version; by its module when another wheel provides it (onnxruntime-gpu)."""
    import importlib
    from importlib.metadata import PackageNotFoundError, version

    from edgekit.runtime import backend_module

    package = backend_module(runtime).PACKAGE
    try:
        return version(package)
    except PackageNotFoundError:
        try:
            return str(importlib.import_module(package.replace("-", "_")).__version__)
        except (ImportError, AttributeError):
            return "unknown"
