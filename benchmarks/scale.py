"""Scale figures for `edgekit sweep`: a 24-cell grid (the digits CNN from PyTorch and from ONNX × the four CPU
targets × fp32, int8, auto) on a local Ray cluster with 1 and with 2 workers, each from an empty step cache; then the
same grid again into a new folder (every cell runs, its steps from the cache: the step cache's hit rate) and into the
same folder (every cell reused); and Ray's own cost per cell (a task that does nothing but import the cell module, in
a worker process of its own, as a cell's task does). Writes OUT/scale.json and prints the figures as Markdown.

    python benchmarks/scale.py --out out/scale        # about 15 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DIGITS = HERE / "digits_cnn.py"
TARGETS = ("cpu-ort", "cpu-openvino", "mobile-tflite", "mobile-executorch")
RECIPES = ("fp32", "int8", "auto")
NOOP_TASKS = 12


def _models(out: Path) -> list:
    import torch

    sys.path.insert(0, str(HERE))
    import digits_cnn

    from edgekit.sweep import ModelEntry

    calib, evaluation = digits_cnn.write_data(out / "data")
    onnx_path = out / "digits.onnx"
    if not onnx_path.is_file():
        module, example = digits_cnn.build()
        torch.onnx.export(module, example, str(onnx_path), dynamo=True, input_names=["image"], output_names=["logits"],
                          dynamic_shapes={"image": {0: torch.export.Dim("batch")}}, external_data=False, verbose=False)
    spec = ("image:batchx1x32x32",)
    return [ModelEntry("digits-torch", f"{DIGITS}:build", str(calib), str(evaluation), spec),
            ModelEntry("digits-onnx", str(onnx_path), str(calib), str(evaluation), ())]


def _timed_sweep(models: list, output: Path, cache: Path, workers: int) -> dict:
    from edgekit.sweep import Settings, sweep

    started = time.perf_counter()
    result = sweep(models, TARGETS, RECIPES, output, settings=Settings(threads=1, runs=50, warmup=10),
                   workers=workers, cache_dir=cache)
    wall = time.perf_counter() - started
    ran = [row for row in result.rows if not row["reused"]]
    busy = sum((row["compile_s"] or 0) + (row["measure_s"] or 0) for row in ran)
    steps = [row["steps"] for row in ran if row["steps"]]
    return {"workers": workers, "wall_s": wall, "cells": len(result.rows), "ran": len(ran),
            "ok": result.info["ok"], "failed": result.info["failed"], "reused": result.info["reused"],
            "busy_s": busy, "idle_per_cell_s": (wall * workers - busy) / len(ran) if ran else None,
            "steps_total": sum(s["total"] for s in steps), "steps_cached": sum(s["cached"] for s in steps),
            "failures": {row["cell"]: row["reason"] for row in result.rows if row["status"] == "failed"}}


def _noop() -> float:
    import time as clock

    started = clock.perf_counter()
    import edgekit.sweep.cell  # noqa: F401  (what every cell's task imports first)

    return clock.perf_counter() - started


def _ray_overhead() -> dict:
    """Seconds from submitting a do-nothing task (fresh worker process, as a cell's) to having its result, one at a
    time, and the time to start the local cluster."""
    from edgekit.sweep.cluster import connected

    started = time.perf_counter()
    with connected(None, 1, verbose=False):
        start_s = time.perf_counter() - started
        import ray

        task = ray.remote(max_calls=1, max_retries=0)(_noop)
        rounds, imports = [], []
        for _ in range(NOOP_TASKS):
            begun = time.perf_counter()
            imports.append(ray.get(task.remote()))
            rounds.append(time.perf_counter() - begun)
    return {"cluster_start_s": start_s, "task_round_trip_s": statistics.median(rounds),
            "task_round_trip_max_s": max(rounds), "module_import_s": statistics.median(imports), "tasks": NOOP_TASKS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("out/scale"))
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    from edgekit.isa import host_cpu

    cpu = host_cpu()
    models = _models(out)
    figures: dict = {"cpu": cpu.model, "isa": cpu.isa.name, "flags": list(cpu.flags), "cores": os.cpu_count(),
                     "grid": {"models": [m.name for m in models], "targets": TARGETS, "recipes": RECIPES}}
    for workers in (1, 2):
        figures[f"workers_{workers}"] = _timed_sweep(models, out / f"runs-w{workers}", out / f"cache-w{workers}", workers)
    figures["rerun_new_folder"] = _timed_sweep(models, out / "runs-w2-again", out / "cache-w2", 2)
    figures["rerun_same_folder"] = _timed_sweep(models, out / "runs-w2", out / "cache-w2", 2)
    figures["ray"] = _ray_overhead()
    one, two = figures["workers_1"]["wall_s"], figures["workers_2"]["wall_s"]
    figures["speedup"] = one / two
    figures["efficiency"] = one / two / 2
    again = figures["rerun_new_folder"]
    figures["step_cache_hit_rate"] = again["steps_cached"] / again["steps_total"] if again["steps_total"] else None
    (out / "scale.json").write_text(json.dumps(figures, indent=1))
    print(f"CPU: {cpu.model}, {os.cpu_count()} logical cores, ISA {cpu.isa.name} ({' '.join(cpu.flags)})")
    print("| run | workers | cells run / reused | ok / failed | wall s | busy s | idle+overhead per cell s |")
    print("|---|---|---|---|---|---|---|")
    for name in ("workers_1", "workers_2", "rerun_new_folder", "rerun_same_folder"):
        run = figures[name]
        idle = f"{run['idle_per_cell_s']:.1f}" if run["idle_per_cell_s"] is not None else "-"
        print(f"| {name} | {run['workers']} | {run['ran']} / {run['reused']} | {run['ok']} / {run['failed']} | "
              f"{run['wall_s']:.1f} | {run['busy_s']:.1f} | {idle} |")
    print(f"speedup 1→2 workers {figures['speedup']:.2f}×, efficiency {figures['efficiency']:.2f}; step cache hit rate "
          f"on the re-run {figures['step_cache_hit_rate']:.2%} ({again['steps_cached']}/{again['steps_total']} steps); "
          f"Ray: cluster start {figures['ray']['cluster_start_s']:.1f} s, per task {figures['ray']['task_round_trip_s']:.2f} s"
          f" median (max {figures['ray']['task_round_trip_max_s']:.2f}), of which the cell module's import "
          f"{figures['ray']['module_import_s']:.2f} s")


if __name__ == "__main__":
    main()
