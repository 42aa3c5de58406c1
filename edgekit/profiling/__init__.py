"""Per-op profiles of a package from its runtime's own profiler, in one schema across runtimes, and their diff.

Runs where the package runs: numpy and the package's runtime only (no torch, onnx, click, rich or PyYAML here;
ExecuTorch's own bindings bring torch).
"""

from __future__ import annotations

import dataclasses
import importlib
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.bench.harness import bench_feeds
from edgekit.bench.machine import run_conditions
from edgekit.errors import UserError
from edgekit.package import read_package
from edgekit.profiling.diff import diff_profiles
from edgekit.profiling.record import NotProfiled, OpTime, Profile, op_table
from edgekit.schema import build

__all__ = ["OpTime", "Profile", "diff_profiles", "profile_package", "profile_packages"]

PROFILED = frozenset({"onnxruntime", "openvino", "executorch"})  # a module of this package reads each one's profiler
NOT_AVAILABLE = {
    "tflite": "not available for this runtime: LiteRT's Python Interpreter (ai-edge-litert) has no per-op profiler "
              "API; run LiteRT's benchmark_model with --enable_op_profiling=true on the device instead",
    "tensorrt": "not available for this runtime in edgekit yet: TensorRT's IProfiler is not wired here; "
                "trtexec --dumpProfile gives per-layer times",
}


def profile_package(path: str | Path, runs: int = 50, threads: int | None = None, warmup: int = 5) -> dict[str, Any]:
    """The per-op profile of the package at `path` over `runs` runs after `warmup` (inputs as `edgekit bench` makes
    them), as a JSON-able Profile; a runtime that cannot profile here gives `available: false` and the reason."""
    if runs < 1 or warmup < 0:
        raise UserError("profile: runs must be at least 1, warmup at least 0")
    package = read_package(path)
    manifest = package.manifest
    feeds, _ = bench_feeds(manifest, batch=1)
    conditions = {**run_conditions(threads, 1, runs, warmup, feeds), "timing": "with the runtime's profiler on"}
    head = {"package": str(path), "target": manifest.target.name, "runtime": manifest.runtime,
            "precision": manifest.precision, "conditions": conditions}
    if manifest.runtime not in PROFILED:
        return _unavailable(head, NOT_AVAILABLE.get(manifest.runtime, f"not available for runtime {manifest.runtime}"))
    reader = importlib.import_module(f"edgekit.profiling.{manifest.runtime}")
    with tempfile.TemporaryDirectory(prefix="edgekit-profile-") as folder:
        try:
            profiler = reader.Profiler(package, threads, Path(folder))
            walls = []
            for index in range(warmup + runs):
                started = time.perf_counter()
                profiler.session.run(feeds)
                walls.append((time.perf_counter() - started) * 1e3)
                profiler.after_run(measured=index >= warmup)
            samples = profiler.ops(runs)
        except NotProfiled as why:
            return _unavailable(head, str(why))
    rows, ops_ms = op_table(samples)
    measured = walls[warmup:]
    return dataclasses.asdict(Profile(**head, available=True, reason=None, profiler=profiler.profiler,
                                      runtime_version=profiler.version, ops_ms=ops_ms,
                                      wall_ms=float(np.mean(measured)), wall_p50_ms=float(np.median(measured)),
                                      ops=rows))


def profile_packages(packages: Sequence[str | Path], runs: int = 50, threads: int | None = None,
                     device: str | None = None, devices_file: str | Path | None = None
                     ) -> tuple[list[Profile], dict[str, Any] | None]:
    """Profiles of `packages` here, or on the device named in the devices file with the device's identity (each
    profile checked against the schema: a device's answer is not trusted blindly)."""
    if device is None:
        return [build(Profile, profile_package(package, runs, threads), f"profile of {package}")
                for package in packages], None
    from edgekit.devices import DeviceLink, find_device

    with DeviceLink(find_device(device, devices_file)) as link:
        identity = link.identity()
        profiles = [build(Profile, link.call("profile", package, {"runs": runs, "threads": threads}) | {"package": str(package)},
                          f"profile of {package} on device {link.device.label}") for package in packages]
    return profiles, identity


def _unavailable(head: dict[str, Any], reason: str) -> dict[str, Any]:
    return dataclasses.asdict(Profile(**head, available=False, reason=reason, profiler=None, runtime_version=None,
                                      ops_ms=None, wall_ms=None, wall_p50_ms=None, ops=[]))
