"""`edgekit demo`: the digits CNN compiled for every CPU target available here, then benchmarked."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from edgekit.bench import bench
from edgekit.compiler import compile
from edgekit.errors import EdgekitError, UserError
from edgekit.spec import TensorSpec
from edgekit.target import all_targets

log = logging.getLogger("edgekit")
DEMO_SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "digits_cnn.py"
DEMO_INPUT = TensorSpec("image", ("batch", 1, 32, 32), "float32")
DEMO_PRECISIONS = ("fp32", "int8")


def run_demo(output: Path, runs: int, threads: int | None, cache_dir: Path | None, display=None) -> list[dict]:
    """One row per (target, precision): size, latency, accuracy on the held-out digits."""
    if not DEMO_SCRIPT.is_file():
        raise UserError(f"the demo needs edgekit's source checkout ({DEMO_SCRIPT} is missing)")
    spec = importlib.util.spec_from_file_location("edgekit_demo_digits", DEMO_SCRIPT)
    digits = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(digits)
    digits.build()  # trains once, so the first compile's progress is about compiling
    calib, evaluation = digits.write_data(output / "data")
    rows = []
    for target in all_targets():
        why = target.availability()
        if why:
            log.info("demo: skipping %s (%s)", target.name, why)
            continue
        for precision in DEMO_PRECISIONS:
            recipe = target.recipes.get(precision)
            if recipe is None:
                continue
            package = output / f"{target.name}-{precision}"
            log.info("demo: compiling for %s with %s", target.name, recipe)
            try:
                result = compile(f"{DEMO_SCRIPT}:build", target.source, package, recipe, calib, evaluation,
                                 (DEMO_INPUT,), cache_dir, bench_runs=10, threads=threads,
                                 progress=display, instruments=(display,) if display else ())
            except EdgekitError as error:
                log.warning("demo: %s %s failed: %s", target.name, precision, error)
                rows.append({"target": target.name, "precision": precision, "recipe": recipe, "error": str(error)})
                continue
            fidelity = result.manifest.metrics.fidelity
            measured = bench([package], threads=threads, runs=runs, warmup=max(runs // 10, 5))[0]
            rows.append({
                "target": target.name, "precision": precision, "recipe": recipe, "package": str(package),
                "runtime": f"{measured.runtime} {measured.conditions['runtime_version']}",
                "file_bytes": measured.file_bytes, "p50_ms": measured.latency_ms.p50,
                "mean_ms": measured.latency_ms.mean, "accuracy": fidelity["accuracy"],
                "reference_accuracy": fidelity["reference_accuracy"], "top1_agreement": fidelity["top1_agreement"],
                "conditions": measured.conditions,
            })
    return rows
