"""Measure one package in this process: load time, first run, latency percentiles, throughput, memory."""

from __future__ import annotations

import logging
import math
import os
import platform
import resource
import time
from pathlib import Path

import numpy as np

from edgekit.isa import host_cpu
from edgekit.manifest import BenchRecord, Latency, Manifest
from edgekit.package import read_package

log = logging.getLogger("edgekit")


def bench_feeds(manifest: Manifest, batch: int, seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Inputs shaped like the compile's data, and the symbolic dims no data gave a size (set to 1).

    A dim named like some input's leading dim is the batch (`batch`); other symbolic dims take
    the data's sample shape. Ints stay within the data's range, so a constant int input (a
    sample rate) stays that constant; 0-d inputs are 0-d arrays.
    """
    stats = manifest.data.get("calibration") or manifest.data.get("evaluation") or {}
    specs = manifest.inputs
    batch_dims = {spec.shape[0] for spec in specs if spec.shape and isinstance(spec.shape[0], str)}
    rng = np.random.default_rng(seed)
    feeds, unbound = {}, {}
    for spec in specs:
        known = stats.get(spec.name, {})
        sample_shape = known.get("sample_shape") or []
        shape = []
        for axis, dim in enumerate(spec.shape):
            if isinstance(dim, int):
                shape.append(dim)
            elif dim in batch_dims:
                shape.append(batch)
            elif axis < len(sample_shape) and len(sample_shape) == len(spec.shape):
                shape.append(sample_shape[axis])
            else:
                shape.append(1)
                unbound[f"{spec.name}:{dim}"] = 1
        dtype = np.dtype(spec.dtype)
        if dtype.kind == "f":
            values = rng.normal(known.get("mean", 0.0), known.get("std", 1.0) or 1.0, shape)
        else:
            low, high = int(known.get("min", 0)), int(known.get("max", 1))
            values = rng.integers(low, high + 1, shape)
        feeds[spec.name] = np.asarray(values).astype(dtype)
    return feeds, unbound


def median_interval(samples: list[float], confidence: float = 0.95) -> tuple[float, float]:
    """A distribution-free confidence interval of the median: the order statistics x(l), x(n-1-l) whose ranks a
    Binomial(n, 1/2) count of samples below the median leaves within `confidence` (wider when n is small)."""
    ordered = np.sort(np.asarray(samples, dtype=np.float64))
    count = len(ordered)
    below = np.cumsum([math.comb(count, i) for i in range(count + 1)]) / 2.0**count  # P(B <= i)
    low = max(int(np.searchsorted(below, (1 - confidence) / 2, side="right")) - 1, 0)
    return float(ordered[low]), float(ordered[count - 1 - low])


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if platform.system() == "Darwin" else peak / 1024


def measure(path: str | Path, threads: int | None = None, batch: int = 1, runs: int = 100,
            warmup: int = 10) -> BenchRecord:
    """All figures for one package, with the conditions they were measured under. The package is read, verified and
    (a .zip) unpacked once; `load_ms` is the runtime opening it."""
    from edgekit.runtime import open_package

    package = read_package(path)
    manifest = package.manifest
    feeds, unbound = bench_feeds(manifest, batch)
    for name, size in unbound.items():
        input_name, _, dim = name.partition(":")
        log.warning("input '%s': symbolic dim '%s' has no size from data or --input; benchmarked at %d "
                    "(fix it with --input %s:...)", input_name, dim, size, input_name)
    rss_before = _rss_mb()
    started = time.perf_counter()
    session = open_package(package, threads=threads)
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
    p50, p90, p99 = np.percentile(latencies, [50, 90, 99])  # linear interpolation between closest ranks
    mean = float(np.mean(latencies))
    p50_low, p50_high = median_interval(latencies)
    return BenchRecord(
        package=str(path), target=manifest.target.name, runtime=manifest.runtime, precision=manifest.precision,
        file_bytes=manifest.file_bytes, load_ms=load_ms, first_run_ms=first_ms,
        latency_ms=Latency(p50=float(p50), p90=float(p90), p99=float(p99), mean=mean, min=float(np.min(latencies)),
                           std=float(np.std(latencies)), p50_low=p50_low, p50_high=p50_high),
        throughput_per_s=batch * 1e3 / mean,
        peak_rss_mb=_peak_rss_mb(),
        rss_growth_mb=max(_peak_rss_mb() - rss_before, 0.0),
        conditions={
            "threads": threads if threads else f"runtime default ({os.cpu_count()} logical cores)",
            "batch": batch, "runs": runs, "warmup": warmup,
            "input_shapes": {name: list(value.shape) for name, value in feeds.items()},
            "unbound_dims": unbound,
            "cpu": host_cpu().model, "machine": platform.machine(), "isa": host_cpu().isa.name,
            "cpu_flags": list(host_cpu().flags), "python": platform.python_version(),
            "runtime_version": _runtime_version(manifest.runtime),
        },
    )


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
