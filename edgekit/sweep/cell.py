"""One sweep cell, as its Ray worker runs it: compile the package (returned as .zip bytes, so it can travel to the
node that measures it and to the driver that keeps it), then measure it where the cell's device is. Every failure
becomes a row with its one-line reason; nothing here raises for a cell that fails."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import zipfile
from pathlib import Path
from typing import Any

from edgekit.errors import EdgekitError
from edgekit.sweep.grid import LOCAL_DEVICE, Cell, Settings

log = logging.getLogger("edgekit")


def compile_cell(cell: Cell, settings: Settings, cache_dir: str | None) -> dict[str, Any]:
    """{"row": the compile's part of the row, "package": the package as .zip bytes or None, "log": a traceback for
    a bug}."""
    started = time.perf_counter()
    row: dict[str, Any] = {"status": "failed", "reason": "", "node": _node()}
    with tempfile.TemporaryDirectory(prefix="edgekit-sweep-") as scratch:
        package = Path(scratch) / f"{cell.slug}.zip"
        try:
            manifest = _compile(cell, settings, cache_dir, package)
        except EdgekitError as error:
            return {"row": row | {"reason": _one_line(str(error)), "compile_s": time.perf_counter() - started},
                    "package": None, "log": None}
        except Exception as error:  # a bug in edgekit or a backend: the cause is kept in the cell's log
            return {"row": row | {"reason": f"bug: {type(error).__name__}: {_one_line(str(error))}",
                                  "compile_s": time.perf_counter() - started},
                    "package": None, "log": traceback.format_exc()}
        row |= quality_fields(manifest) | {"status": "ok", "compile_s": time.perf_counter() - started}
        return {"row": row, "package": package.read_bytes(), "log": None}


def measure_cell(cell: Cell, settings: Settings, package_zip: bytes, devices_file: str | None) -> dict[str, Any]:
    """The measuring part of the row: the package benchmarked on this node's CPU, or on the cell's device through
    the devices file where this node has one naming it."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgekit-measure-") as scratch:
        package = Path(scratch) / f"{cell.slug}.zip"
        package.write_bytes(package_zip)
        try:
            record, where = _measure(cell, settings, package, devices_file)
        except EdgekitError as error:
            return {"status": "failed", "reason": f"measuring: {_one_line(str(error))}",
                    "measure_s": time.perf_counter() - started, "measured_on": _node()}
    latency = record.latency_ms
    return {"latency_ms": {"p50": latency.p50, "p90": latency.p90, "mean": latency.mean,
                           "p50_low": latency.p50_low, "p50_high": latency.p50_high},
            "size_bytes": record.file_bytes, "peak_rss_mb": record.peak_rss_mb, "conditions": record.conditions,
            "measure_s": time.perf_counter() - started, "measured_on": where}


def quality_fields(manifest: dict[str, Any]) -> dict[str, Any]:
    """The recipe that made the package, its precision, its steps (how many from the step cache), and its quality:
    task accuracy where the evaluation data has labels, else the deciding fidelity metric, beside the source's."""
    metrics = manifest["metrics"]
    fidelity, verdict = metrics["fidelity"], metrics["verdict"]
    if fidelity.get("accuracy") is not None:
        quality = ("accuracy", fidelity["accuracy"], fidelity.get("reference_accuracy"))
    else:
        quality = (verdict["metric"], verdict["value"], verdict.get("reference"))
    steps = manifest.get("steps") or []
    return {"chosen": manifest["recipe"]["name"], "precision": manifest["precision"],
            "steps": {"total": len(steps), "cached": sum(bool(step.get("cached")) for step in steps)},
            "quality_metric": quality[0], "quality": quality[1], "reference_quality": quality[2],
            "fidelity": {"metric": verdict["metric"], "value": verdict["value"], "worst": verdict.get("worst")}}


def _compile(cell: Cell, settings: Settings, cache_dir: str | None, package: Path) -> dict[str, Any]:
    """The compiled package's manifest; several processes (torchrun) when the recipe distills and the sweep asks."""
    if settings.distill_processes > 1 and recipe_distills(cell):
        return _compile_under_torchrun(cell, settings, cache_dir, package)
    from edgekit.compiler import compile
    from edgekit.spec import parse_input_spec

    result = compile(cell.model.source, cell.target, package, cell.recipe, cell.model.calib, cell.model.eval,
                     tuple(parse_input_spec(text) for text in cell.model.inputs),
                     Path(cache_dir) if cache_dir else None, bench_runs=settings.compile_bench_runs,
                     threads=settings.threads)
    return json.loads(json.dumps(result.manifest, default=_plain))


def recipe_distills(cell: Cell) -> bool:
    """Whether the cell's recipe has a distill step (auto's candidates never do)."""
    if cell.recipe == "auto":
        return False
    from edgekit.build import recipe_for
    from edgekit.target import load_target

    steps = recipe_for(load_target(cell.target), cell.recipe).steps
    return any(getattr(step, "pass_name", "") == "distill" for step in steps)


def _compile_under_torchrun(cell: Cell, settings: Settings, cache_dir: str | None, package: Path) -> dict[str, Any]:
    """`edgekit compile` under torchrun (rank 0 writes the package), its rendezvous on a free port of this node:
    cells distilling at once on one node must not share one."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--rdzv-backend=c10d",
               "--rdzv-endpoint=localhost:0", f"--nproc-per-node={settings.distill_processes}",
               "-m", "edgekit", "-q", "compile", cell.model.source, "--target", cell.target, "--recipe", cell.recipe, "-o", str(package),
               "--bench-runs", str(settings.compile_bench_runs), "--threads", str(settings.threads)]
    for option, value in (("--calib", cell.model.calib), ("--eval", cell.model.eval)):
        if value:
            command += [option, value]
    for spec in cell.model.inputs:
        command += ["--input", spec]
    command += ["--cache-dir", cache_dir] if cache_dir else ["--no-cache"]
    done = subprocess.run(command, capture_output=True, text=True, env=os.environ | {"OMP_NUM_THREADS": "1"})
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip() and not line.startswith(("W", "["))]
        raise EdgekitError(f"compile under torchrun ({settings.distill_processes} processes) failed: "
                           f"{(lines or ['exit status ' + str(done.returncode)])[-1]}")
    with zipfile.ZipFile(package) as archive:
        return json.loads(archive.read("manifest.json"))


def _measure(cell: Cell, settings: Settings, package: Path, devices_file: str | None) -> tuple[Any, str]:
    if cell.device != LOCAL_DEVICE and devices_file:
        from edgekit.devices import bench_on_device, load_devices

        if cell.device in load_devices(Path(devices_file)):
            records, device = bench_on_device([package], cell.device, devices_file, settings.threads,
                                              runs=settings.runs, warmup=settings.warmup)
            cpu = device.get("cpu") if isinstance(device.get("cpu"), dict) else {}
            return records[0], f"device {cell.device} ({cpu.get('model', 'CPU unknown')}) from {_node()}"
    from edgekit.bench import bench

    return bench([package], threads=settings.threads, runs=settings.runs, warmup=settings.warmup)[0], f"{_node()} CPU"


def _node() -> str:
    """This host's name and, inside Ray, the node's id (several nodes may share a host)."""
    try:
        import ray

        node = ray.get_runtime_context().get_node_id()[:12] if ray.is_initialized() else ""
    except ImportError:
        node = ""
    return f"{socket.gethostname()}/{node}" if node else socket.gethostname()


def _plain(value: Any) -> Any:
    from dataclasses import asdict, is_dataclass

    return asdict(value) if is_dataclass(value) else str(value)


def _one_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else "no message"
