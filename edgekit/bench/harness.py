"""Measure one package in this process: cold and warm load, first run, latency (raw samples, percentiles, the p50's
confidence interval), throughput, memory, and the machine's state. Imports nothing compile-side: devices run it."""

from __future__ import annotations

import logging
import math
import sys
import time
from pathlib import Path

import numpy as np

from edgekit.bench.machine import peak_rss_mb, rss_mb, run_conditions
from edgekit.digest import data_sha256
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


def measure(path: str | Path, threads: int | None = None, batch: int = 1, runs: int = 100,
            warmup: int = 10) -> BenchRecord:
    """All figures for one package, with the conditions they were measured under. The package is read, verified and
    (a .zip) unpacked once; `load_ms` is the runtime opening it the first time in this process (cold when the runtime
    was not imported yet), `warm_load_ms` opening it again once the first session is gone; the first run, warm-up and
    timed runs use the first session, and the peak memory is taken before the second load."""
    from edgekit.runtime import backend_module, open_package

    package = read_package(path)
    manifest = package.manifest
    feeds, unbound = bench_feeds(manifest, batch)
    for name, size in unbound.items():
        input_name, _, dim = name.partition(":")
        log.warning("input '%s': symbolic dim '%s' has no size from data or --input; benchmarked at %d "
                    "(fix it with --input %s:...)", input_name, dim, size, input_name)
    cold = _import_name(backend_module(manifest.runtime).PACKAGE) not in sys.modules
    rss_before = rss_mb()
    started = time.perf_counter()
    session = open_package(package, threads=threads)
    load_ms = (time.perf_counter() - started) * 1e3
    started = time.perf_counter()
    session.run(feeds)
    first_ms = (time.perf_counter() - started) * 1e3
    for _ in range(warmup):
        session.run(feeds)
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        session.run(feeds)
        samples.append((time.perf_counter() - started) * 1e3)
    peak_mb = peak_rss_mb()
    del session
    started = time.perf_counter()
    open_package(package, threads=threads)
    warm_load_ms = (time.perf_counter() - started) * 1e3
    return BenchRecord(
        package=str(path), target=manifest.target.name, runtime=manifest.runtime, precision=manifest.precision,
        file_bytes=manifest.file_bytes, load_ms=load_ms, first_run_ms=first_ms, latency_ms=latency(samples),
        throughput_per_s=batch * 1e3 / float(np.mean(samples)), peak_rss_mb=peak_mb,
        rss_growth_mb=max(peak_mb - rss_before, 0.0), warm_load_ms=warm_load_ms, cold_load=cold,
        model_sha256=data_sha256([[entry.path, entry.sha256] for entry in manifest.files]),
        conditions={**run_conditions(threads, batch, runs, warmup, feeds), "unbound_dims": unbound,
                    "runtime_version": _runtime_version(manifest.runtime)},
    )


def latency(samples: list[float]) -> Latency:
    """The summary of timed runs (ms) that keeps them: p50 is their median, p90/p99 by linear interpolation."""
    p90, p99 = np.percentile(samples, [90, 99])
    p50_low, p50_high = median_interval(samples)
    return Latency(p50=float(np.median(samples)), p90=float(p90), p99=float(p99), mean=float(np.mean(samples)),
                   min=float(np.min(samples)), std=float(np.std(samples)), p50_low=p50_low, p50_high=p50_high,
                   samples=tuple(samples))


def _import_name(package: str) -> str:
    """The top-level module a runtime's pip package installs (ai-edge-litert → ai_edge_litert)."""
    return package.replace("-", "_")


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
            return str(importlib.import_module(_import_name(package)).__version__)
        except (ImportError, AttributeError):
            return "unknown"
